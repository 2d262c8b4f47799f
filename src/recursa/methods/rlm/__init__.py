"""Recursive Language Models: the context lives in a sandboxed Python REPL and the model works on it with code."""

from __future__ import annotations

from recursa.methods.rlm.loop import RecursiveLM, RLMConfig
from recursa.methods.rlm.truncated import TruncatedConfig, TruncatedSingle

RLM = RecursiveLM

__all__ = ["RLM", "RLMConfig", "RecursiveLM", "TruncatedConfig", "TruncatedSingle"]
