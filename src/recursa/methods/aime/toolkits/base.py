"""The vocabulary every toolkit shares: `Tool`, `Toolkit`, `ToolEnv`, `ToolFailure`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from recursa.core.budget import Budget


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
    code_wrote: list[str] = field(default_factory=list)   # files code wrote since last taken (computed, not typed)
    options: dict[str, Any] = field(default_factory=dict)

    def take_code_writes(self) -> list[str]:
        """The files code runs wrote since the last call (each reported once)."""
        taken, self.code_wrote = self.code_wrote, []
        return taken
