"""Toolkits: bundles of tools an actor gets as a whole (paper §4), chosen per subtask by the planner.

A `Tool` declares its arguments as a pydantic model (so the actor's reply schema is built from them) and a
function from those arguments to an observation; a failure is a `ToolFailure`, shown to the actor as an error.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from recursa.core.budget import Budget

TOOLKITS = ("python", "workspace", "knowledge", "long-context", "latent-team")


class ToolFailure(Exception):
    """What went wrong with a tool call, in words the actor can act on."""


@dataclass
class Tool:
    name: str
    description: str
    args: type[BaseModel]
    run: Callable[[BaseModel], str]
    writes: bool = False            # its success counts as progress even if the observation repeats


@dataclass
class Toolkit:
    name: str
    description: str
    tools: list[Tool]
    close: Callable[[], None] = lambda: None


@dataclass
class ToolEnv:
    """What toolkits are built from: the run's workspace, knowledge folder, model and shared budget."""

    workspace: Path
    model: Any
    budget: Budget
    knowledge: Any = None               # a `KnowledgeBase` or None
    written: list[str] = field(default_factory=list)   # workspace paths written by this actor (its pointers)
    options: dict[str, Any] = field(default_factory=dict)


def available(model: Any, knowledge: Any) -> list[str]:
    """The toolkits this run can offer: knowledge needs --knowledge, latent-team a white-box model."""
    from recursa.models.base import missing_latent_methods

    names = ["python", "workspace", "long-context"]
    if knowledge is not None:
        names.append("knowledge")
    if not missing_latent_methods(model):
        names.append("latent-team")
    return names


def build(names: list[str], env: ToolEnv) -> list[Toolkit]:
    from recursa.methods.aime.toolkits import knowledge, latent_team, long_context, python, workspace

    builders = {"python": python.toolkit, "workspace": workspace.toolkit, "knowledge": knowledge.toolkit,
                "long-context": long_context.toolkit, "latent-team": latent_team.toolkit}
    return [builders[name](env) for name in names if name in builders]
