"""Recursa: multi-agent reasoning with language models (latent, code, plan and text channels).

    import recursa

    model = recursa.load()                                   # the embedded Qwen2.5-Coder-0.5B, on CPU
    answer = recursa.LatentMAS(model, latent_steps=4).run("What is 17*23?")
    answer.text, answer.extracted, answer.usage, answer.trace_path

    rlm = recursa.RLM(model, max_depth=1)                      # a huge context never enters the prompt
    rlm.run("How many entries mention a refund?", context=big_text)

    recursa.create("text-mas", model, pattern="hierarchical")  # any method by its registered name

Every method declares its options in a typed config (`recursa.LatentMAS.Config`); a misspelt option is an error.
Names are imported on first use, so `import recursa` stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name → module that defines it
_EXPORTS = {
    "load": "recursa.models.registry",
    "Task": "recursa.methods.base",
    "Answer": "recursa.methods.base",
    "AgentOutput": "recursa.methods.base",
    "create": "recursa.methods.base",
    "method_names": "recursa.methods.base",
    "MethodConfig": "recursa.methods.config",
    "Budget": "recursa.core.budget",
    "Sampling": "recursa.models.base",
    "RecursaError": "recursa.core.errors",
    "ConfigError": "recursa.core.errors",
    "BudgetExceeded": "recursa.core.errors",
    "Single": "recursa.methods.single",
    "TextMAS": "recursa.methods.text_mas",
    "LatentMAS": "recursa.methods.latent_mas",
    "RLM": "recursa.methods.rlm",
    "TruncatedSingle": "recursa.methods.rlm",
}

__all__ = ["AgentOutput", "Answer", "Budget", "BudgetExceeded", "ConfigError", "LatentMAS", "MethodConfig", "RLM",
           "RecursaError", "Sampling", "Single", "Task", "TextMAS", "TruncatedSingle", "create", "load",
           "method_names"]
assert sorted(__all__) == sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'recursa' has no attribute '{name}'")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:
    from recursa.core.budget import Budget
    from recursa.core.errors import BudgetExceeded, ConfigError, RecursaError
    from recursa.methods.base import AgentOutput, Answer, Task, create, method_names
    from recursa.methods.config import MethodConfig
    from recursa.methods.latent_mas import LatentMAS
    from recursa.methods.rlm import RLM, TruncatedSingle
    from recursa.methods.single import Single
    from recursa.methods.text_mas import TextMAS
    from recursa.models.base import Sampling
    from recursa.models.registry import load
