"""A RecursiveMAS system: agents (each a model and a role), a pattern, and the links between them.

A system file (YAML) names everything; `recursa/systems/default.yaml` is used when none is given:

    name: default
    pattern: sequential            # sequential: A1 → A2 → … → AN, AN's latents back to A1 next round
    rounds: 2                      # mixture: experts side by side → summarizer, summarizer back to every expert
    latent_steps: 16
    agents:
      - {name: planner, model: smollm2-135m, role: planner}
      - {name: solver, model: qwen2.5-coder-0.5b, role: solver}
    links: default-links           # folder (relative to the file): inner-<agent>.safetensors, outer-<a>-<b>.safetensors

Edges: `same` edges deliver within a round, `next` edges (the feedback) deliver in the following round.
Prompts: `recursa/systems/roles.yaml`; a role's `{inputs}` holds one entry per incoming message (a latent slot or
the sender's text).
"""

from __future__ import annotations

import re
import weakref
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from recursa.core.errors import ConfigError
from recursa.latent.links import InnerLink, OuterLink, load_link
from recursa.methods.prompts import answer_format_text, fill

SLOT = "<<RECURSA_LATENT_SLOT>>"
_SLOT_SPLIT = re.compile(re.escape(SLOT))


class AgentSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    model: str
    role: str


class SystemSpec(BaseModel):
    """A parsed, validated system file."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = "system"
    pattern: Literal["sequential", "mixture"] = "sequential"
    rounds: int = Field(2, ge=1)
    latent_steps: int = Field(16, ge=1)
    agents: list[AgentSpec]
    links: str | None = None
    folder: str = "."           # where the file lives (links resolve against it); set by `load_system`

    @model_validator(mode="after")
    def _check(self) -> SystemSpec:
        if not 2 <= len(self.agents) <= 4:
            raise ValueError(f"a system has 2 to 4 agents, got {len(self.agents)}")
        names = [a.name for a in self.agents]
        if len(set(names)) != len(names):
            raise ValueError(f"agent names must be unique, got {names}")
        roles = roles_book()["roles"]
        for agent in self.agents:
            if agent.role not in roles:
                raise ValueError(f"agent {agent.name}: unknown role '{agent.role}'; roles: {', '.join(roles)}")
        if not roles[self.agents[-1].role].get("final"):
            raise ValueError(f"the last agent ({self.agents[-1].name}) answers, so its role must be a final role "
                             f"({', '.join(r for r, v in roles.items() if v.get('final'))})")
        return self

    @property
    def final(self) -> AgentSpec:
        return self.agents[-1]

    def edges(self) -> list[tuple[str, str, Literal["same", "next"]]]:
        """(source, target, when) for every outer link."""
        names = [a.name for a in self.agents]
        if self.pattern == "sequential":
            return [(a, b, "same") for a, b in zip(names, names[1:], strict=False)] + [(names[-1], names[0], "next")]
        experts, summarizer = names[:-1], names[-1]
        return [(e, summarizer, "same") for e in experts] + [(summarizer, e, "next") for e in experts]

    def stages(self) -> list[list[str]]:
        """Agents grouped by when they act within a round (mixture experts act side by side)."""
        names = [a.name for a in self.agents]
        if self.pattern == "sequential":
            return [[n] for n in names]
        return [names[:-1], [names[-1]]]

    def label(self, name: str, feedback: bool = False) -> str:
        """How receivers see agent `name`: its role's label, plus its name where several agents share the role."""
        role = self.agent(name).role
        shared = sum(a.role == role for a in self.agents) > 1
        return role_label(role, feedback) + (f" ({name})" if shared else "")

    def agent(self, name: str) -> AgentSpec:
        return next(a for a in self.agents if a.name == name)

    def links_dir(self) -> Path | None:
        return None if self.links is None else (Path(self.folder) / self.links)


def default_system_path() -> Path:
    return Path(str(resources.files("recursa.systems").joinpath("default.yaml")))


def load_system(path: Path | str | None = None, **overrides: Any) -> SystemSpec:
    """Parse and validate a system file (default: the packaged one); unknown models are one ConfigError."""
    from recursa.models.registry import EMBEDDED, canonical_name

    path = Path(path) if path is not None else default_system_path()
    if not path.is_file():
        raise ConfigError(f"system file {path} not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"system file {path}: invalid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"system file {path} must hold a mapping")
    data.update({k: v for k, v in overrides.items() if v is not None})
    data["folder"] = str(path.parent)
    try:
        spec = SystemSpec(**data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'system'}: "
                             f"{e['msg'].removeprefix('Value error, ')}" for e in exc.errors())
        raise ConfigError(f"system file {path}: {problems}") from None
    for agent in spec.agents:
        name = canonical_name(agent.model)
        if name not in EMBEDDED and not Path(name).expanduser().is_dir():
            raise ConfigError(f"system file {path}: agent {agent.name} names unknown model '{agent.model}'; "
                              f"known: {', '.join(EMBEDDED)} (or a local model folder)")
    return spec


@cache
def roles_book() -> dict[str, Any]:
    text = resources.files("recursa.systems").joinpath("roles.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


@dataclass(frozen=True)
class Message:
    """An incoming message for one agent: from whom, and either text or a latent slot (text None)."""

    sender: str
    label: str
    text: str | None = None


def inputs_block(messages: list[Message]) -> str:
    """The `{inputs}` text: one entry per message (latent messages leave a SLOT marker)."""
    if not messages:
        return ""
    book = roles_book()["inputs"]
    entries = [fill(book["entry"], label=m.label).replace("{message}", SLOT if m.text is None else m.text.strip())
               for m in messages]
    return book["header"].strip() + "\n" + "\n".join(entries) + "\n\n"


def role_label(role: str, feedback: bool = False) -> str:
    book = roles_book()
    label = book["roles"][role].get("label", role)
    return fill(book["inputs"]["feedback_label"], label=label) if feedback else label


def role_messages(role: str, question: str, answer_format: str, messages: list[Message]) -> list[dict[str, str]]:
    """The chat conversation of one agent; latent messages appear as SLOT markers in the user turn."""
    book = roles_book()
    spec = book["roles"][role]
    user = fill(spec["instruction"], question=question.strip(), answer_format=answer_format_text(answer_format))
    user = user.replace("{inputs}", inputs_block(messages)).strip()
    return [{"role": "system", "content": spec.get("system", book.get("system", "You are a helpful assistant."))},
            {"role": "user", "content": user}]


def split_at_slots(model: Any, conversation: list[dict[str, str]]) -> list[list[int]]:
    """The chat-rendered prompt as token-id pieces around the SLOT markers (k markers → k + 1 pieces)."""
    text = model.chat_text(conversation)
    return [model.tokenizer.encode(piece, add_special_tokens=False) for piece in _SLOT_SPLIT.split(text)]


# ---- models and links of a system -------------------------------------------------------------------------------
_loaded: weakref.WeakValueDictionary[tuple[str, str], Any] = weakref.WeakValueDictionary()


def load_models(spec: SystemSpec, given: Any = None, device: str | None = None) -> dict[str, Any]:
    """agent name → model. Each model is loaded once per process (agents that share a model share the object);
    `given` (the CLI's model) is reused when its name matches."""
    from recursa.models.registry import canonical_name, load

    device = device or (str(given.device) if given is not None and hasattr(given, "device") else None)
    models: dict[str, Any] = {}
    for agent in spec.agents:
        name = canonical_name(agent.model)
        if given is not None and canonical_name(str(getattr(given, "name", ""))) == name:
            models[agent.name] = given
            continue
        key = (name, str(device))
        model = _loaded.get(key)
        if model is None:
            model = load(name, device=device)
            _loaded[key] = model
        models[agent.name] = model
    return models


def link_path(spec: SystemSpec, source: str, target: str | None = None) -> Path:
    folder = spec.links_dir()
    if folder is None:
        raise ConfigError(f"system {spec.name} names no links folder ('links:'); train links with "
                          f"`recursa train-links SYSTEM.yaml`")
    return folder / (f"inner-{source}.safetensors" if target is None else f"outer-{source}-{target}.safetensors")


Links = tuple[dict[str, InnerLink], dict[tuple[str, str], OuterLink]]


def load_links(spec: SystemSpec, models: dict[str, Any]) -> Links:
    """The system's trained links, each checked against its models (ConfigError on any mismatch)."""
    inner = {a.name: load_link(link_path(spec, a.name), models[a.name], models[a.name]) for a in spec.agents}
    outer = {(s, t): load_link(link_path(spec, s, t), models[s], models[t]) for s, t, _ in spec.edges()}
    for key, link in [*inner.items(), *outer.items()]:
        if not isinstance(link, OuterLink if isinstance(key, tuple) else InnerLink):
            raise ConfigError(f"link {key}: the checkpoint holds the wrong kind of link")
    return inner, outer


def fresh_links(spec: SystemSpec, models: dict[str, Any], seed: int = 0) -> Links:
    """Untrained links (PyTorch default initialisation, seeded)."""
    torch.manual_seed(seed)
    inner = {a.name: InnerLink(models[a.name].hidden_size) for a in spec.agents}
    outer = {(s, t): OuterLink(models[s].hidden_size, models[t].hidden_size) for s, t, _ in spec.edges()}
    return inner, outer
