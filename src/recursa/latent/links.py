"""RecursiveMAS links: small trained modules that carry latent thoughts within and between different models.

    inner link  (one per agent, d = its hidden size): last hidden state h [.., d] → next input embedding [.., d]
        x ─ LayerNorm ─ Linear(d,d) ─ GELU ─ Linear(d,d) ─(+ x)─ LayerNorm                 2d² + 6d parameters
    outer link  (one per edge src → tgt): the source's thoughts [.., a] → the target's input-embedding space [.., b]
        x ─ LayerNorm(a) ─ Linear(a,2b) ─ GELU ─ Linear(2b,b) ─(+ Linear(a,b)·x)─ LayerNorm(b)   3ab + 2b² + 2a + 6b

These are the release code's `ln_res_adapter` and `outer_ln_res_adapter` (every Linear has a bias; the outer MLP's
hidden width is 2·b). What crosses agents is `outer(inner(H))` for the m thoughts H [B, m, a].

Checkpoints are one safetensors file per link; its header carries a JSON record (`recursa_link`): format version,
kind, and for the source and target model their name, hidden size and a sha256 of the input-embedding matrix.
`load_link` checks all of it against the models it is given: a link trained for other weights is one ConfigError.

`ridge_bridge` gives an outer link a closed-form start: least squares from source features to target input
embeddings of the same text (`text_pairs` aligns the two tokenizations word by word), written into the residual
projection with the MLP branch zeroed, so the untrained link already maps into the target's embedding space.
"""

from __future__ import annotations

import json
import re
import weakref
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from recursa.core.errors import ConfigError
from recursa.latent.align import weights_digest

LINK_FORMAT = "recursa-link"
LINK_VERSION = 1
_INNER_KEYS = {"pre_ln.weight", "pre_ln.bias", "proj1.weight", "proj1.bias", "proj2.weight", "proj2.bias",
               "post_ln.weight", "post_ln.bias"}
_OUTER_KEYS = {"ln_source.weight", "ln_source.bias", "proj1.weight", "proj1.bias", "proj2.weight", "proj2.bias",
               "residual_proj.weight", "residual_proj.bias", "ln_target.weight", "ln_target.bias"}


class InnerLink(nn.Module):
    """One agent's latent step map: h [.., d] → next input embedding [.., d] (residual MLP between LayerNorms)."""

    def __init__(self, d: int):
        super().__init__()
        self.d_src = self.d_tgt = d
        self.pre_ln = nn.LayerNorm(d)
        self.proj1 = nn.Linear(d, d)
        self.proj2 = nn.Linear(d, d)
        self.post_ln = nn.LayerNorm(d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.proj1.weight.dtype)
        return self.post_ln(x + self.proj2(nn.functional.gelu(self.proj1(self.pre_ln(x)))))

    @staticmethod
    def parameter_count(d: int) -> int:
        return 2 * d * d + 6 * d


class OuterLink(nn.Module):
    """An edge between two models: source thoughts [.., a] → target input embeddings [.., b]."""

    def __init__(self, d_src: int, d_tgt: int):
        super().__init__()
        self.d_src, self.d_tgt = d_src, d_tgt
        self.ln_source = nn.LayerNorm(d_src)
        self.proj1 = nn.Linear(d_src, 2 * d_tgt)
        self.proj2 = nn.Linear(2 * d_tgt, d_tgt)
        self.residual_proj = nn.Linear(d_src, d_tgt)
        self.ln_target = nn.LayerNorm(d_tgt)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.proj1.weight.dtype)
        mlp = self.proj2(nn.functional.gelu(self.proj1(self.ln_source(x))))
        return self.ln_target(mlp + self.residual_proj(x))

    @staticmethod
    def parameter_count(a: int, b: int) -> int:
        return 3 * a * b + 2 * b * b + 2 * a + 6 * b


Link = InnerLink | OuterLink


# ---- checkpoints ---------------------------------------------------------------------------------------------
_digests: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


def embedding_digest(model: Any) -> str:
    """sha256 of a model's input-embedding matrix (shape, dtype, bytes); memoised per model object."""
    if model not in _digests:
        w_in = model.input_embedding_matrix()
        _digests[model] = weights_digest(w_in, w_in)
    return _digests[model]


def model_record(model: Any) -> dict[str, Any]:
    return {"model": str(model.name), "hidden_size": int(model.hidden_size),
            "embedding_sha256": embedding_digest(model)}


def save_link(link: Link, path: Path | str, source: Any, target: Any, dtype: torch.dtype = torch.float32,
              **info: Any) -> Path:
    """Write `link` (weights in `dtype`; bf16 halves a shipped checkpoint) with the JSON record naming its source
    and target models. Loading always gives fp32 modules."""
    kind = "inner" if isinstance(link, InnerLink) else "outer"
    if link.d_src != source.hidden_size or link.d_tgt != target.hidden_size:
        raise ConfigError(f"{kind} link {link.d_src}→{link.d_tgt} does not fit {source.name} "
                          f"(H={source.hidden_size}) → {target.name} (H={target.hidden_size})")
    record = {"format": LINK_FORMAT, "version": LINK_VERSION, "kind": kind, "d_src": link.d_src,
              "d_tgt": link.d_tgt, "source": model_record(source), "target": model_record(target), "info": info}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to(dtype).cpu().contiguous() for k, v in link.state_dict().items()}
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata={"recursa_link": json.dumps(record)})
    tmp.replace(path)
    return path


def read_link_record(path: Path | str) -> dict[str, Any]:
    """The JSON record of a link checkpoint (ConfigError if it is not one, or of another format version)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"link checkpoint {path} not found; train it with `recursa train-links SYSTEM.yaml`")
    try:
        with safe_open(str(path), framework="pt") as handle:
            raw = (handle.metadata() or {}).get("recursa_link")
    except Exception as exc:  # noqa: BLE001 - safetensors raises several types for a bad file
        raise ConfigError(f"{path} is not a safetensors link checkpoint: {exc}") from None
    record = json.loads(raw) if raw else {}
    if record.get("format") != LINK_FORMAT or record.get("version") != LINK_VERSION:
        raise ConfigError(f"{path} is not a {LINK_FORMAT} v{LINK_VERSION} checkpoint "
                          f"(found {record.get('format')!r} v{record.get('version')!r})")
    return record


def load_link(path: Path | str, source: Any, target: Any) -> Link:
    """Load a link for `source` → `target` (the same model twice for an inner link); checks kind, dimensions,
    model names and embedding hashes, and the exact key set."""
    record = read_link_record(path)
    for side, model in (("source", source), ("target", target)):
        want, have = record[side], model_record(model)
        if want["hidden_size"] != have["hidden_size"] or want["embedding_sha256"] != have["embedding_sha256"]:
            raise ConfigError(f"link {path} was trained with {side} model {want['model']} (H={want['hidden_size']}, "
                              f"embeddings {want['embedding_sha256'][:12]}), not {have['model']} "
                              f"(H={have['hidden_size']}, embeddings {have['embedding_sha256'][:12]})")
    link: Link = InnerLink(record["d_src"]) if record["kind"] == "inner" else OuterLink(record["d_src"],
                                                                                        record["d_tgt"])
    with safe_open(str(path), framework="pt") as handle:
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 - safe_open has no iter
    expected = _INNER_KEYS if record["kind"] == "inner" else _OUTER_KEYS
    if set(tensors) != expected:
        raise ConfigError(f"{path}: keys {sorted(set(tensors) ^ expected)} differ from a {record['kind']} link's")
    link.load_state_dict({k: v.float() for k, v in tensors.items()}, strict=True)
    return link.eval()


def token_hidden_states(model: Any, ids: torch.Tensor | None = None,
                        embeds: torch.Tensor | None = None) -> torch.Tensor:
    """Last-layer hidden states (after the final norm) at every position of one sequence, [T] ids or [T, H]
    embeddings → [T, H]; differentiable with respect to `embeds` outside inference mode (link training)."""
    module = model.module.model                                   # the transformers base model (HFModel.module)
    length = int(ids.shape[0] if ids is not None else embeds.shape[0])
    positions = torch.arange(length, device=model.device)[None]
    mask = torch.ones(1, length, dtype=torch.long, device=model.device)
    out = module(input_ids=None if ids is None else ids[None], attention_mask=mask, position_ids=positions,
                 inputs_embeds=None if embeds is None else embeds[None].to(model.dtype), use_cache=False)
    return out.last_hidden_state[0]


# ---- ridge bridge ----------------------------------------------------------------------------------------------
_WORD = re.compile(r"\S+")


def _span_pool(offsets: list[tuple[int, int]], vectors: torch.Tensor, spans: list[tuple[int, int]]) -> torch.Tensor:
    """Mean of the token vectors [T, D] overlapping each character span → [len(spans), D] (NaN rows: no token)."""
    out = torch.full((len(spans), vectors.shape[-1]), float("nan"))
    for i, (lo, hi) in enumerate(spans):
        rows = [t for t, (a, b) in enumerate(offsets) if a < hi and b > lo and b > a]
        if rows:
            out[i] = vectors[rows].float().mean(0)
    return out


@torch.inference_mode()
def text_pairs(source: Any, target: Any, texts: list[str],
               features: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Regression pairs from plain texts the two models tokenize differently, aligned by words.

    For each whitespace-separated word: X = mean of the source's last hidden states over the source tokens that
    overlap the word (mapped by `features`, e.g. the source's inner link, if given), Y = mean of the target's input
    embeddings over the target tokens that overlap it. Words are the smallest unit both tokenizations share
    exactly (BPE tokens split differently; sentences give too few pairs for a [a, b] map). → X [N, a], Y [N, b].
    """
    xs, ys = [], []
    for text in texts:
        spans = [m.span() for m in _WORD.finditer(text)]
        if not spans:
            continue
        src = source.tokenizer(text, return_offsets_mapping=True, add_special_tokens=False)
        tgt = target.tokenizer(text, return_offsets_mapping=True, add_special_tokens=False)
        hidden = token_hidden_states(source, torch.tensor(src["input_ids"], device=source.device))   # [T, a]
        if features is not None:
            hidden = features(hidden)
        emb = target.embed(torch.tensor(tgt["input_ids"], device=target.device))                     # [T', b]
        x = _span_pool(src["offset_mapping"], hidden.float().cpu(), spans)
        y = _span_pool(tgt["offset_mapping"], emb.float().cpu(), spans)
        keep = ~(x.isnan().any(1) | y.isnan().any(1))
        xs.append(x[keep])
        ys.append(y[keep])
    return torch.cat(xs), torch.cat(ys)


def ridge_bridge(link: OuterLink, x: torch.Tensor, y: torch.Tensor, ridge: float = 0.1) -> OuterLink:
    """Closed-form start for an outer link from pairs x [N, a] → y [N, b].

    The final LayerNorm standardises each output vector, so W is fitted to the standardised targets
    ŷ = (y − mean_row(y)) / std_row(y); the LayerNorm gain and bias then restore the typical scale and per-feature
    offset. The MLP branch starts at zero (proj2 = 0), so the link is exactly the ridge map at step 0.
    λ is relative: ridge × mean eigenvalue of the centred Gram matrix.
    """
    x, y = x.double(), y.double()
    y_std = (y - y.mean(1, keepdim=True)) / y.std(1, unbiased=False, keepdim=True).clamp(min=1e-6)
    x_mean, t_mean = x.mean(0), y_std.mean(0)
    xc, tc = x - x_mean, y_std - t_mean
    gram = xc.T @ xc
    gram.diagonal().add_(ridge * gram.diagonal().mean())
    w = torch.linalg.solve(gram, xc.T @ tc)                          # [a, b]
    bias = t_mean - x_mean @ w
    gain = y.std(1, unbiased=False).mean()
    with torch.no_grad():
        link.residual_proj.weight.copy_(w.T.float())
        link.residual_proj.bias.copy_(bias.float())
        link.proj2.weight.zero_()
        link.proj2.bias.zero_()
        link.ln_target.weight.fill_(float(gain))
        link.ln_target.bias.copy_((y - gain * y_std).mean(0).float())
    return link


def regression_error(link: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """How well link(x) predicts y: relative squared error ‖ŷ − y‖² / ‖y − ȳ‖² and mean cosine."""
    with torch.no_grad():
        pred = link(x.float()).float()
    rel = ((pred - y) ** 2).sum() / ((y - y.mean(0)) ** 2).sum()
    cos = nn.functional.cosine_similarity(pred, y.float(), dim=-1).mean()
    return {"relative_mse": float(rel), "cosine": float(cos)}
