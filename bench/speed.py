"""Speed benchmark of the local backend: every decode path side by side against its memory-bandwidth limit.

    python bench/speed.py [--model NAME] [--new-tokens 128] [--batches 1,8] [--out runs/speed.json]
                          [--markdown bench/results/speed-DATE.md] [--no-profile] [--no-serve] [--no-int8]

Decoding one token at batch 1 is memory-bound: every step reads every weight matrix once. So the limit of a path is
`bandwidth / bytes its weights take per step` (bf16: 2 bytes a weight; int8: 1 byte plus a scale per row), with
the bandwidth measured in the same run (a large tensor copy). One process measures, one after the other:

1. the matmul routines of torch's CPU build at the 1–2 rows of a decode step (bench/speed_kernels.py);
2. the paths: `bf16-modules` (the transformers modules, the backend before issue 15), `bf16-fused` (models/fused.py)
   and `int8` (models/int8.py): decode at each batch size, prefill, and where the time of a batch-1 step goes;
3. transformers' own `generate()`; llama.cpp on the shipped GGUF and on a Q8_0 copy, batch 1, the largest batch
   as parallel sequences, and prefill, if node-llama-cpp is installed (`make llamacpp`; bench/speed_llamacpp.py);
4. `recursa serve` at 1 and 8 concurrent streams, static batching (before) and continuous batching (after);
5. one `latent-mas` GSM8K batch on each path: seconds per problem (bench/speed_latent.py).

Decode figures exclude prefill: the prompt minus its last token is prefilled first, then `HFModel.decode` runs the
timed steps. End of sequence is ignored so every row decodes exactly `new_tokens` tokens. The int8 path runs on a
second copy of the model (switching to int8 replaces a model's weights by their dequantised values). The paths take
turns within each repeat, and the fastest run of each counts, so a machine whose load drifts during the run does
not favour the path measured first.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parent))   # the sibling speed_* modules

from speed_llamacpp import llama_cpp_speed  # noqa: E402

from recursa.models.base import Sampling  # noqa: E402

DECODE_PROMPTS = [
    "Write a Python function that checks whether a number is prime, with a docstring and tests.",
    "Explain how a hash map works.",
    "Write a long story about a lighthouse keeper and a storm.",
    "List the planets of the solar system with one fact each.",
    "Implement binary search in C and explain each line.",
    "What are the main causes of the French revolution?",
    "Describe the water cycle for a ten year old.",
    "Write a SQL query that finds duplicate emails in a users table, then explain it.",
]


def _best_seconds(fn: Callable[[], Any], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def memory_bandwidth(size_mb: int = 1024, repeats: int = 5) -> dict[str, float]:
    """GB/s of a large tensor copy (bytes read + bytes written, the STREAM convention) and of a read-only sum."""
    src = torch.ones(size_mb * 2**20 // 4, dtype=torch.float32)
    dst = torch.empty_like(src)
    nbytes = src.numel() * src.element_size()
    dst.copy_(src)  # touch every page once before timing
    copy = _best_seconds(lambda: dst.copy_(src), repeats)
    read = _best_seconds(lambda: src.sum(), repeats)
    return {"buffer_mb": size_mb, "copy_gb_s": 2 * nbytes / copy / 1e9, "read_gb_s": nbytes / read / 1e9}


def weight_bytes(model) -> dict[str, int]:
    """Bytes of all parameters (tied ones once), and of what one decode step really reads: the input embedding table
    is only indexed (one row per token), every other matrix, including an untied lm_head, is read in full."""
    module = model.module
    seen, total = set(), 0
    for param in module.parameters():
        if id(param) not in seen:
            seen.add(id(param))
            total += param.numel() * param.element_size()
    embedding = module.get_input_embeddings().weight
    head = module.get_output_embeddings().weight
    tied = embedding.data_ptr() == head.data_ptr()
    emb_bytes = embedding.numel() * embedding.element_size()
    head_bytes = head.numel() * head.element_size()
    return {"all_parameters": total, "read_per_step": total if tied else total - emb_bytes,
            "lm_head": head_bytes, "tied_embeddings": int(tied)}


def decode_throughput(model, batch: int, new_tokens: int, repeats: int = 1) -> dict[str, float]:
    """Decode `new_tokens` greedy tokens for `batch` different prompts; prefill is done before the clock starts.
    With `repeats` > 1 the fastest run counts (other processes only ever slow a run down)."""
    ids = [model.chat_ids([{"role": "user", "content": DECODE_PROMPTS[i % len(DECODE_PROMPTS)]}])
           for i in range(batch)]
    seconds, tokens = float("inf"), 0
    for _ in range(repeats):
        state = model.new_state(batch)
        model.prefill(state, [row[:-1] for row in ids])
        started = time.perf_counter()
        completions = model.decode(state, [row[-1:] for row in ids], Sampling(max_tokens=new_tokens, ignore_eos=True))
        seconds = min(seconds, time.perf_counter() - started)
        tokens = sum(c.completion_tokens for c in completions)
    return {"batch": batch, "tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds,
            "ms_per_step": 1000 * seconds / new_tokens}


def prefill_throughput(model, prompt_tokens: int = 512, repeats: int = 2) -> dict[str, float]:
    text = " ".join(DECODE_PROMPTS) * 20
    ids = model.tokenizer.encode(text, add_special_tokens=False)[:prompt_tokens]
    seconds = _best_seconds(lambda: model.prefill(model.new_state(1), [ids]), repeats)
    return {"prompt_tokens": len(ids), "seconds": seconds, "tokens_per_s": len(ids) / seconds}


@torch.inference_mode()
def prefill_after_cache_throughput(model, new_tokens: int = 512, cached_tokens: int = 2048,
                                   repeats: int = 2) -> dict[str, float]:
    """Prefill of `new_tokens` on top of a cache of `cached_tokens` (an agent's next turn after its prefix-cache
    hit): attention over the long cache is what this adds to a plain prefill."""
    text = " ".join(DECODE_PROMPTS) * 200
    ids = model.tokenizer.encode(text, add_special_tokens=False)[:cached_tokens + new_tokens]
    best = float("inf")
    for _ in range(repeats):
        state = model.new_state(1)
        model.prefill(state, [ids[:cached_tokens]])
        started = time.perf_counter()
        model.prefill(state, [ids[cached_tokens:]])
        best = min(best, time.perf_counter() - started)
    return {"prompt_tokens": new_tokens, "cached_tokens": cached_tokens, "seconds": best,
            "tokens_per_s": new_tokens / best}


@torch.inference_mode()
def plain_generate_throughput(model, new_tokens: int, repeats: int = 1) -> dict[str, float]:
    """`model.generate()` of transformers at batch 1, decode rate = (N-1) tokens / (time(N) - time(1))."""
    ids = torch.tensor([model.chat_ids([{"role": "user", "content": DECODE_PROMPTS[0]}])])

    def run(n: int) -> float:
        started = time.perf_counter()
        model.module.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n,
                             min_new_tokens=n, do_sample=False, pad_token_id=model.pad_id)
        return time.perf_counter() - started

    one = min(run(1) for _ in range(2))
    full = min(run(new_tokens) for _ in range(repeats))
    return {"tokens": new_tokens, "seconds": full - one, "tokens_per_s": (new_tokens - 1) / (full - one)}


def int8_weight_bytes(model) -> dict[str, int]:
    """Bytes the int8 path reads per decode step: int8 matrices with a bf16 scale per row, their biases, the norms
    (the embedding table is only indexed). Valid once `model.use_int8()` has run."""
    matmuls = model.fused.matmuls()
    matrices = sum(m.qweight.numel() + 2 * m.scales.numel() + (0 if m.dense.bias is None else 2 * m.dense.bias.numel())
                   for m in matmuls.values())
    norms = sum(p.numel() * p.element_size() for n, p in model.module.named_parameters() if "norm" in n)
    return {"read_per_step": matrices + norms, "lm_head": matmuls["head"].qweight.numel()}


LINEAR_OPS = ("aten::mm", "aten::addmm", "aten::linear", "aten::_weight_int8pack_mm")


def profile_decode(model, steps: int = 24) -> dict[str, float]:
    """Share of batch-1 decode wall time per kind of work (torch.profiler, CPU).

    'python_and_dispatch' is wall time not spent inside any ATen op: the Python of the decode loop and of the
    model's forward, plus op dispatch. Profiling adds some overhead of its own to that share."""
    from torch.profiler import ProfilerActivity, profile

    vocab = model.output_embedding_matrix().shape[0]
    ids = model.chat_ids([{"role": "user", "content": DECODE_PROMPTS[0]}])
    state = model.new_state(1)
    model.prefill(state, [ids[:-1]])
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        started = time.perf_counter()
        model.decode(state, [ids[-1:]], Sampling(max_tokens=steps, ignore_eos=True))
        wall_us = (time.perf_counter() - started) * 1e6
    shares = {"linear_layers": 0.0, "lm_head": 0.0, "attention": 0.0, "other_ops": 0.0}
    for event in prof.key_averages(group_by_input_shape=True):
        if event.key.startswith("ProfilerStep"):
            continue
        us = event.self_cpu_time_total
        if event.key in LINEAR_OPS:
            is_head = any(vocab in (shape or []) for shape in (event.input_shapes or []))
            shares["lm_head" if is_head else "linear_layers"] += us
        elif event.key == "aten::bmm" or any(k in event.key for k in ("attention", "flash", "softmax")):
            # grouped/eager attention is bmm (QKᵀ, AV) + softmax; SDPA shows up under its own name
            shares["attention"] += us
        else:
            shares["other_ops"] += us
    in_ops = sum(shares.values())
    shares["python_and_dispatch"] = max(wall_us - in_ops, 0.0)
    return {key: value / wall_us for key, value in shares.items()} | {"ms_per_step": wall_us / 1000 / steps}


class Paths:
    """The decode paths, each a switch on one of two loaded models (int8 replaces a model's weights, so it gets
    its own): `bf16-modules` is the bf16 model with its fused decoder set aside."""

    def __init__(self, bf16, int8_model=None):
        self.bf16, self.int8, self._fused = bf16, int8_model, bf16.fused
        self.names = ["bf16-modules"] + (["bf16-fused"] if bf16.fused is not None else []) + \
            (["int8"] if int8_model is not None else [])

    def use(self, name: str):
        """The model that runs path `name`, switched to it."""
        if name == "int8":
            return self.int8
        self.bf16.fused = None if name == "bf16-modules" else self._fused
        return self.bf16


def measure_paths(paths: Paths, batches: tuple[int, ...], new_tokens: int, prompt_tokens: int, repeats: int,
                  profile: bool, stage: Callable[[str, Callable[[], Any]], Any]) -> dict[str, dict[str, Any]]:
    """Decode at each batch size and prefill on every path, the paths taking turns within each repeat (a shared
    machine drifts: turns spread the drift over the paths instead of loading it onto the last one); the fastest
    run of each counts. Then each path's batch-1 profile."""
    measured: dict[str, dict[str, Any]] = {name: {"decode": {}} for name in paths.names}

    def best(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
        return new if old is None or new["tokens_per_s"] > old["tokens_per_s"] else old

    for name in paths.names:
        stage(f"{name}: warm-up", lambda n=name: decode_throughput(paths.use(n), 1, 4))
    for turn in range(1, repeats + 1):
        for name in paths.names:
            path = measured[name]
            for batch in batches:
                row = stage(f"turn {turn}: {name}: decode, batch {batch}",
                            lambda n=name, b=batch: decode_throughput(paths.use(n), b, new_tokens))
                path["decode"][str(batch)] = best(path["decode"].get(str(batch)), row)
            row = stage(f"turn {turn}: {name}: prefill, {prompt_tokens} tokens",
                        lambda n=name: prefill_throughput(paths.use(n), prompt_tokens, 1))
            path["prefill"] = best(path.get("prefill"), row)
            row = stage(f"turn {turn}: {name}: prefill, {prompt_tokens} tokens after 2048 cached",
                        lambda n=name: prefill_after_cache_throughput(paths.use(n), prompt_tokens, 2048, 1))
            path["prefill_after_cache"] = best(path.get("prefill_after_cache"), row)
    if profile:
        for name in paths.names:
            measured[name]["profile_batch1"] = stage(f"{name}: profiling batch-1 decode",
                                                     lambda n=name: profile_decode(paths.use(n)))
    paths.use("bf16-fused")
    return measured


def run_speed_bench(model_name: str | None = None, new_tokens: int = 128, batches: tuple[int, ...] = (1, 8),
                    prompt_tokens: int = 512, repeats: int = 2, profile: bool = True, compare_generate: bool = True,
                    kernels: bool = True, serve: bool = True, int8: bool = True, latent_batch: int = 8,
                    threads: int | None = None,
                    out: Path | None = None, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Measure everything in one process and return one JSON-able dict (see the module docstring).
    With `out`, the JSON is rewritten after every stage, so an interrupted run keeps what it measured."""
    import hashlib

    from speed_kernels import attention_candidates, decode_shapes, matmul_candidates
    from speed_serve import serve_throughput

    from recursa.models import registry

    say = progress or (lambda _msg: None)
    say("loading model (bf16)")
    model = registry.load(model_name, weights="auto")
    if threads:
        torch.set_num_threads(threads)
    backend = Path(registry.__file__).parent
    results: dict[str, Any] = {
        "model": model.name, "threads": torch.get_num_threads(), "torch": torch.__version__, "repeats": repeats,
        "new_tokens": new_tokens, "load_average_at_start": os.getloadavg()[0],
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"),
        # which version of the backend was measured (it changes often while decode speed is being worked on)
        "backend_sha256": hashlib.sha256(b"".join((backend / f).read_bytes() for f in
                                                  ("hf.py", "fused.py", "int8.py"))).hexdigest()[:12],
        "paths": {}, "serve": {}}

    def stage(label: str, measure: Callable[[], Any]) -> Any:
        say(label)
        value = measure()
        if out is not None:
            write_json(results, out)
        return value

    results["bandwidth"] = stage("memory bandwidth", memory_bandwidth)
    results["weight_bytes"] = {"bf16": weight_bytes(model)}
    if kernels:
        results["matmul_candidates"] = stage("matmul routines at 1-2 rows",
                                             lambda: matmul_candidates(decode_shapes(model), repeats=2 * repeats))
        results["attention_candidates"] = stage("attention of a prefill chunk over a long cache",
                                                lambda: attention_candidates(model.config, prompt_tokens))
    quantized = None
    if int8 and model.fused is not None:
        quantized = stage("loading model (int8: quantising or reading the cache)",
                          lambda: registry.load(model_name, weights="int8"))
        results["weight_bytes"]["int8"] = int8_weight_bytes(quantized)
    paths = Paths(model, quantized)
    results["paths"] = measure_paths(paths, batches, new_tokens, prompt_tokens, repeats, profile, stage)
    if compare_generate:
        results["plain_generate"] = stage("transformers generate()",
                                          lambda: plain_generate_throughput(model, new_tokens, repeats))
    results["llama_cpp"] = stage("llama.cpp (if installed)", lambda: llama_cpp_speed(
        model.name, results["threads"], new_tokens, max(batches), prompt_tokens, repeats))
    if serve:
        results["serve"] = {"static": {}, "continuous": {}}
        for streams in (1, 8):   # the two modes side by side in time at each load
            for mode, continuous in (("static", False), ("continuous", True)):
                results["serve"][mode][str(streams)] = stage(
                    f"recursa serve, {mode} batching, {streams} streams",
                    lambda n=streams, c=continuous: serve_throughput(model, n, continuous=c))
    if latent_batch:
        from speed_latent import latent_batch_per_path

        results["latent_mas"] = latent_batch_per_path(paths, latent_batch, stage)
    results["load_average_at_end"] = os.getloadavg()[0]  # > threads means other processes competed for the cores
    from speed_report import summarize

    results["summary"] = summarize(results)
    if out is not None:
        write_json(results, out)
    return results


def write_json(results: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2))
    return path


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model name (default: the embedded default model)")
    parser.add_argument("--new-tokens", type=int, default=128, help="decoded tokens per row")
    parser.add_argument("--batches", default="1,8", help="comma-separated decode batch sizes")
    parser.add_argument("--prompt-tokens", type=int, default=512, help="prefill prompt length")
    parser.add_argument("--repeats", type=int, default=2, help="runs per measure; the fastest counts")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: RECURSA_THREADS or all)")
    parser.add_argument("--no-profile", action="store_true", help="skip the torch.profiler breakdowns")
    parser.add_argument("--no-generate", action="store_true", help="skip the transformers generate() comparison")
    parser.add_argument("--no-kernels", action="store_true", help="skip the matmul routines at 1-2 rows")
    parser.add_argument("--no-serve", action="store_true", help="skip recursa serve throughput")
    parser.add_argument("--no-int8", action="store_true", help="skip the int8 path")
    parser.add_argument("--latent-batch", type=int, default=8,
                        help="GSM8K problems in the latent-mas batch run on each path (0: skip)")
    parser.add_argument("--out", type=Path, default=Path("runs") / f"speed-{time.strftime('%Y%m%d-%H%M%S')}.json")
    parser.add_argument("--markdown", type=Path, default=None, help="also write the report as Markdown here")
    args = parser.parse_args()
    console = Console(stderr=True)
    results = run_speed_bench(args.model, new_tokens=args.new_tokens,
                              batches=tuple(int(b) for b in args.batches.split(",")),
                              prompt_tokens=args.prompt_tokens, repeats=args.repeats, profile=not args.no_profile,
                              compare_generate=not args.no_generate, kernels=not args.no_kernels,
                              serve=not args.no_serve, int8=not args.no_int8, latent_batch=args.latent_batch,
                              threads=args.threads, out=args.out,
                              progress=lambda m: console.log(m))
    from speed_report import markdown, render

    Console().print(render(results))
    console.print(f"wrote {args.out}")
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(markdown(results, command=" ".join(sys.argv)))
        console.print(f"wrote {args.markdown}")


if __name__ == "__main__":
    main()
