"""Realignment: map a last-layer hidden state back into the model's input-embedding space.

A latent step feeds the model its own last hidden state h (after the final norm) as the next input embedding.
h lives where the LM head reads (logits = h · W_outᵀ), not where the embedding table writes, so LatentMAS maps it:

    W_a = argmin_W ‖W_out · W − W_in‖² + λ‖W‖²  =  (W_outᵀ W_out + λ I)⁻¹ W_outᵀ W_in          [H, H]

(row-vector convention: e = h · W_a). If h ≈ the output-embedding row of a token, h · W_a ≈ that token's input
embedding. Tied models (W_out = W_in) give W_a ≈ I. Gemma scales its embeddings by √H inside the embedding layer;
`input_embedding_matrix()` includes that scale, so W_a targets what the layers actually receive.

λ is *relative*: λ = ridge · tr(W_outᵀW_out) / H, i.e. a fraction of the Gram matrix's mean eigenvalue. Upstream uses
an absolute 1e-5 and a research probe used 1e-5·V; both mean different amounts of shrinkage on different models (the
Gram scales with V·‖w‖²). Relative λ is scale-free, and the default 1e-5 keeps the solve a plain least-squares fit
(on Qwen2.5-0.5B the Gram's eigenvalues span 2.6…10561, mean 45.6: it needs no regularisation), while still making a
rank-deficient head solvable.

Modes (explicit, unlike upstream, where "realign off" still renormalises):
    none        e = h
    norm        e = h · (r / ‖h‖)            r = mean L2 norm of the input-embedding rows
    ridge       e = h · W_a
    ridge+norm  e = (h · W_a) · (r / ‖h · W_a‖)
    soft        e = Σ_top-k softmax(h · W_outᵀ / τ)_i · W_in[i]    (Recursa's addition, see below)

`soft` keeps the thought inside the convex hull of real token embeddings: the expected input embedding under the
model's own next-token distribution (top-k renormalised), no token sampled. It costs one LM-head product per latent
step, but on small models, where h · W_a drifts out of distribution after a few steps and the final agent then
ends its turn at once or loops, it keeps the latents readable.

W_a is solved once per (weights, ridge) in fp32 and cached under `settings().home / "align"`, keyed by a sha256 of
the two embedding matrices' bytes.
"""

from __future__ import annotations

import hashlib
import os
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from recursa.core.config import settings
from recursa.core.errors import ConfigError
from recursa.latent.modes import DEFAULT_RIDGE, REALIGN_MODES

SOFT_TOP_K = 16
SOFT_TEMPERATURE = 1.0
_CACHE_FORMAT = 1


def ridge_map(w_in: torch.Tensor, w_out: torch.Tensor, ridge: float = DEFAULT_RIDGE) -> torch.Tensor:
    """W_a = (W_outᵀW_out + λI)⁻¹ W_outᵀW_in in fp32, with λ = ridge · mean eigenvalue of W_outᵀW_out.

    w_in, w_out: [V, H] (any float dtype) → [H, H] fp32.
    """
    if w_in.shape != w_out.shape:
        raise ConfigError(f"input and output embeddings differ in shape: {tuple(w_in.shape)} vs {tuple(w_out.shape)};"
                          " realignment needs one row per vocabulary token in both")
    w_out32 = w_out.float()
    gram = w_out32.T @ w_out32                                   # [H, H]
    rhs = w_out32.T @ w_in.float()                               # [H, H]
    hidden = gram.shape[0]
    lam = ridge * gram.diagonal().sum() / hidden                 # scale-free ridge
    gram.diagonal().add_(lam)
    chol = torch.linalg.cholesky(gram)                           # SPD for any lam > 0
    return torch.cholesky_solve(rhs, chol)                       # [H, H]


def mean_row_norm(w_in: torch.Tensor, chunk: int = 16384) -> float:
    """Mean L2 norm of the input-embedding rows [V, H] (chunked: no full fp32 copy)."""
    total = 0.0
    for start in range(0, w_in.shape[0], chunk):
        total += w_in[start:start + chunk].float().norm(dim=-1).sum().item()
    return total / w_in.shape[0]


@dataclass
class Realignment:
    """Precomputed pieces for one model: W_a [H, H] fp32 and the target norm r."""

    matrix: torch.Tensor
    target_norm: float
    ridge: float
    weights_digest: str

    def distance_to_identity(self) -> float:
        """‖W_a − I‖_F / ‖I‖_F: ≈ 0 for tied embeddings."""
        eye = torch.eye(self.matrix.shape[0], device=self.matrix.device)
        return ((self.matrix - eye).norm() / eye.norm()).item()


def weights_digest(w_in: torch.Tensor, w_out: torch.Tensor) -> str:
    """sha256 over shapes, dtypes and raw bytes of both matrices (tied matrices are hashed once)."""
    digest = hashlib.sha256()
    tensors = [w_in] if w_in.data_ptr() == w_out.data_ptr() and w_in.shape == w_out.shape else [w_in, w_out]
    for tensor in tensors:
        digest.update(f"{tuple(tensor.shape)}|{tensor.dtype}|".encode())
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(flat.view(torch.uint8).numpy().data)   # numpy has no bf16: hash the bytes
    return digest.hexdigest()


def _cache_path(digest: str, ridge: float) -> Path:
    return settings().home / "align" / f"{digest[:32]}-ridge{ridge:g}-v{_CACHE_FORMAT}.pt"


@torch.no_grad()
def compute_realignment(model: Any, ridge: float = DEFAULT_RIDGE, use_disk: bool = True) -> Realignment:
    """Solve (or load from the disk cache) the realignment of `model` (an HFModel / LatentModel)."""
    w_in, w_out = model.input_embedding_matrix(), model.output_embedding_matrix()
    digest = weights_digest(w_in, w_out)
    path = _cache_path(digest, ridge)
    if use_disk and path.is_file():
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
            if saved.get("digest") == digest:
                return Realignment(saved["matrix"], float(saved["target_norm"]), ridge, digest)
        except (OSError, RuntimeError, KeyError, EOFError):
            pass  # a damaged cache file is recomputed and overwritten below
    matrix = ridge_map(w_in, w_out, ridge)
    target = mean_row_norm(w_in)
    if use_disk:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.partial")
        torch.save({"matrix": matrix, "target_norm": target, "ridge": ridge, "digest": digest,
                    "model": getattr(model, "name", "")}, partial)
        partial.replace(path)  # atomic: readers never see half a file
    return Realignment(matrix, target, ridge, digest)


_memory: weakref.WeakKeyDictionary[Any, dict[float, Realignment]] = weakref.WeakKeyDictionary()


def realignment_for(model: Any, ridge: float = DEFAULT_RIDGE) -> Realignment:
    """`compute_realignment`, memoised per model object (hashing the weights costs ~1 s)."""
    per_model = _memory.setdefault(model, {})
    if ridge not in per_model:
        per_model[ridge] = compute_realignment(model, ridge)
    return per_model[ridge]


class Aligner:
    """hidden [B, H] → next input embedding [B, H] (fp32), in one of the `REALIGN_MODES`."""

    def __init__(self, mode: str, matrix: torch.Tensor | None = None, target_norm: float | None = None,
                 model: Any = None, top_k: int = SOFT_TOP_K, temperature: float = SOFT_TEMPERATURE):
        if mode not in REALIGN_MODES:
            raise ConfigError(f"unknown realign mode '{mode}'; use one of: {', '.join(REALIGN_MODES)}")
        if mode.startswith("ridge") and matrix is None:
            raise ConfigError(f"realign mode '{mode}' needs the W_a matrix")
        if mode.endswith("norm") and target_norm is None:
            raise ConfigError(f"realign mode '{mode}' needs the target norm")
        if mode == "soft" and model is None:
            raise ConfigError("realign mode 'soft' needs the model (its LM head and input embeddings)")
        if top_k < 1 or temperature <= 0:
            raise ConfigError(f"soft realignment needs top_k >= 1 and temperature > 0, got {top_k}, {temperature}")
        self.mode = mode
        self.matrix = matrix if mode.startswith("ridge") else None
        self.target_norm = target_norm
        self.model = model if mode == "soft" else None
        # fetched once: a model that scales its embeddings would otherwise build a [V, H] copy every latent step
        self._table = model.input_embedding_matrix() if self.model is not None else None
        self.top_k, self.temperature = top_k, temperature

    def with_gist(self, model: Any, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(next input embedding [B, H], the LM head's top token [B]): what the thought would have said as text.

        Free with soft (it runs the head anyway); the other modes pay one LM-head product for the token.
        """
        if self.model is not None:
            return self._soft(hidden, with_top=True)
        with torch.no_grad():
            return self(hidden), model.logits(hidden).argmax(dim=-1)

    @classmethod
    def for_model(cls, model: Any, mode: str = "ridge+norm", ridge: float = DEFAULT_RIDGE) -> Aligner:
        if mode not in REALIGN_MODES:
            raise ConfigError(f"unknown realign mode '{mode}'; use one of: {', '.join(REALIGN_MODES)}")
        if mode == "none":
            return cls(mode)
        if mode == "soft":
            return cls(mode, model=model)
        if mode == "norm":  # no solve needed; the norm alone is cheap
            return cls(mode, target_norm=_target_norm_for(model))
        realignment = realignment_for(model, ridge)
        device = getattr(model, "device", realignment.matrix.device)
        return cls(mode, realignment.matrix.to(device), realignment.target_norm)

    def __call__(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.model is not None:
            return self._soft(hidden)
        embeds = hidden.float()                                                  # [B, H]
        if self.matrix is not None:
            embeds = embeds @ self.matrix                                        # [B, H] · [H, H]
        if self.target_norm is not None and self.mode.endswith("norm"):
            norms = embeds.norm(dim=-1, keepdim=True).clamp_min(1e-6)            # [B, 1]
            embeds = embeds * (self.target_norm / norms)
        return embeds

    @torch.no_grad()
    def _soft(self, hidden: torch.Tensor, with_top: bool = False) -> Any:
        logits = self.model.logits(hidden).float()                              # [B, V]
        top, index = logits.topk(self.top_k, dim=-1)                             # [B, k]
        weights = torch.softmax(top / self.temperature, dim=-1)                  # [B, k], renormalised over top-k
        rows = self._table[index].float()                                        # [B, k, H]
        embeds = (weights[..., None] * rows).sum(dim=1)                          # [B, H]
        return (embeds, index[:, 0]) if with_top else embeds


_norms: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()


def _target_norm_for(model: Any) -> float:
    if model not in _norms:
        with torch.no_grad():
            _norms[model] = mean_row_norm(model.input_embedding_matrix())
    return _norms[model]
