"""Matmul routines of torch's CPU build at the 1–2 rows of a decode step (part of bench/speed.py).

Every candidate multiplies one or two activation rows by the model's weight matrices, cycled in decode order (all
layers, then the LM head), so the weights stream from memory as in a real step instead of sitting in a cache. The
figure is the bytes of the weights it reads per second; the winner is what models/fused.py uses.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F


def decode_shapes(model) -> list[tuple[int, int]]:
    """[N, K] of every matmul of one decode step (fused q/k/v and gate/up, o, down per layer; the LM head)."""
    config = model.config
    hidden, inter = config.hidden_size, config.intermediate_size
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    layer = [((heads + 2 * kv_heads) * head_dim, hidden), (hidden, heads * head_dim), (2 * inter, hidden),
             (hidden, inter)]
    return layer * config.num_hidden_layers + [(config.vocab_size, hidden)]


def _int8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    scales = weight.float().abs().amax(1) / 127
    return (weight.float() / scales[:, None]).round().to(torch.int8), scales.to(weight.dtype)


def _candidates() -> dict[str, tuple[Callable[[torch.Tensor], Any], Callable[[torch.Tensor, Any], Any], float]]:
    """name → (prepare weight, multiply rows by it, bytes read per weight element)."""
    def one_row_as_two(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        rows = x.shape[0]
        x = torch.cat([x, x]) if rows == 1 else x
        return torch.matmul(w, x.t())[:, :rows]

    return {
        "F.linear (oneDNN, transformers' path)": (lambda w: w, lambda x, w: F.linear(x, w), 2.0),
        "W @ x.T": (lambda w: w, lambda x, w: torch.matmul(w, x.t()), 2.0),
        "W @ x.T, one row run as two (chosen)": (lambda w: w, one_row_as_two, 2.0),
        "oneDNN prepacked weights": (lambda w: torch.ops.mkldnn._reorder_linear_weight(w, 1),
                                     lambda x, w: torch.ops.mkldnn._linear_pointwise(x, w, None, "none", [None], ""),
                                     2.0),
        "int8 _weight_int8pack_mm (chosen for int8)": (_int8, lambda x, w: torch.ops.aten._weight_int8pack_mm(
            x, w[0], w[1]), 1.0),
    }


@torch.inference_mode()
def matmul_candidates(shapes: list[tuple[int, int]], rows: tuple[int, ...] = (1, 2), repeats: int = 3,
                      dtype: torch.dtype = torch.bfloat16) -> dict[str, dict[str, Any]]:
    """{candidate: {"rows=1": {"ms": .., "gb_s": ..}, ...}} over random weights of `shapes` (values do not matter
    for speed). Candidates that this torch build lacks report their error."""
    generator = torch.Generator().manual_seed(0)
    weights = [(torch.randn(n, k, generator=generator) * 0.02).to(dtype) for n, k in shapes]
    inputs = {k: {m: torch.randn(m, k, generator=generator).to(dtype) for m in rows} for _, k in shapes}
    prepared: dict[str, tuple[list[Any], Callable, float]] = {}
    results: dict[str, dict[str, Any]] = {}
    for name, (prepare, multiply, bytes_per_weight) in _candidates().items():
        try:
            prepared[name] = ([prepare(w) for w in weights], multiply, bytes_per_weight)
        except (RuntimeError, AttributeError) as exc:
            results[name] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"}
    elements = sum(n * k for n, k in shapes)
    for _ in range(repeats):      # the candidates take turns, so load drift does not favour one of them
        for name, (ready, multiply, bytes_per_weight) in prepared.items():
            for m in rows:
                seconds = _best_pass(multiply, [inputs[k][m] for _, k in shapes], ready, repeats=1)
                key, nbytes = f"rows={m}", bytes_per_weight * elements
                if seconds * 1000 < results.setdefault(name, {}).get(key, {}).get("ms", float("inf")):
                    results[name][key] = {"ms": 1000 * seconds, "gb_s": nbytes / seconds / 1e9}
    return results


def _best_pass(multiply: Callable[[torch.Tensor, Any], Any], xs: list[torch.Tensor], weights: list[Any],
               repeats: int) -> float:
    """Fastest of `repeats` passes over all weights (after one untimed pass)."""
    best = float("inf")
    for attempt in range(repeats + 1):
        started = time.perf_counter()
        for x, w in zip(xs, weights, strict=True):
            multiply(x, w)
        if attempt:
            best = min(best, time.perf_counter() - started)
    return best


@torch.inference_mode()
def attention_candidates(config, new_tokens: int = 512, cached_tokens: int = 2048, repeats: int = 3,
                         dtype: torch.dtype = torch.bfloat16) -> dict[str, dict[str, float]]:
    """One prefill chunk's attention (`new_tokens` queries over `cached_tokens` + `new_tokens` keys, causal) in
    every layer: the eager arithmetic (what prefill ran before) against torch's fused kernel (what it runs now)."""
    from recursa.models.attention import grouped_eager

    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    total = cached_tokens + new_tokens
    generator = torch.Generator().manual_seed(0)
    query = torch.randn(1, heads, new_tokens, dim, generator=generator).to(dtype)
    key, value = (torch.randn(1, kv_heads, total, dim, generator=generator).to(dtype) for _ in range(2))
    future = torch.ones(new_tokens, total, dtype=torch.bool).triu(cached_tokens + 1)
    mask = torch.zeros(1, 1, new_tokens, total, dtype=dtype).masked_fill_(future, torch.finfo(dtype).min)
    scaling = dim ** -0.5
    candidates = {
        "eager arithmetic, grouped (prefill before)": lambda: grouped_eager(query, key, value, mask, scaling),
        "F.scaled_dot_product_attention (prefill now)": lambda: F.scaled_dot_product_attention(
            query, key, value, attn_mask=mask, scale=scaling, enable_gqa=True),
    }
    results: dict[str, dict[str, float]] = {}
    for _ in range(repeats):
        for name, run in candidates.items():
            started = time.perf_counter()
            run()
            ms = 1000 * (time.perf_counter() - started) * config.num_hidden_layers
            if ms < results.get(name, {}).get("ms_all_layers", float("inf")):
                results[name] = {"ms_all_layers": ms, "new_tokens": new_tokens, "cached_tokens": cached_tokens}
    return results
