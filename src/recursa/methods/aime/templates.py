"""Aime's prompt templates (prompts.yaml) and their filling, shared by the planner, the actor factory and the check."""

from __future__ import annotations

import re
from functools import lru_cache
from importlib import resources

import yaml

_PLACEHOLDER = re.compile(r"\{(\w+)\}")


@lru_cache(maxsize=1)
def prompts() -> dict[str, str]:
    return yaml.safe_load(resources.files("recursa.methods.aime").joinpath("prompts.yaml").read_text())


def fill(name: str, **values: str) -> str:
    """Prompt `name` with its {placeholders} replaced in one pass: a value is never scanned again (an actor's code
    such as `print(f'{result}')` stays as written), and other braces, as in JSON examples, stay as they are."""
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), prompts()[name])
