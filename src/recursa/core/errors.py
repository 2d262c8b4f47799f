"""One exception hierarchy. Every message says what was wrong and what to do about it."""

from __future__ import annotations

from typing import Any


class RecursaError(Exception):
    """Base class of every error Recursa raises on purpose."""


class ConfigError(RecursaError):
    """A setting, flag or input file is invalid."""


class ModelNotFoundError(RecursaError):
    """A model name is neither registered, a local folder, nor a hub id."""


class ModelNotInstalledError(RecursaError):
    """A registered model's weight packages are missing or broken."""


class ChecksumError(ModelNotInstalledError):
    """Assembled weights do not match the expected sha256."""


class BackendError(RecursaError):
    """A model backend failed (HTTP error after retries, bad response, ...)."""


class BackendUnreachable(BackendError):
    """No answer at all from a model server after retries (down, wrong address, or silent past the timeout): the
    server's failure, not the method's."""


class ContextTooLongError(RecursaError):
    """A prompt plus the requested completion does not fit the model's context window."""


class TaskError(RecursaError):
    """A benchmark task name, file or record is invalid."""


class SandboxError(RecursaError):
    """Sandboxed code could not be run (not: the code itself raised)."""


class BudgetExceeded(RecursaError):
    """A run hit one of its limits. Carries the best answer found so far."""

    def __init__(self, limit: str, used: Any, maximum: Any, partial_answer: str | None = None):
        self.limit = limit
        self.used = used
        self.maximum = maximum
        self.partial_answer = partial_answer
        super().__init__(f"budget exceeded: {limit} used {used} of {maximum}")
