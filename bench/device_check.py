"""Does the local backend work, and how fast, on whatever device is here? One table.

    python bench/device_check.py [--device auto] [--model qwen2.5-coder-0.5b] [--random]

Builds the embedded model's architecture: its prepared weights when the folder exists, otherwise random weights
from the config shipped in bench/configs/ (a GPU machine without the weight packages), with a token-id tokenizer.
Checks and times: decode at batch 1 and 16, a latent-mas rollout (prefill + latent steps on a shared cache),
batch-vs-alone greedy equality (tie-tolerant, as the backend defines it), and that every tensor the backend and
the rollout create lives on the model's device.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig

from recursa.latent.align import Aligner
from recursa.latent.rollout import latent_rollout
from recursa.models import attention, registry
from recursa.models.base import Sampling
from recursa.models.devices import resolve_device, resolve_dtype
from recursa.models.hf import HFModel, make_batch_invariant
from recursa.models.invariance import diverges_only_at_a_tie

CONFIGS = Path(__file__).with_name("configs")


class TokenIdTokenizer:
    """Stands in for a tokenizer when only the architecture is here: text is token ids written as numbers."""

    chat_template = None
    unk_token_id = None

    def __init__(self, config: PretrainedConfig):
        self.vocab_size = config.vocab_size
        self.eos_token_id = config.eos_token_id
        self.pad_token_id = getattr(config, "pad_token_id", None) or 0

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [sum(map(ord, word)) * 7919 % self.vocab_size for word in text.split()]

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return " ".join(str(i) for i in ids)

    def convert_tokens_to_ids(self, token: str) -> None:
        return None


def build(name: str, device: str, random_weights: bool) -> tuple[HFModel, str]:
    folder = registry.resolve_path(name, prepare=False)
    if not random_weights and (Path(folder) / "config.json").is_file():
        return registry.load(name, device=device), "prepared weights"
    data = json.loads((CONFIGS / f"{name}.json").read_text())
    config = AutoConfig.for_model(data.pop("model_type"), **data)
    target = resolve_device(device)
    torch.manual_seed(0)
    module = AutoModelForCausalLM.from_config(config, dtype=resolve_dtype("auto", target)).to(target).eval()
    make_batch_invariant(module)
    return HFModel(module, TokenIdTokenizer(config), name), "random weights from config"


def prompts(model: HFModel, n: int) -> list[list[int]]:
    topics = ["tides", "glass", "bees", "maps", "clocks", "salt", "kites", "ferns"]
    return [model.chat_ids([{"role": "user", "content": f"Write a short note about {topics[i % 8]} number {i}."}])
            for i in range(n)]


def synchronize(model: HFModel) -> None:
    if model.device.type == "cuda":
        torch.cuda.synchronize(model.device)


def timed_decode(model: HFModel, batch: int, tokens: int) -> tuple[float, list]:
    ids = prompts(model, batch)
    synchronize(model)
    started = time.perf_counter()
    done = model.decode(model.new_state(batch), ids, Sampling(max_tokens=tokens, ignore_eos=True))
    synchronize(model)
    return time.perf_counter() - started, done


def on_device(model: HFModel, *tensors: torch.Tensor) -> bool:
    return all(t.device.type == model.device.type for t in tensors)


def check_rollout(model: HFModel, steps: int) -> tuple[float, bool, str]:
    aligner = Aligner.for_model(model, "ridge+norm")
    state = model.new_state(4)
    synchronize(model)
    started = time.perf_counter()
    rollout = latent_rollout(model, state, prompts(model, 4), steps, aligner, keep_latents=True)
    answer = model.decode(state, [model.followup_ids("Now answer.")] * 4, Sampling(max_tokens=8))
    synchronize(model)
    seconds = time.perf_counter() - started
    keys = [layer.keys for layer in state.cache.layers if getattr(layer, "keys", None) is not None]
    placed = on_device(model, rollout.hidden_states, rollout.input_embeds, state.mask, state.next_pos, *keys)
    shape_ok = tuple(rollout.hidden_states.shape) == (4, steps, model.hidden_size) and len(answer) == 4
    return seconds, placed and shape_ok, f"hidden {tuple(rollout.hidden_states.shape)}, cache {state.length}"


def check_batch_equality(model: HFModel, tokens: int) -> tuple[bool, str]:
    ids = prompts(model, 4)
    sampling = Sampling(max_tokens=tokens)
    batched = model.decode(model.new_state(4), ids, sampling)
    alone = [model.decode(model.new_state(1), [row], sampling)[0] for row in ids]
    exact = sum(a.token_ids == b.token_ids for a, b in zip(alone, batched, strict=True))
    ok = all(diverges_only_at_a_tie(model, row, a.token_ids, b.token_ids)
             for row, a, b in zip(ids, alone, batched, strict=True))
    return ok, f"{exact}/4 rows identical, the rest part at a tie" if ok and exact < 4 else f"{exact}/4 identical"


def check_int8(model: HFModel, tokens: int) -> tuple[str, str, str]:
    """Switch to the int8 weight path (one way: last check) and time batch-1 decode; report what fails."""
    try:
        with tempfile.TemporaryDirectory() as folder:
            model.use_int8(Path(folder) / "int8.pt")
        seconds, done = timed_decode(model, 1, tokens)
    except Exception as error:          # the check reports what this device lacks instead of stopping the table
        return "NO", "", f"{type(error).__name__}: {str(error)[:70]}"
    return "yes", f"{seconds:.2f}", f"{done[0].completion_tokens / seconds:.1f} tok/s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--model", default="qwen2.5-coder-0.5b")
    parser.add_argument("--random", action="store_true", help="random weights even where the prepared ones exist")
    parser.add_argument("--tokens", type=int, default=64, help="decoded tokens per row")
    parser.add_argument("--latent-steps", type=int, default=16)
    parser.add_argument("--int8", action="store_true", help="last, switch to int8 weights and time decode again")
    parser.add_argument("--decode-attention", choices=["eager", "fused"], default="eager",
                        help="decode steps' attention: the backend's grouped eager arithmetic or the fused kernel")
    args = parser.parse_args()
    attention.DECODE_RUNS_EAGER = args.decode_attention == "eager"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    model, weights = build(args.model, args.device, args.random)
    name = torch.cuda.get_device_name(model.device) if model.device.type == "cuda" else model.device.type
    table = Table("check", "ok", "seconds", "figure", title=f"{args.model} ({weights}) on {name}, {model.dtype}, "
                  f"decode attention {args.decode_attention}")
    timed_decode(model, 1, 4)                                   # warm-up: kernels, allocator
    for batch in (1, 16):
        seconds, done = timed_decode(model, batch, args.tokens)
        tokens = sum(c.completion_tokens for c in done)
        table.add_row(f"decode batch {batch}", "yes" if tokens == batch * args.tokens else "NO", f"{seconds:.2f}",
                      f"{tokens / seconds:.1f} tok/s")
    seconds, ok, figure = check_rollout(model, args.latent_steps)
    table.add_row(f"latent rollout (4 rows, m={args.latent_steps}) + decode", "yes" if ok else "NO", f"{seconds:.2f}",
                  figure)
    ok, figure = check_batch_equality(model, args.tokens // 2)
    table.add_row("batch vs alone greedy", "yes" if ok else "NO", "", figure)
    table.add_row("model on device", "yes" if on_device(model, *model.module.parameters()) else "NO", "",
                  str(model.device))
    if args.int8:
        table.add_row("int8 weights, decode batch 1", *check_int8(model, args.tokens))
    Console(width=100).print(table)


if __name__ == "__main__":
    main()
