"""Int8 weight-only quantisation of the fused decoder: per output channel, power-of-two scales, cached on disk.

Every matmul weight W [N, K] (q/k/v, o, gate/up, down, LM head) becomes q = round(W / s) in int8 with one scale per
row, s = 2^ceil(log2(max|W_row| / 127)). A power of two makes q · s exact in bf16, so the model's own weights are
replaced by their dequantised values: the transformers modules, the bf16 kernel (batches of three rows and more)
and the int8 kernel (one or two rows, reading the int8 bytes) compute the same products, and a row's tokens stay
the same alone and batched up to a tie, as on the bf16 path. The embedding table stays as it is (it is only
indexed) unless it is tied to the LM head. Quantising is done once per model and kept under
`RECURSA_HOME/int8/`, keyed by a fingerprint of the source weights.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from recursa.models.fused import DenseMatmul, FusedDecoder, Int8Matmul

FORMAT = "recursa-int8-pow2-v1"


def quantize(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """W [N, K] → (q int8 [N, K], s float32 [N]) with W ≈ q · s per row and s a power of two."""
    w = weight.detach().float()
    absmax = w.abs().amax(dim=1).clamp(min=2.0 ** -100)
    scales = torch.exp2(torch.ceil(torch.log2(absmax / 127.0)))
    q = torch.round(w / scales[:, None]).clamp_(-127, 127).to(torch.int8)
    return q, scales


def fingerprint(decoder: FusedDecoder) -> str:
    """A short digest of the dense weights' shapes and a strided sample of their values."""
    digest = hashlib.sha256(FORMAT.encode())
    for name, matmul in sorted(decoder.matmuls().items()):
        weight = _dense(matmul).weight
        sample = weight.detach().reshape(-1)[:: max(1, weight.numel() // 4096)].float().cpu()
        digest.update(f"{name}{tuple(weight.shape)}".encode())
        digest.update(sample.numpy().tobytes())
    return digest.hexdigest()[:16]


def cache_path(home: Path, model_name: str) -> Path:
    return home / "int8" / f"{re.sub(r'[^A-Za-z0-9._-]+', '_', model_name)}.safetensors"


def load_or_quantize(decoder: FusedDecoder, path: Path | None) -> dict[str, torch.Tensor]:
    """{name.q, name.s} for every matmul: read from `path` when it holds these weights' quantisation, else
    computed (and written to `path`, when given)."""
    expected = fingerprint(decoder)
    if path is not None and path.is_file():
        from safetensors import safe_open

        with safe_open(str(path), "pt") as handle:
            if (handle.metadata() or {}).get("fingerprint") == expected:
                return load_file(str(path))
    tensors: dict[str, torch.Tensor] = {}
    for name, matmul in decoder.matmuls().items():
        q, s = quantize(_dense(matmul).weight)
        tensors[f"{name}.q"], tensors[f"{name}.s"] = q.cpu().contiguous(), s.cpu()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        save_file(tensors, str(partial), metadata={"format": FORMAT, "fingerprint": expected})
        partial.replace(path)
    return tensors


@torch.no_grad()
def apply_int8(decoder: FusedDecoder, tensors: dict[str, torch.Tensor]) -> None:
    """Switch every matmul of `decoder` to int8; the dense weights become the dequantised values (in place)."""
    for name, matmul in decoder.matmuls().items():
        dense = _dense(matmul)
        q = tensors[f"{name}.q"].to(dense.weight.device)
        scales = tensors[f"{name}.s"].to(dense.weight.device, dense.weight.dtype)
        dense.weight.copy_(q.to(dense.weight.dtype) * scales[:, None])
        decoder.set_matmul(name, Int8Matmul(q, scales, dense))
    decoder.weights = "int8"


def _dense(matmul) -> DenseMatmul:
    return matmul.dense if isinstance(matmul, Int8Matmul) else matmul
