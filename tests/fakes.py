"""Test doubles shared by the suite: `ScriptedModel`, a ChatModel whose replies are scripted (orchestration only)."""

from __future__ import annotations

from collections.abc import Callable

from recursa.core.errors import ContextTooLongError
from recursa.models.base import Completion


def _echo(text: str) -> str:
    return "sub:" + text[:12]


class ScriptedModel:
    """Replies from a script; every call is recorded.

    `replies` are handed out in order to the conversations whose system message contains `script_when` (one per
    call, alone in its batch; past the end of the script they get `idle`); with `script_when=None` to every
    conversation while replies last. Every other conversation is answered `respond(last message)` (default
    "sub:<first 12 chars>").
    A last message containing `fail_on` raises ContextTooLongError, as a real backend does for an oversize prompt.
    """

    name = "scripted"

    def __init__(self, replies: list[str] | None = None, *, script_when: str | None = None,
                 respond: Callable[[str], str] = _echo, fail_on: str | None = None, context_window: int = 32768,
                 idle: str = "```repl\nprint('idle')\n```"):
        self.replies = list(replies or [])
        self.script_when, self.respond, self.fail_on, self.idle = script_when, respond, fail_on, idle
        self.context_window = context_window
        self.calls: list[int] = []                     # batch size of every generate() call
        self.samplings: list = []                      # the Sampling of every generate() call
        self.root_prompts: list[list[dict]] = []       # scripted conversations, in order
        self.sub_batches: list[list[str]] = []         # last messages of every other batch

    def count_tokens(self, text: str) -> int:
        return len(text) // 4 + 1

    def _scripted(self, conversation: list[dict]) -> bool:
        if self.script_when is None:
            return bool(self.replies)
        return self.script_when in conversation[0]["content"]

    def generate(self, batch, sampling):
        self.calls.append(len(batch))
        self.samplings.append(sampling)
        for conversation in batch:
            if self.fail_on and self.fail_on in conversation[-1]["content"]:
                raise ContextTooLongError("scripted: too long")
        if self._scripted(batch[0]):
            assert self.script_when is None or len(batch) == 1, "a scripted conversation comes alone"
            self.root_prompts += batch
            return [Completion(self.replies.pop(0) if self.replies else self.idle, "stop", 100, 10) for _ in batch]
        self.sub_batches.append([conv[-1]["content"] for conv in batch])
        return [Completion(self.respond(conv[-1]["content"]), "stop", self.count_tokens(conv[-1]["content"]), 5)
                for conv in batch]

    async def agenerate(self, batch, sampling):
        return self.generate(batch, sampling)
