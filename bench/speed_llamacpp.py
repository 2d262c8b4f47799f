"""llama.cpp on the same model, for bench/speed.py: the shipped GGUF and an all-Q8_0 copy of it.

llama.cpp runs through node-llama-cpp's prebuilt CPU binaries (`make llamacpp` installs them under `.llamacpp/`;
nothing is compiled), driven by bench/llamacpp_node.mjs. The shipped GGUF mixes Q4_K, Q5_0, Q6_K and Q8_0 tensors;
the Q8_0 copy (bench/gguf_requant.py, made once next to it) is the fair match for our int8 path. Each variant's
bandwidth limit counts the bytes of every tensor a decode step reads: all of them but the embedding table, unless
the embedding is also the LM head (tied).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
INSTALL_DIR = BENCH.parent / ".llamacpp"   # `make llamacpp`
PACKAGE = "node_modules/node-llama-cpp/package.json"


def node_llama_cpp_dir() -> Path | None:
    """Where node-llama-cpp is installed (RECURSA_NODE_LLAMA_CPP or `.llamacpp/`), or None."""
    root = Path(os.environ.get("RECURSA_NODE_LLAMA_CPP", INSTALL_DIR))
    return root if shutil.which("node") and (root / PACKAGE).is_file() else None


def gguf_variants(model_name: str) -> dict[str, Path]:
    """{label: GGUF path}: the embedded model's shipped GGUF and its Q8_0 copy (made on first use)."""
    from recursa.core.config import settings
    from recursa.models.embedded import gguf_path
    from recursa.models.registry import EMBEDDED, canonical_name

    name = canonical_name(model_name)
    if name not in EMBEDDED:
        return {}
    shipped = gguf_path(EMBEDDED[name], settings().models_dir)
    q8 = shipped.with_name(shipped.stem + ".q8_0.gguf")
    if not q8.exists():
        partial = q8.with_suffix(".partial")
        subprocess.run([sys.executable, str(BENCH / "gguf_requant.py"), str(shipped), str(partial)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        partial.rename(q8)
    return {"shipped mix (Q4_K/Q5_0/Q6_K/Q8_0)": shipped, "Q8_0": q8}


def bytes_read_per_step(gguf: Path) -> int:
    from gguf import GGUFReader

    tensors = {t.name: int(t.n_bytes) for t in GGUFReader(gguf).tensors}
    untied = "output.weight" in tensors
    return sum(n for name, n in tensors.items() if not (untied and name == "token_embd.weight"))


def measure_gguf(root: Path, gguf: Path, threads: int, new_tokens: int, sequences: int,
                 prompt_tokens: int) -> dict[str, Any]:
    """One run of bench/llamacpp_node.mjs: batch 1 and `sequences` at once, and a prefill."""
    env = {**os.environ, "RECURSA_NODE_MODULES": str(root / "node_modules")}
    done = subprocess.run(["node", str(BENCH / "llamacpp_node.mjs"), str(gguf), str(threads), str(new_tokens),
                           str(sequences), str(prompt_tokens)], env=env, capture_output=True, text=True,
                          timeout=1800, check=False)
    if done.returncode != 0:
        return {"error": (done.stderr or done.stdout).strip()[-500:]}
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    return {**measured, "gguf_bytes": bytes_read_per_step(gguf)}


def llama_cpp_speed(model_name: str, threads: int, new_tokens: int, sequences: int, prompt_tokens: int,
                    repeats: int) -> dict[str, Any] | None:
    """{variant: best of `repeats` runs}, or None when node-llama-cpp is not installed."""
    root = node_llama_cpp_dir()
    if root is None:
        return None
    version = json.loads((root / PACKAGE).read_text())["version"]
    variants: dict[str, Any] = {}
    for label, gguf in gguf_variants(model_name).items():
        runs = [measure_gguf(root, gguf, threads, new_tokens, sequences, prompt_tokens) for _ in range(repeats)]
        good = [r for r in runs if "error" not in r]
        if not good:
            variants[label] = runs[-1]
            continue
        best = {key: max((r[key] for r in good), key=lambda m: m["tokens_per_s"])
                for key in ("batch1", "parallel", "prefill")}
        variants[label] = {**good[0], **best, "runner": f"node-llama-cpp {version} (prebuilt llama.cpp)"}
    return variants
