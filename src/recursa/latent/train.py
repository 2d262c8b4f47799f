"""Link training for RecursiveMAS, base models frozen (the training code's two stages, §2.2 of the notes).

Stage 1 (per agent): the agent is teacher-forced on its prompt + role target y (plan, refined plan, answer). Its
last hidden states h_t at the positions that predict the target are cached once; the inner link learns
h_t → Emb(y_{t+1}) with (1 − cos) + 0.1 · relative MSE (the MSE term pins the scale cosine leaves free: a latent
fed back at the wrong norm derails the next step).

Stage 2 (whole system): R rounds, teacher-forced. Each non-final agent reads its prompt with the incoming latents
in the slots, followed by the first m tokens of its gold role text; its hidden states h_0..h_{m−1} (the states
that predict those tokens: what an m-step rollout would produce, if it followed the gold text) go through
inner → outer into the next agent's slot (the last agent's, in rounds < R, into the first agent's next round). The
loss is cross-entropy on the final agent's answer tokens in round R; the graph spans all rounds, so every outer
link gets gradient. Inner links are frozen here but differentiable. AdamW (0.9, 0.95), warm-up then cosine,
clip 1.0, one example per step.

Checkpoints (`checkpoint.pt`, written atomically every `checkpoint_every` steps) hold the links, the optimizer,
the step and the loss history: a run killed at any point (even `kill -9`) resumes where its last checkpoint was.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from recursa.latent.links import InnerLink, OuterLink, ridge_bridge, save_link, text_pairs, token_hidden_states


@dataclass
class TrainSettings:
    rounds: int = 2
    latent_tokens: int = 16          # m: gold-text positions whose states cross agents (inference: m latent steps)
    inner_epochs: int = 20
    inner_lr: float = 1e-3
    outer_steps: int = 80
    outer_lr: float = 3e-4
    warmup: int = 5
    max_answer_tokens: int = 160
    init: str = "ridge"              # ridge | random (outer links)
    checkpoint_every: int = 5
    max_minutes: float = 50.0        # stage 2 stops here (and saves) even before outer_steps
    seed: int = 0


@dataclass
class Example:
    question: str
    answer_format: str
    targets: dict[str, str]          # role target name (plan, refined_plan, answer) → text


# ---- stage 1 ------------------------------------------------------------------------------------------------------
@torch.inference_mode()
def inner_pairs(model: Any, prompts: list[list[int]], targets: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher-forced states h [N, H] at the positions predicting each target token, and Emb(next token) [N, H]."""
    xs, ys = [], []
    for prompt, target in zip(prompts, targets, strict=True):
        ids = torch.tensor(prompt + target, device=model.device)
        hidden = token_hidden_states(model, ids)                              # [T, H]
        start = len(prompt) - 1
        xs.append(hidden[start:start + len(target)].float().cpu())
        ys.append(model.embed(ids[start + 1:start + 1 + len(target)]).float().cpu())
    return torch.cat(xs), torch.cat(ys)


def inner_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    cos = nn.functional.cosine_similarity(pred, target, dim=-1).mean()
    rel = ((pred - target) ** 2).sum(-1).mean() / (target ** 2).sum(-1).mean()
    return (1 - cos) + 0.1 * rel


@torch.no_grad()
def match_output_moments(link: InnerLink, y: torch.Tensor) -> None:
    """Start the closing LayerNorm at the targets' per-dimension mean and spread. With its default (weight 1) the
    link's outputs have norm ≈ √d, tens of times an input embedding's, and a few epochs do not undo that: the
    receiving model would read every latent step as an out-of-range input."""
    link.post_ln.weight.copy_(y.float().std(0).clamp_min(1e-6).to(link.post_ln.weight.dtype))
    link.post_ln.bias.copy_(y.float().mean(0).to(link.post_ln.bias.dtype))


def train_inner(link: InnerLink, x: torch.Tensor, y: torch.Tensor, epochs: int, lr: float, seed: int = 0,
                batch: int = 128, on_step: Callable[[float], None] | None = None) -> list[float]:
    """Fit the inner link on cached pairs; returns the loss per minibatch."""
    match_output_moments(link, y)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(link.parameters(), lr=lr, weight_decay=0.0)
    losses = []
    link.train()
    for _ in range(epochs):
        order = torch.randperm(x.shape[0], generator=generator)
        for start in range(0, x.shape[0], batch):
            rows = order[start:start + batch]
            loss = inner_loss(link(x[rows]), y[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            if on_step is not None:
                on_step(losses[-1])
    link.eval()
    return losses


# ---- stage 2 helpers (the unrolled system itself is methods/recursive_train.py: it renders role prompts) -------
def lr_at(step: int, settings: TrainSettings) -> float:
    if step < settings.warmup:
        return settings.outer_lr * (step + 1) / settings.warmup
    progress = (step - settings.warmup) / max(1, settings.outer_steps - settings.warmup)
    return settings.outer_lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def ridge_init(spec: Any, models: dict[str, Any], inner: dict[str, InnerLink], outer: dict[tuple[str, str], OuterLink],
               texts: list[str]) -> None:
    """Closed-form start of every outer link: ridge from inner_src(source states) to target embeddings, by word."""
    for (source, target), link in outer.items():
        x, y = text_pairs(models[source], models[target], texts, features=inner[source])
        ridge_bridge(link, x, y)


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(payload, tmp)
    tmp.replace(path)                      # atomic: a kill -9 leaves the previous checkpoint intact


def save_links(out_dir: Path, spec: Any, models: dict[str, Any], inner: dict[str, InnerLink],
               outer: dict[tuple[str, str], OuterLink], dtype: torch.dtype, info: dict[str, Any]) -> None:
    for name, link in inner.items():
        save_link(link, out_dir / f"inner-{name}.safetensors", models[name], models[name], dtype=dtype, **info)
    for (source, target), link in outer.items():
        save_link(link, out_dir / f"outer-{source}-{target}.safetensors", models[source], models[target],
                  dtype=dtype, **info)


def write_losses(out_dir: Path, history: dict[str, list[float]]) -> None:
    """losses.json and losses.png (one panel per curve)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    (out_dir / "losses.json").write_text(json.dumps(history), encoding="utf-8")
    curves = {k: v for k, v in history.items() if v}
    if not curves:
        return
    fig, axes = plt.subplots(1, len(curves), figsize=(4 * len(curves), 3), squeeze=False)
    for ax, (name, values) in zip(axes[0], curves.items(), strict=True):
        ax.plot(values)
        ax.set_title(name)
        ax.set_xlabel("step")
    fig.tight_layout()
    fig.savefig(out_dir / "losses.png", dpi=80)
    plt.close(fig)


def settings_dict(settings: TrainSettings) -> dict[str, Any]:
    return asdict(settings)


def shuffled(n: int, step: int, seed: int) -> int:
    """The example index of a stage-2 step: a fresh permutation per epoch, reproducible after a resume."""
    epoch, within = divmod(step, n)
    order = list(range(n))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    return order[within]


def elapsed_minutes(began: float) -> float:
    return (time.perf_counter() - began) / 60
