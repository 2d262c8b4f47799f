"""Decode-step attention: the fused kernel against the grouped eager arithmetic, on this device. One table.

    python bench/attention_decode.py [--device auto] [--model qwen2.5-coder-1.5b] [--repeats 20]

One layer of the model's attention (its heads, KV heads and head size from bench/configs/) for one query per row,
over keys and values held as views of a preallocated buffer, as the server's growing cache holds them, with an
additive mask. The candidates run in one process, interleaved, on the same tensors; the table gives the median
milliseconds of each and checks that they give the same output (the grouped eager arithmetic in either product
order: the same bits). `models/attention.py` decides per step from this.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table

from recursa.core.config import settings
from recursa.models.attention import grouped_eager
from recursa.models.devices import resolve_device

CONFIGS = Path(__file__).with_name("configs")
SHAPES = [(1, 1_000), (4, 1_500), (12, 1_500), (12, 3_000), (32, 3_000), (1, 6_000), (1, 14_000), (2, 14_000)]


def cache_views(batch: int, kv_heads: int, length: int, dim: int, dtype: torch.dtype, device: torch.device):
    """Keys and values as the first `length` positions of buffers with room to grow (non-contiguous views)."""
    room = length + 512
    keys = torch.randn(batch, kv_heads, room, dim, dtype=dtype, device=device)[:, :, :length]
    values = torch.randn(batch, kv_heads, room, dim, dtype=dtype, device=device)[:, :, :length]
    return keys, values


def fused(query, keys, values, mask, scale):
    out = F.scaled_dot_product_attention(query, keys, values, attn_mask=mask, scale=scale, enable_gqa=True)
    return out.transpose(1, 2).contiguous()


def queries_left(query, keys, values, mask, scale):
    """The grouped eager arithmetic with the scores as queries @ keysᵀ, the order used before keys @ queriesᵀ."""
    batch, heads, _, dim = query.shape
    stacked = query.reshape(batch, keys.shape[1], heads // keys.shape[1], dim)
    scores = torch.matmul(stacked, keys.transpose(2, 3)) * scale + mask.repeat(1, 1, stacked.shape[2], 1)
    weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    return torch.matmul(weights, values).reshape(batch, heads, 1, dim).transpose(1, 2).contiguous()


def median_ms(fn, repeats: int, device: torch.device) -> float:
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--model", default="qwen2.5-coder-1.5b")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32", "float16"])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    config = json.loads((CONFIGS / f"{args.model}.json").read_text())
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    dim = config["hidden_size"] // heads
    device, dtype = resolve_device(args.device), getattr(torch, args.dtype)
    torch.set_num_threads(settings().threads or torch.get_num_threads())     # RECURSA_THREADS, as the server
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    table = Table("batch", "cached", "fused ms", "grouped eager ms", "eager / fused", "queries-left ms",
                  "same output",
                  title=f"decode attention, {args.model} ({heads} heads / {kv_heads} KV, D {dim}), {args.dtype}, "
                        f"{name}")
    torch.manual_seed(0)
    for batch, length in SHAPES:
        query = torch.randn(batch, heads, 1, dim, dtype=dtype, device=device)
        keys, values = cache_views(batch, kv_heads, length, dim, dtype, device)
        mask = torch.zeros(batch, 1, 1, length, dtype=dtype, device=device)
        mask[:, :, :, : length // 10] = torch.finfo(dtype).min         # left padding, as a batch of unequal rows
        scale = dim ** -0.5
        a, b = fused(query, keys, values, mask, scale), grouped_eager(query, keys, values, mask, scale)
        inputs = (query, keys, values, mask, scale)
        same = (torch.allclose(a.float(), b.float(), atol=2e-2, rtol=2e-2)
                and torch.equal(queries_left(*inputs), b))
        fused_ms, eager_ms, left_ms = [], [], []
        for _ in range(3):                                            # interleaved: all see the same load
            fused_ms.append(median_ms(lambda: fused(*inputs), args.repeats, device))             # noqa: B023
            eager_ms.append(median_ms(lambda: grouped_eager(*inputs), args.repeats, device))     # noqa: B023
            left_ms.append(median_ms(lambda: queries_left(*inputs), args.repeats, device))       # noqa: B023
        f, e, q = min(fused_ms), min(eager_ms), min(left_ms)
        table.add_row(str(batch), f"{length:,}", f"{f:.3f}", f"{e:.3f}", f"{e / f:.2f}", f"{q:.3f}",
                      "yes" if same else "NO")
    Console(width=110).print(table)


if __name__ == "__main__":
    main()
