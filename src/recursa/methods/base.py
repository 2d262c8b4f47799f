"""What every method shares: the task it is given, the answer it returns, and the registry of methods."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from recursa.core.errors import ConfigError


@dataclass
class Task:
    """One problem. `context` is for methods that read large inputs (RLM): a str, list or dict."""

    id: str
    question: str
    answer: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    context: Any = None


@dataclass
class AgentOutput:
    """What one agent (role) did for one task: its text (if it decoded any) and what it cost."""

    role: str
    text: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latent_steps: int = 0
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Answer:
    text: str
    method: str
    agents: list[AgentOutput] = field(default_factory=list)
    seconds: float = 0.0
    stopped: str | None = None          # why the run ended early (a budget limit), if it did
    trace_id: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def usage(self) -> dict[str, int]:
        return {
            "prompt_tokens": sum(a.prompt_tokens for a in self.agents),
            "completion_tokens": sum(a.completion_tokens for a in self.agents),
            "latent_steps": sum(a.latent_steps for a in self.agents),
            "model_calls": sum(int(a.extra.get("model_calls", 1)) for a in self.agents),
        }

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["usage"] = self.usage
        return data


class Method(Protocol):
    name: str

    def solve(self, task: Task) -> Answer: ...

    def solve_batch(self, tasks: list[Task]) -> list[Answer]: ...


MethodFactory = Callable[..., Method]
_METHODS: dict[str, MethodFactory] = {}


def register(name: str) -> Callable[[MethodFactory], MethodFactory]:
    """Register a method factory `factory(model, **options) -> Method` under `name`."""

    def wrap(factory: MethodFactory) -> MethodFactory:
        _METHODS[name] = factory
        return factory

    return wrap


def method_names() -> list[str]:
    _import_builtin_methods()
    return sorted(_METHODS)


def create(name: str, model: Any, **options: Any) -> Method:
    _import_builtin_methods()
    if name not in _METHODS:
        raise ConfigError(f"unknown method '{name}'; available: {', '.join(sorted(_METHODS))}")
    return _METHODS[name](model, **options)


def _import_builtin_methods() -> None:
    import importlib

    for module in ("single", "text_mas", "latent_mas", "rlm"):
        try:
            importlib.import_module(f"recursa.methods.{module}")
        except ModuleNotFoundError as exc:
            if exc.name != f"recursa.methods.{module}":
                raise
