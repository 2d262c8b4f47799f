"""`recursa train-links`: train a RecursiveMAS system's links (stage 1 inner, stage 2 outer; `latent/train.py`).

    examples = examples_from(trajectories, spec)        # correct text-mas trajectories → role targets
    summary = train_system(spec, models, examples, out_dir, TrainSettings(outer_steps=80))

The system is unrolled for R teacher-forced rounds here (it renders the role prompts with their slots, as
`recursive-mas` does at inference). Base models are frozen; only the links train.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from recursa.core.errors import ConfigError
from recursa.latent.links import InnerLink, OuterLink, token_hidden_states
from recursa.latent.train import (
    Example,
    TrainSettings,
    elapsed_minutes,
    inner_pairs,
    lr_at,
    ridge_init,
    save_checkpoint,
    save_links,
    settings_dict,
    shuffled,
    train_inner,
    write_losses,
)
from recursa.methods.recursive_system import Message, SystemSpec, fresh_links, role_messages, split_at_slots

ROLE_TARGETS = {"planner": "plan", "critic": "refined_plan", "expert": "plan", "solver": "answer",
                "summarizer": "answer"}
Progress = Callable[[str, int, float], None]     # (phase, step, loss)


class SystemUnroll:
    """The system unrolled for R teacher-forced rounds on one example, with gradient to the outer links."""

    def __init__(self, spec: Any, models: dict[str, Any], inner: dict[str, InnerLink],
                 outer: dict[tuple[str, str], OuterLink], settings: TrainSettings):
        self.spec, self.models, self.inner, self.outer, self.settings = spec, models, inner, outer, settings

    def _embeds(self, name: str, example: Example, inbox: list[tuple[Any, torch.Tensor]],
                target: list[int]) -> tuple[torch.Tensor, int]:
        model = self.models[name]
        conv = role_messages(self.spec.agent(name).role, example.question, example.answer_format,
                             [m for m, _ in inbox])
        pieces = split_at_slots(model, conv)
        parts = []
        for k, piece in enumerate(pieces):
            parts.append(model.embed(torch.tensor(piece, device=model.device)).detach())
            if k < len(inbox):
                parts.append(inbox[k][1].to(model.dtype))
        prompt_length = sum(int(p.shape[0]) for p in parts)
        parts.append(model.embed(torch.tensor(target, device=model.device)).detach())
        return torch.cat(parts), prompt_length

    def _target(self, name: str, example: Example, final: bool) -> list[int]:
        text = example.targets[ROLE_TARGETS[self.spec.agent(name).role]]
        ids = self.models[name].tokenizer.encode(text, add_special_tokens=False)
        return ids[:self.settings.max_answer_tokens] if final else ids[:self.settings.latent_tokens]

    def loss(self, example: Example) -> torch.Tensor:
        """Cross-entropy of the final agent's answer in round R (mean over its tokens)."""
        spec = self.spec
        inbox: dict[str, list[tuple[Any, torch.Tensor]]] = {a.name: [] for a in spec.agents}
        for round_ in range(1, spec.rounds + 1):
            feedback: dict[str, list[tuple[Any, torch.Tensor]]] = {a.name: [] for a in spec.agents}
            for stage in spec.stages():
                for name in stage:
                    final = round_ == spec.rounds and name == spec.final.name
                    target = self._target(name, example, final)
                    embeds, start = self._embeds(name, example, inbox[name], target)
                    hidden = token_hidden_states(self.models[name], embeds=embeds)            # [L, H]
                    states = hidden[start - 1:start - 1 + len(target)]                      # predict target
                    if final:
                        logits = self.models[name].module.lm_head(states).float()
                        return nn.functional.cross_entropy(logits, torch.tensor(target, device=logits.device))
                    thoughts = self.inner[name](states.float())                             # [m, a]
                    for source, dest, when in spec.edges():
                        if source == name:
                            message = Message(name, spec.label(name, feedback=when == "next"))
                            (inbox if when == "same" else feedback)[dest].append(
                                (message, self.outer[(source, dest)](thoughts)))
            inbox = feedback
        raise AssertionError("unreachable")


def examples_from(trajectories: list[dict[str, Any]], spec: SystemSpec) -> list[Example]:
    """Role targets for each agent of `spec` from text-mas trajectories (plan, refined_plan, answer)."""
    needed = {ROLE_TARGETS[a.role] for a in spec.agents}
    examples = [Example(t["question"], t.get("answer_format", "math"), {k: t[k] for k in needed})
                for t in trajectories if all(str(t.get(k) or "").strip() for k in needed)]
    if not examples:
        raise ConfigError(f"no usable trajectories: each needs non-empty {', '.join(sorted(needed))}")
    return examples


def mean_loss(unroll: SystemUnroll, examples: list[Example]) -> float:
    with torch.no_grad():
        return sum(float(unroll.loss(e)) for e in examples) / len(examples)


def trainable(inner: dict[str, InnerLink], outer: dict[tuple[str, str], OuterLink]) -> dict[str, int]:
    count = lambda links: sum(p.numel() for link in links for p in link.parameters())  # noqa: E731
    return {"inner": count(inner.values()), "outer": count(outer.values())}


class LinkTrainer:
    """Both stages for one system, resumable from `out_dir/checkpoint.pt`."""

    def __init__(self, spec: SystemSpec, models: dict[str, Any], examples: list[Example], out_dir: Path,
                 settings: TrainSettings, progress: Progress | None = None):
        self.spec, self.models, self.examples, self.settings = spec, models, examples, settings
        self.out_dir, self.path = out_dir, out_dir / "checkpoint.pt"
        self.progress = progress or (lambda phase, step, loss: None)
        out_dir.mkdir(parents=True, exist_ok=True)
        for model in models.values():
            model.module.requires_grad_(False)
        self.inner, self.outer = fresh_links(spec, models, settings.seed)
        payload = torch.load(self.path, weights_only=False) if self.path.is_file() else {}
        self.history: dict[str, list[float]] = payload.get("history", {"outer": []})
        self.done: set[str] = set(payload.get("inner_done", []))
        self.step, self.minutes = int(payload.get("step", 0)), float(payload.get("minutes", 0.0))
        self.initialised = bool(payload.get("initialised"))
        self.optimizer_state = payload.get("optimizer")
        for name, state in payload.get("inner", {}).items():
            self.inner[name].load_state_dict(state)
        for key, state in payload.get("outer", {}).items():
            source, target = key.split("->")
            self.outer[(source, target)].load_state_dict(state)
        self.unroll = SystemUnroll(spec, models, self.inner, self.outer, settings)
        self.began = time.perf_counter()

    def minutes_used(self) -> float:
        return self.minutes + elapsed_minutes(self.began)

    def snapshot(self, optimizer: Any = None) -> None:
        save_checkpoint(self.path, {
            "inner": {k: v.state_dict() for k, v in self.inner.items()},
            "outer": {f"{s}->{t}": v.state_dict() for (s, t), v in self.outer.items()},
            "inner_done": sorted(self.done), "history": self.history, "step": self.step,
            "minutes": self.minutes_used(), "initialised": self.initialised,
            "optimizer": optimizer.state_dict() if optimizer is not None else self.optimizer_state,
            "settings": settings_dict(self.settings)})

    def stage1(self) -> None:
        for agent in self.spec.agents:
            if agent.name in self.done:
                continue
            model, key = self.models[agent.name], ROLE_TARGETS[agent.role]
            prompts = [model.chat_ids(role_messages(agent.role, e.question, e.answer_format, []))
                       for e in self.examples]
            targets = [model.tokenizer.encode(e.targets[key], add_special_tokens=False)[
                :self.settings.max_answer_tokens] for e in self.examples]
            x, y = inner_pairs(model, prompts, targets)
            self.history[f"inner:{agent.name}"] = train_inner(
                self.inner[agent.name], x, y, self.settings.inner_epochs, self.settings.inner_lr, self.settings.seed,
                on_step=lambda loss, name=agent.name: self.progress(f"inner:{name}", 0, loss))
            self.done.add(agent.name)
            self.snapshot()
        for link in self.inner.values():
            link.requires_grad_(False)
        if not self.initialised:
            if self.settings.init == "ridge":
                ridge_init(self.spec, self.models, self.inner, self.outer,
                           [text for e in self.examples for text in e.targets.values()])
            self.initialised = True
            self.snapshot()

    def stage2(self) -> None:
        params = [p for link in self.outer.values() for p in link.parameters()]
        optimizer = torch.optim.AdamW(params, lr=self.settings.outer_lr, betas=(0.9, 0.95), weight_decay=0.0)
        if self.optimizer_state:
            optimizer.load_state_dict(self.optimizer_state)
        for link in self.outer.values():
            link.train()
        history = self.history.setdefault("outer", [])
        while self.step < self.settings.outer_steps and self.minutes_used() < self.settings.max_minutes:
            for group in optimizer.param_groups:
                group["lr"] = lr_at(self.step, self.settings)
            example = self.examples[shuffled(len(self.examples), self.step, self.settings.seed)]
            loss = self.unroll.loss(example)
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            self.step += 1
            history.append(loss.item())
            self.progress("outer", self.step, history[-1])
            if self.step % self.settings.checkpoint_every == 0:
                self.snapshot(optimizer)
                write_losses(self.out_dir, self.history)
        for link in self.outer.values():
            link.eval()
        self.snapshot(optimizer)

    def finish(self, dtype: torch.dtype = torch.float32) -> dict[str, Any]:
        """Write the link checkpoints and the loss curves; return a summary."""
        write_losses(self.out_dir, self.history)
        info = {"system": self.spec.name, "rounds": self.spec.rounds, "steps": self.step,
                "examples": len(self.examples), "init": self.settings.init, "minutes": round(self.minutes_used(), 2)}
        save_links(self.out_dir, self.spec, self.models, self.inner, self.outer, dtype, info)
        return {**info, "trainable_parameters": trainable(self.inner, self.outer)}


def train_system(spec: SystemSpec, models: dict[str, Any], examples: list[Example], out_dir: Path,
                 settings: TrainSettings, *, dtype: torch.dtype = torch.float32,
                 progress: Progress | None = None) -> dict[str, Any]:
    """Stage 1, ridge start, stage 2, link checkpoints: resumes from `out_dir/checkpoint.pt` after any kill."""
    trainer = LinkTrainer(spec, models, examples, out_dir, settings, progress)
    trainer.stage1()
    trainer.stage2()
    return trainer.finish(dtype)
