"""Grouped-query eager attention without the key/value copies: same numbers as transformers' eager path, faster.

transformers' eager attention repeats every key/value head once per query head of its group (`repeat_kv`): it
copies the whole cache G times per layer per step, which made attention the slowest part of a batched decode step
once caches grew (bench/results/attention.md). Here the G query heads of a group are stacked against their shared
key/value head instead. The dot products and reductions are those of the eager path (a test checks equality on
decode-sized shapes; on long prefill chunks the last bit can differ, see bench/results/attention.md). The default
(`RECURSA_ATTENTION=eager` restores transformers' own). Like eager, it leaves a row's greedy tokens independent
of its batch except where two candidate tokens tie within bf16 rounding: with more than one thread the batched
matmul splits its work by batch size, so at an exact tie either path can pick either token.

Prefill chunks (more than one query) go to torch's fused CPU kernel (`scaled_dot_product_attention`) instead: the
eager arithmetic materialises a float32 [G·q, T] score matrix per head group, which made prefill attention over a
long cache ~8× slower than the fused kernel and the largest cost of an agent server (bench/results/attention.md).
Its rounding depends on where the padding falls, by about one bf16 unit, the same order as the matmuls' own
row-count rounding, so a row's tokens alone and batched still part only at near-ties (the tests check this).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, eager_mask

NAME = "recursa_grouped"


def grouped_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                      attention_mask: torch.Tensor | None, scaling: float, dropout: float = 0.0,
                      **_: object) -> tuple[torch.Tensor, None]:
    """query [B, H, q, D], key/value [B, KV, T, D], additive mask [B, 1, q, T] → output [B, q, H, D]."""
    if query.shape[2] > 1:
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, scale=scaling,
                                             enable_gqa=True)
        return out.transpose(1, 2).contiguous(), None
    return grouped_eager(query, key, value, attention_mask, scaling), None


def grouped_eager(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask: torch.Tensor | None,
                  scaling: float) -> torch.Tensor:
    """Eager attention's arithmetic with the G query heads of a group stacked against their key/value head."""
    batch, heads, q_len, dim = query.shape
    kv_heads = key.shape[1]
    group = heads // kv_heads
    stacked = query.reshape(batch, kv_heads, group * q_len, dim)              # head h = kv·G + g → row g·q + i
    scores = torch.matmul(stacked, key.transpose(2, 3)) * scaling             # [B, KV, G·q, T]
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
