"""A lean forward pass over the weights of a Llama-family decoder (Llama, Qwen2, Mistral, SmolLM): the decode path.

transformers' modules cost a decode step more than their weights: three q/k/v matmuls (and the bias of each) where
one would do, two for gate/up, a mask rebuilt per layer, and Python and dispatch around every op. Here every layer
runs two fused matmuls plus o/down, the additive mask and the RoPE tables are built once per forward, and the
matmul routine of a decode step is the one that streams weights fastest at one or two rows on torch's CPU build
(bench/results/speed-*.md): `weight @ x.T` (see `DenseMatmul`). Int8 weights (models/int8.py) run
`aten._weight_int8pack_mm`, which reads the int8 bytes.

The numbers are those of the modules: RMSNorm in float32, RoPE from the model's own rotary module, the attention
of models/attention.py (grouped, the default; or torch's SDPA), and the same KV cache (`SequenceState.cache`).
The fused q/k/v and gate/up tensors replace the modules' weights, which become views into them (no second copy),
so the transformers modules (`HFModel.module`, link training) still read the same weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import DynamicCache

from recursa.models import attention

SUPPORTED_TYPES = ("llama", "qwen2", "mistral")


def unsupported_reason(model: torch.nn.Module, attention_kind: str) -> str | None:
    """Why the fused path cannot run this model (None when it can)."""
    config = model.config
    if config.model_type not in SUPPORTED_TYPES:
        return f"model type {config.model_type!r} (fused: {', '.join(SUPPORTED_TYPES)})"
    if attention_kind not in ("grouped", "sdpa"):
        return f"attention {attention_kind!r} runs through transformers' modules"
    if getattr(config, "use_sliding_window", False) or getattr(config, "hidden_act", "silu") != "silu":
        return "sliding-window attention or a non-SiLU MLP"
    if getattr(config, "pretraining_tp", 1) != 1 or getattr(config, "rope_scaling", None) and \
            config.rope_scaling.get("rope_type", config.rope_scaling.get("type")) == "dynamic":
        return "tensor-parallel slices or dynamic RoPE"
    return None


def _is_prefill(x: torch.Tensor) -> bool:
    """A segment of several positions per row ([B, t, K], t > 1), as opposed to a decode step or a head input."""
    return x.dim() == 3 and x.shape[1] > 1


class DenseMatmul:
    """y = x Wᵀ + b over a [N, K] weight in the model's dtype.

    Decode steps and logits (a few rows) run `W @ xᵀ`: at 1–16 rows it streams the weights fastest and gives every
    row the same bits whatever the number of rows (one row is run as two: that kernel is slower for a single
    column). Prefill segments (hundreds of rows) run `x @ Wᵀ`, oneDNN's GEMM, faster there. The bias is added once
    to the output (fused into the GEMM it made q/k/v twice as slow)."""

    kind = "dense"

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        self.weight, self.bias = weight, bias

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if _is_prefill(x):
            out = torch.matmul(x, self.weight.t())
        else:
            flat = x.reshape(-1, x.shape[-1])
            rows = flat.shape[0]
            if rows == 1:
                flat = torch.cat([flat, flat])
            out = torch.matmul(self.weight, flat.t()).t()[:rows].contiguous()     # [M, N]
            out = out.view(*x.shape[:-1], out.shape[-1])
        if self.bias is not None:
            out += self.bias
        return out


class Int8Matmul:
    """y = (x qᵀ) · s + b with int8 weights q [N, K] and per-channel power-of-two scales s [N].

    Decode steps of one or two rows read the int8 bytes (`_weight_int8pack_mm`); its cost grows with every row,
    so bigger steps and prefill segments run `dense`, the same weights dequantised (q · s is exact in bf16 because
    s is a power of two): both kernels compute the same products and differ only in the order of their sums."""

    kind = "int8"
    INT8_MAX_ROWS = 2

    def __init__(self, qweight: torch.Tensor, scales: torch.Tensor, dense: DenseMatmul):
        self.qweight, self.scales, self.dense = qweight, scales, dense

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        if _is_prefill(x) or flat.shape[0] > self.INT8_MAX_ROWS:
            return self.dense(x)
        out = torch.ops.aten._weight_int8pack_mm(flat.contiguous(), self.qweight, self.scales)
        if self.dense.bias is not None:
            out += self.dense.bias
        return out.view(*x.shape[:-1], out.shape[-1])


Matmul = DenseMatmul | Int8Matmul


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """Llama/Qwen2 RMSNorm: normalised in float32, scaled in the input dtype."""
    dtype = x.dtype
    x32 = x.float()
    x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x32.to(dtype)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE on [B, heads, t, D] with cos/sin [B, 1, t, D] (transformers' rotate_half convention)."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


class FusedLayer:
    """One decoder layer's weights: norms, fused q/k/v (+ bias), o, fused gate/up, down."""

    def __init__(self, layer: torch.nn.Module):
        attn, mlp = layer.self_attn, layer.mlp
        self.in_norm, self.post_norm = layer.input_layernorm.weight, layer.post_attention_layernorm.weight
        self.eps = layer.input_layernorm.variance_epsilon
        self.head_dim = attn.head_dim
        self.q_size = attn.q_proj.out_features
        self.kv_size = attn.k_proj.out_features
        self.scaling = attn.scaling
        self.qkv = DenseMatmul(*_fuse([attn.q_proj, attn.k_proj, attn.v_proj]))
        self.o = DenseMatmul(attn.o_proj.weight, attn.o_proj.bias)
        self.gate_up = DenseMatmul(*_fuse([mlp.gate_proj, mlp.up_proj]))
        self.down = DenseMatmul(mlp.down_proj.weight, mlp.down_proj.bias)
        self.intermediate = mlp.gate_proj.out_features

    def matmuls(self) -> dict[str, Matmul]:
        return {"qkv": self.qkv, "o": self.o, "gate_up": self.gate_up, "down": self.down}

    def forward(self, h: torch.Tensor, cache: DynamicCache, index: int, cos: torch.Tensor, sin: torch.Tensor,
                mask: torch.Tensor) -> torch.Tensor:
        batch, t, _ = h.shape
        qkv = self.qkv(rms_norm(h, self.in_norm, self.eps))                      # [B, t, q + 2 kv]
        q, k, v = qkv.split([self.q_size, self.kv_size, self.kv_size], dim=-1)
        q = rotate(q.view(batch, t, -1, self.head_dim).transpose(1, 2), cos, sin)   # [B, H, t, D]
        k = rotate(k.view(batch, t, -1, self.head_dim).transpose(1, 2), cos, sin)   # [B, KV, t, D]
        v = v.view(batch, t, -1, self.head_dim).transpose(1, 2)
        k, v = cache.update(k, v, index)                                          # [B, KV, T, D]
        out, _ = attention.grouped_attention(None, q, k, v, mask, self.scaling)       # [B, t, H, D]
        h = h + self.o(out.reshape(batch, t, self.q_size))
        gate, up = self.gate_up(rms_norm(h, self.post_norm, self.eps)).split(self.intermediate, dim=-1)
        return h + self.down(F.silu(gate) * up)


def _fuse(linears: list[torch.nn.Linear]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One [ΣN, K] weight (and bias) for several linears that read the same input; each linear's parameters
    become views into it, so the modules keep working on the same memory."""
    weight = torch.cat([linear.weight.detach() for linear in linears]).contiguous()
    has_bias = [linear.bias is not None for linear in linears]
    bias = None
    if any(has_bias):
        bias = torch.cat([linear.bias.detach() if linear.bias is not None
                          else weight.new_zeros(linear.out_features) for linear in linears])
    start = 0
    for linear in linears:
        end = start + linear.out_features
        linear.weight = torch.nn.Parameter(weight[start:end], requires_grad=False)
        if linear.bias is not None:
            linear.bias = torch.nn.Parameter(bias[start:end], requires_grad=False)
        start = end
    return weight, bias


class FusedDecoder:
    """The decoder stack of a transformers causal LM as fused layers; `forward` appends one segment to a cache."""

    def __init__(self, model: torch.nn.Module, attention_kind: str = "grouped"):
        base = model.model
        self.embed_tokens = base.embed_tokens
        self.rotary = base.rotary_emb
        self.norm, self.eps = base.norm.weight, base.norm.variance_epsilon
        self.layers = [FusedLayer(layer) for layer in base.layers]
        head = model.get_output_embeddings()
        self.head: Matmul = DenseMatmul(head.weight, head.bias)
        self.attention_kind = attention_kind
        self.weights = "dense"

    def matmuls(self) -> dict[str, Matmul]:
        """Every matmul by name (`layers.3.qkv`, `head`), for quantisation and for the speed benchmark."""
        named = {f"layers.{i}.{name}": matmul for i, layer in enumerate(self.layers)
                 for name, matmul in layer.matmuls().items()}
        return named | {"head": self.head}

    def set_matmul(self, name: str, matmul: Matmul) -> None:
        if name == "head":
            self.head = matmul
            return
        _, index, attr = name.split(".")
        setattr(self.layers[int(index)], attr, matmul)

    @torch.inference_mode()
    def forward(self, cache: DynamicCache, mask: torch.Tensor, positions: torch.Tensor,
                input_ids: torch.Tensor | None = None, inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
        """Append a segment [B, t] (ids or embeddings [B, t, H]) at `positions` [B, t]; `mask` [B, T] covers the
        cache and the segment (1 = real). Returns the last layer's hidden states [B, t, H] after the final norm."""
        h = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
        cos, sin = self.rotary(h, positions)
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)                           # [B, 1, t, D]
        additive = _additive_mask(mask, h.shape[1], h.dtype)
        for index, layer in enumerate(self.layers):
            h = layer.forward(h, cache, index, cos, sin, additive)
        return rms_norm(h, self.norm, self.eps)

    @torch.inference_mode()
    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.head(hidden)


def _additive_mask(mask: torch.Tensor, t: int, dtype: torch.dtype) -> torch.Tensor:
    """[B, 1, t, T] additive mask: 0 where a query may attend (a real key, not in its future), else the dtype's
    minimum (finite, so the all-padding query rows of a left-padded prefill stay finite)."""
    total = mask.shape[1]
    query_at = torch.arange(total - t, total, device=mask.device)[:, None]
    allowed = (torch.arange(total, device=mask.device)[None, :] <= query_at)[None, None] & mask.bool()[:, None, None]
    return torch.zeros(allowed.shape, dtype=dtype, device=mask.device).masked_fill_(~allowed, torch.finfo(dtype).min)
