"""One `Budget` shared by a run and everything it calls (child RLMs, actors, agents).

Methods `charge()` what they spend and `check()` between steps. When a limit trips, `BudgetExceeded` carries the
best partial answer the run recorded with `offer()`, so the caller can still return something useful.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from recursa.core.errors import BudgetExceeded, ConfigError


@dataclass
class Budget:
    max_tokens: int | None = None
    max_calls: int | None = None
    max_seconds: float | None = None
    max_depth: int | None = None
    max_iterations: int | None = None

    tokens: int = 0
    calls: int = 0
    iterations: int = 0
    depth: int = 0
    best_answer: str | None = None
    started: float = field(default_factory=time.monotonic)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _root: Budget | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        for name in ("max_tokens", "max_calls", "max_seconds", "max_depth", "max_iterations"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ConfigError(f"budget {name} must be >= 0, got {value}")

    @property
    def root(self) -> Budget:
        return self._root or self

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.root.started

    def child(self) -> Budget:
        """The same budget (shared counters) one recursion level deeper; raises if that is too deep."""
        root = self.root
        sub = Budget(root.max_tokens, root.max_calls, root.max_seconds, root.max_depth, root.max_iterations,
                     depth=self.depth + 1)
        sub._root = root
        if root.max_depth is not None and sub.depth > root.max_depth:
            raise BudgetExceeded("depth", sub.depth, root.max_depth, root.best_answer)
        return sub

    def charge(self, tokens: int = 0, calls: int = 0, iterations: int = 0) -> None:
        root = self.root
        with root._lock:
            root.tokens += tokens
            root.calls += calls
            root.iterations += iterations
        self.check()

    def offer(self, answer: str | None) -> None:
        """Record the best answer so far; it is what a tripped budget returns."""
        if answer:
            self.root.best_answer = answer

    def exceeded(self) -> tuple[str, float, float] | None:
        root = self.root
        for limit, used, maximum in (("tokens", root.tokens, root.max_tokens),
                                     ("model_calls", root.calls, root.max_calls),
                                     ("iterations", root.iterations, root.max_iterations),
                                     ("seconds", round(self.seconds, 2), root.max_seconds)):
            if maximum is not None and used > maximum:
                return limit, used, maximum
        return None

    def check(self) -> None:
        tripped = self.exceeded()
        if tripped:
            raise BudgetExceeded(*tripped, partial_answer=self.root.best_answer)

    def remaining_tokens(self) -> int | None:
        root = self.root
        return None if root.max_tokens is None else max(0, root.max_tokens - root.tokens)
