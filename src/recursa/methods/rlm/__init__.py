"""Recursive Language Models: the context lives in a sandboxed Python REPL and the model works on it with code."""

from __future__ import annotations

from typing import Any

from recursa.methods.base import register
from recursa.methods.rlm.loop import RecursiveLM
from recursa.methods.rlm.truncated import TruncatedSingle
from recursa.models.base import ChatModel

__all__ = ["RecursiveLM", "TruncatedSingle"]


@register("rlm")
def _make_rlm(model: ChatModel, **options: Any) -> RecursiveLM:
    return RecursiveLM(model, **options)


@register("single-truncated")
def _make_truncated(model: ChatModel, **options: Any) -> TruncatedSingle:
    return TruncatedSingle(model, **options)
