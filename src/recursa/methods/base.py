"""What every method shares: the task it is given, the answer it returns, and the registry of methods."""

from __future__ import annotations

import contextlib
import importlib
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

from recursa.core.budget import Budget
from recursa.core.errors import BudgetExceeded, ConfigError
from recursa.methods.config import MethodConfig
from recursa.methods.extract import extract_answer


@dataclass
class Task:
    """One problem. `context` is for methods that read large inputs (RLM): a str, list or dict."""

    id: str = ""                     # default: a fresh random id
    question: str = ""
    answer: str | None = None        # the gold answer, when known (benchmarks)
    meta: dict[str, Any] = field(default_factory=dict)
    context: Any = None

    def __post_init__(self) -> None:
        if not self.question or not str(self.question).strip():
            raise ConfigError("a task needs a non-empty question")
        self.id = self.id or uuid.uuid4().hex[:12]


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
    """A method's answer: the final text, what each agent did, and where the run's trace went."""

    text: str
    method: str
    agents: list[AgentOutput] = field(default_factory=list)
    seconds: float = 0.0
    stopped: str | None = None          # why the run ended early (a budget limit), if it did
    trace_id: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    trace_path: str | None = None       # the run's JSONL trace (set by `run`)

    @property
    def extracted(self) -> str | None:
        """The final answer in the text (last \\boxed{...}, "the answer is ...", or the last number)."""
        return extract_answer(self.text)

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
        data["extracted"] = self.extracted
        return data


class Method(Protocol):
    name: str

    def solve(self, task: Task) -> Answer: ...

    def solve_batch(self, tasks: list[Task]) -> list[Answer]: ...


class MethodBase:
    """What every method class shares: typed options, `solve` from `solve_batch`, and `run` for people.

    A subclass sets `name` and `Config` (a `MethodConfig`) and implements `solve_batch`. Options come either as a
    config object or as keywords, never both; keywords are validated against `Config` (a typo is an error).
    """

    name: ClassVar[str]
    Config: ClassVar[type[MethodConfig]]

    def __init__(self, model: Any, config: MethodConfig | None = None, *, budget: Budget | None = None,
                 **options: Any):
        if config is not None and options:
            raise ConfigError(f"{self.name}: pass options either as config= or as keywords, not both")
        if config is not None and not isinstance(config, self.Config):
            raise ConfigError(f"{self.name}: config must be a {self.Config.__name__}, got {type(config).__name__}")
        self.model = model
        self.config = config if config is not None else self.Config.build(self.name, options)
        self.budget = budget

    def solve(self, task: Task) -> Answer:
        return self.solve_batch([task])[0]

    def solve_batch(self, tasks: list[Task]) -> list[Answer]:
        raise NotImplementedError

    def run(self, question: str, context: Any = None, *, answer_format: str | None = None,
            runs_dir: str | Path | None = None) -> Answer:
        """Answer one plain question (with an optional large `context` for methods that read one).

        The run is traced to a JSONL file under `runs_dir` (default: `RECURSA_RUNS_DIR`); the returned `Answer` has
        the text, the extracted final answer, the usage and the trace path. A tripped budget returns the best
        partial answer with `stopped` set instead of raising.
        """
        from recursa.core.trace import Tracer, save_answer

        meta = {"answer_format": answer_format} if answer_format else {}
        task = Task(question=question, context=context, meta=meta)
        started = time.perf_counter()
        with Tracer.start(runs_dir=Path(runs_dir) if runs_dir else None) as tracer:
            try:
                answer = self.solve(task)
            except BudgetExceeded as exc:
                answer = Answer(text=exc.partial_answer or "", method=self.name, stopped=str(exc),
                                meta={"usage": tracer.totals.as_dict()})
        answer.seconds = answer.seconds or time.perf_counter() - started
        answer.trace_path = str(tracer.path)
        answer.trace_id = answer.trace_id or tracer.run_id
        # The texts beside the trace (question, answer, agents' replies), what `recursa view` shows; a read-only
        # runs folder loses the record, never the answer.
        with contextlib.suppress(OSError):
            save_answer(tracer.path, answer.to_dict(), question, str(getattr(self.model, "name", self.model)))
        return answer


_METHODS: dict[str, type[MethodBase]] = {}
BUILTIN_METHODS = ("single", "text_mas", "latent_mas", "rlm", "recursive_mas", "aime")


def register(cls: type[MethodBase]) -> type[MethodBase]:
    """Class decorator: make a method available to `create`, the CLI and `recursa bench` under `cls.name`."""
    _METHODS[cls.name] = cls
    return cls


def method_names() -> list[str]:
    _import_builtin_methods()
    return sorted(_METHODS)


def method_class(name: str) -> type[MethodBase]:
    """The class registered as `name`. A built-in method's own module is imported first, and every module only
    for a name it does not define, so reading one method's config (`--help`) does not load the others (or torch)."""
    module = name.replace("-", "_")
    if name not in _METHODS and module in BUILTIN_METHODS:
        importlib.import_module(f"recursa.methods.{module}")
    if name not in _METHODS:
        _import_builtin_methods()
    if name not in _METHODS:
        raise ConfigError(f"unknown method '{name}'; available: {', '.join(sorted(_METHODS))}")
    return _METHODS[name]


def config_class(name: str) -> type[MethodConfig]:
    return method_class(name).Config


def declared(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """The subset of `options` that method `name` declares (settings shared by several methods, e.g. a bench's
    --max-tokens, apply where they mean something)."""
    fields = config_class(name).model_fields
    return {key: value for key, value in options.items() if key in fields}


def option_doc(name: str, option: str) -> str:
    """The docstring of one declared option (for --help texts)."""
    return config_class(name).model_fields[option].description or ""


def create(name: str, model: Any, *, budget: Budget | None = None, **options: Any) -> MethodBase:
    """A method by its registered name, e.g. `create("latent-mas", model, latent_steps=8)`."""
    return method_class(name)(model, budget=budget, **options)


def _import_builtin_methods() -> None:
    for module in BUILTIN_METHODS:
        importlib.import_module(f"recursa.methods.{module}")
