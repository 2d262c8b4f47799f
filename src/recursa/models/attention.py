"""Attention of the local backend: torch's fused CPU kernel for prefill, grouped eager arithmetic for decode.

Prefill chunks run `scaled_dot_product_attention` with grouped-query heads (`enable_gqa`): it reads the growing KV
cache's strided views directly (models/kv_cache.py) and keeps its softmax in float32 blocks, 7.8x faster than the
eager arithmetic for a 512-token chunk over a cached agent prefix. Its rounding depends on where a row's padding
falls, by about one bf16 unit, the same order as the matmuls' own row-count rounding, so a row's greedy tokens
alone and batched part only at near-ties of the two best tokens (the tests check this). Decode steps (one query
per row) run `grouped_eager`, transformers' eager arithmetic without its key/value copies: on the CPU it was 3-6x
faster than the fused kernel at a server's batch on the cache's bf16 views at one thread; on an H200 the fused call
alone was faster but whole decode steps were 2-4x slower with it (bench/results/attention.md).
`RECURSA_ATTENTION=eager` runs transformers' own modules.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, eager_mask

NAME = "recursa_grouped"
DECODE_RUNS_EAGER = True     # False: decode steps run the fused kernel too (bench/device_check.py compares)


def grouped_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                      attention_mask: torch.Tensor | None, scaling: float, dropout: float = 0.0,
                      **_: object) -> tuple[torch.Tensor, None]:
    """query [B, H, q, D], key/value [B, KV, T, D], additive mask [B, 1, q, T] → output [B, q, H, D].

    A decode step (one query per row) runs the grouped eager arithmetic, faster there on the CPU and in whole
    steps on a GPU (bench/results/attention.md); longer chunks run fused."""
    if query.shape[2] == 1 and DECODE_RUNS_EAGER:
        return grouped_eager(query, key, value, attention_mask, scaling), None
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, scale=scaling,
                                         enable_gqa=True)
    return out.transpose(1, 2).contiguous(), None


def grouped_eager(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask: torch.Tensor | None,
                  scaling: float) -> torch.Tensor:
    """Eager attention's arithmetic with the G query heads of a group stacked against their key/value head."""
    batch, heads, q_len, dim = query.shape
    kv_heads = key.shape[1]
    group = heads // kv_heads
    stacked = query.reshape(batch, kv_heads, group * q_len, dim)              # head h = kv·G + g → row g·q + i
    if key.device.type == "cpu":    # keys as the left operand: same bits, 3-6x faster (bench/results/attention.md)
        scores = torch.matmul(key, stacked.transpose(2, 3)).transpose(2, 3) * scaling
    else:                           # the GPU keeps the order bench/device_check.py measured
        scores = torch.matmul(stacked, key.transpose(2, 3)) * scaling         # [B, KV, G·q, T]
    if attention_mask is not None:
        scores = scores + attention_mask.repeat(1, 1, group, 1)               # the same mask for every head
    weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    out = torch.matmul(weights, value)                                        # [B, KV, G·q, D]
    return out.reshape(batch, heads, q_len, dim).transpose(1, 2).contiguous()


def register() -> str:
    """Make the implementation selectable with `model.set_attn_implementation(NAME)` (eager's float masks)."""
    AttentionInterface.register(NAME, grouped_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, eager_mask)
    return NAME
