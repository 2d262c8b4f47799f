"""What one RLM solve() carries (`RunState`), and `Repl`: the public handle on a REPL opened by `open_repl`."""

from __future__ import annotations

from dataclasses import dataclass, field

from recursa.core.budget import Budget
from recursa.core.sandbox import BlockResult, PythonWorker
from recursa.methods.base import Answer, Task
from recursa.models.base import Completion, Conversation


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    calls: int = 0

    def add(self, completions: list[Completion]) -> None:
        self.prompt_tokens += sum(c.prompt_tokens for c in completions)
        self.completion_tokens += sum(c.completion_tokens for c in completions)
        self.calls += len(completions)


@dataclass
class RunState:
    """The state of one solve()."""

    task: Task
    budget: Budget
    messages: Conversation = field(default_factory=list)
    final: str | None = None
    final_source: str | None = None
    code_ran: bool = False
    seen: str = ""                  # every REPL output so far: typed numbers and ids must come from here
    iterations: int = 0
    blocks: int = 0
    errors: int = 0
    sub_calls: int = 0
    root: Usage = field(default_factory=Usage)
    sub: Usage = field(default_factory=Usage)
    children: list[Answer] = field(default_factory=list)


class Repl:
    """A sandboxed REPL holding `context` with the RLM's helpers and model callbacks (from `RecursiveLM.open_repl`)."""

    def __init__(self, worker: PythonWorker, run: RunState):
        self._worker, self._run = worker, run

    def execute(self, code: str) -> BlockResult:
        """Run `code` in the REPL (variables persist between calls)."""
        return self._worker.execute(code)

    @property
    def sub_calls(self) -> int:
        """Sub-model prompts answered so far (`llm_query`, `llm_query_batched`, `rlm_query`)."""
        return self._run.sub.calls

    @property
    def final(self) -> str | None:
        """The answer passed to FINAL(...), if the code called it."""
        return self._run.final
