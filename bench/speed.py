"""Speed benchmark of the local backend: decode and prefill throughput against the memory-bandwidth limit.

    python bench/speed.py [--model NAME] [--new-tokens 128] [--out runs/speed.json] [--no-profile]


Decoding one token at batch 1 is memory-bound: every step reads every weight matrix once. So the ceiling is
`bandwidth / bytes read per step`, with the bandwidth measured in the same run (a large tensor copy). Everything is
measured in one process, one after the other, so the ratios are comparable even on a noisy shared machine.

Decode figures exclude prefill: the prompt minus its last token is prefilled first, then `HFModel.decode` runs the
timed steps. End of sequence is ignored so every row decodes exactly `new_tokens` tokens.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from recursa.models.base import Sampling

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


def llama_cpp_throughput(model_name: str, new_tokens: int, threads: int) -> dict[str, Any] | None:
    """llama-cpp-python on the same GGUF (4-bit weights), if it is installed."""
    try:
        from llama_cpp import Llama
    except ImportError:
        return None
    from recursa.core.config import settings
    from recursa.models.embedded import gguf_path
    from recursa.models.registry import EMBEDDED, canonical_name

    name = canonical_name(model_name)
    if name not in EMBEDDED:
        return None
    path = gguf_path(EMBEDDED[name], settings().models_dir)
    llm = Llama(model_path=str(path), n_ctx=1024, n_threads=threads, verbose=False)
    tokens = llm.tokenize(DECODE_PROMPTS[0].encode())
    stream = llm.generate(tokens, temp=0.0)
    next(stream)  # the first token includes the prompt's prefill
    started = time.perf_counter()
    for _ in range(new_tokens - 1):
        next(stream)
    seconds = time.perf_counter() - started
    return {"gguf": str(path), "gguf_bytes": path.stat().st_size, "tokens_per_s": (new_tokens - 1) / seconds}


def profile_decode(model, steps: int = 24) -> dict[str, float]:
    """Share of batch-1 decode wall time per kind of work (torch.profiler, CPU).

    'python_and_dispatch' is wall time not spent inside any ATen op: the Python of the decode loop and of the
    transformers modules, plus op dispatch. Profiling adds some overhead of its own to that share."""
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
        if event.key in ("aten::mm", "aten::addmm", "aten::linear"):
            is_head = any(vocab in (shape or []) for shape in (event.input_shapes or []))
            shares["lm_head" if is_head else "linear_layers"] += us
        elif event.key in ("aten::bmm", "aten::matmul") or any(k in event.key for k in ("attention", "flash",
                                                                                          "softmax")):
            # eager attention is matmul → bmm (QKᵀ, AV) + softmax; SDPA shows up under its own name
            shares["attention"] += us
        else:
            shares["other_ops"] += us
    in_ops = sum(shares.values())
    shares["python_and_dispatch"] = max(wall_us - in_ops, 0.0)
    return {key: value / wall_us for key, value in shares.items()} | {"ms_per_step": wall_us / 1000 / steps}


def run_speed_bench(model_name: str | None = None, new_tokens: int = 128, batches: tuple[int, ...] = (1, 8),
                    prompt_tokens: int = 512, repeats: int = 2, profile: bool = True, compare_generate: bool = True,
                    threads: int | None = None, out: Path | None = None,
                    progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Measure everything in one process and return one JSON-able dict (see `bench/speed.py`).
    With `out`, the JSON is rewritten after every stage, so an interrupted run keeps what it measured."""
    import hashlib

    import recursa.models.hf as hf_module
    from recursa.models import registry

    say = progress or (lambda _msg: None)
    say("loading model")
    model = registry.load(model_name)
    if threads:
        torch.set_num_threads(threads)
    results: dict[str, Any] = {
        "model": model.name, "threads": torch.get_num_threads(), "torch": torch.__version__, "repeats": repeats,
        "new_tokens": new_tokens, "load_average_at_start": os.getloadavg()[0],
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"),
        # which version of the backend was measured (it changes often while decode speed is being worked on)
        "hf_py_sha256": hashlib.sha256(Path(hf_module.__file__).read_bytes()).hexdigest()[:12],
        "decode": {}}

    def stage(key: str, label: str, measure: Callable[[], Any]) -> None:
        say(label)
        results[key] = measure()
        if out is not None:
            write_json(results, out)

    stage("bandwidth", "memory bandwidth", memory_bandwidth)
    results["weight_bytes"] = weight_bytes(model)
    stage("warmup", "warm-up", lambda: decode_throughput(model, 1, 8))
    for batch in batches:
        stage("decode", f"decode, batch {batch}",
              lambda b=batch: results["decode"] | {str(b): decode_throughput(model, b, new_tokens, repeats)})
    stage("prefill", f"prefill, {prompt_tokens} tokens", lambda: prefill_throughput(model, prompt_tokens, repeats))
    if compare_generate:
        stage("plain_generate", "transformers generate()",
              lambda: plain_generate_throughput(model, new_tokens, repeats))
    stage("llama_cpp", "llama.cpp (if installed)",
          lambda: llama_cpp_throughput(model.name, new_tokens, results["threads"]))
    if profile:
        stage("profile_batch1", "profiling batch-1 decode", lambda: profile_decode(model))
    results["load_average_at_end"] = os.getloadavg()[0]  # > threads means other processes competed for the cores
    results["summary"] = summarize(results)
    if out is not None:
        write_json(results, out)
    return results


def summarize(results: dict[str, Any]) -> dict[str, float]:
    bandwidth = results["bandwidth"]["copy_gb_s"] * 1e9
    weights = results["weight_bytes"]
    one = results["decode"].get("1", {}).get("tokens_per_s")
    summary: dict[str, float] = {
        "ceiling_tok_s_all_params": bandwidth / weights["all_parameters"],
        "ceiling_tok_s_bytes_read": bandwidth / weights["read_per_step"],
    }
    if one:
        summary["batch1_fraction_of_ceiling_all_params"] = one / summary["ceiling_tok_s_all_params"]
        summary["batch1_fraction_of_ceiling_bytes_read"] = one / summary["ceiling_tok_s_bytes_read"]
        summary["achieved_gb_s_batch1"] = one * weights["read_per_step"] / 1e9
        for batch, row in results["decode"].items():
            if batch != "1":
                summary[f"batch{batch}_over_batch1"] = row["tokens_per_s"] / one
        if results.get("plain_generate"):
            summary["over_plain_generate"] = one / results["plain_generate"]["tokens_per_s"]
        if results.get("llama_cpp"):
            llama = results["llama_cpp"]
            summary["llama_cpp_over_local"] = llama["tokens_per_s"] / one
            # its ceiling, counting the whole 4-bit GGUF as read per step (an upper bound on its bytes)
            summary["llama_cpp_fraction_of_its_ceiling"] = llama["tokens_per_s"] * llama["gguf_bytes"] / bandwidth
    return summary


def render(results: dict[str, Any]):
    """A rich table of the figures."""
    from rich.table import Table

    title = (f"speed: {results['model']} ({results['threads']} threads, best of {results['repeats']}, load average "
             f"{results['load_average_at_start']:.1f} → {results['load_average_at_end']:.1f})")
    table = Table("measure", "value", title=title)
    bw, weights, summary = results["bandwidth"], results["weight_bytes"], results["summary"]
    table.add_row("memory copy bandwidth", f"{bw['copy_gb_s']:.1f} GB/s (read-only sum: {bw['read_gb_s']:.1f} GB/s)")
    table.add_row("weights / read per step", f"{weights['all_parameters'] / 1e9:.3f} GB / "
                                             f"{weights['read_per_step'] / 1e9:.3f} GB (embedding only indexed)")
    table.add_row("ceiling (all params / bytes read)", f"{summary['ceiling_tok_s_all_params']:.1f} / "
                                                       f"{summary['ceiling_tok_s_bytes_read']:.1f} tok/s")
    for batch, row in results["decode"].items():
        table.add_row(f"decode batch {batch}", f"{row['tokens_per_s']:.1f} tok/s ({row['ms_per_step']:.1f} ms/step)")
    if "batch1_fraction_of_ceiling_all_params" in summary:
        table.add_row("batch 1 / ceiling", f"{summary['batch1_fraction_of_ceiling_all_params']:.0%} (all params), "
                                           f"{summary['batch1_fraction_of_ceiling_bytes_read']:.0%} (bytes read)")
    for key, value in summary.items():
        if key.endswith("_over_batch1"):
            table.add_row(key.replace("_", " "), f"{value:.2f}×")
    pre = results["prefill"]
    table.add_row(f"prefill {pre['prompt_tokens']} tokens", f"{pre['tokens_per_s']:.0f} tok/s ({pre['seconds']:.2f} s)")
    if results.get("plain_generate"):
        table.add_row("transformers generate(), batch 1", f"{results['plain_generate']['tokens_per_s']:.1f} tok/s "
                                                          f"(ours is {summary['over_plain_generate']:.2f}×)")
    llama = results.get("llama_cpp")
    table.add_row("llama.cpp, same GGUF", f"{llama['tokens_per_s']:.1f} tok/s ({summary['llama_cpp_over_local']:.2f}× "
                                          "ours)" if llama else "not installed")
    for key, value in (results.get("profile_batch1") or {}).items():
        table.add_row(f"profile: {key.replace('_', ' ')}", f"{value:.1f}" if key == "ms_per_step" else f"{value:.0%}")
    return table


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
    parser.add_argument("--no-profile", action="store_true", help="skip the torch.profiler breakdown")
    parser.add_argument("--no-generate", action="store_true", help="skip the transformers generate() comparison")
    parser.add_argument("--out", type=Path, default=Path("runs") / f"speed-{time.strftime('%Y%m%d-%H%M%S')}.json")
    args = parser.parse_args()
    console = Console(stderr=True)
    results = run_speed_bench(args.model, new_tokens=args.new_tokens,
                              batches=tuple(int(b) for b in args.batches.split(",")),
                              prompt_tokens=args.prompt_tokens, repeats=args.repeats, profile=not args.no_profile,
                              compare_generate=not args.no_generate,
                              threads=args.threads, out=args.out, progress=lambda m: console.log(m))
    Console().print(render(results))
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
