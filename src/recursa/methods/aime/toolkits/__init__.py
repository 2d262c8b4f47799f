"""Toolkits: bundles of tools an actor gets as a whole (paper §4), chosen per subtask by the planner.

A `Tool` declares its arguments as a pydantic model (so the actor's reply schema is built from them) and a
function from those arguments to an observation; a failure is a `ToolFailure`, shown to the actor as an error.
"""

from __future__ import annotations

from typing import Any

from recursa.methods.aime.toolkits.base import Tool, ToolEnv, ToolFailure, Toolkit

__all__ = ["TOOLKITS", "Tool", "ToolEnv", "ToolFailure", "Toolkit", "available", "build"]

TOOLKITS = ("python", "workspace", "knowledge", "long-context", "latent-team")


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
