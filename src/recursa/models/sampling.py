"""Choosing next tokens and tracking one generated row: shared by `HFModel`'s decode loop and `recursa serve`.

A row ends at an end-of-sequence token (unless `ignore_eos`), at a stop string (its text is cut before it), or at
`max_tokens`. `StreamText` turns a growing row into text deltas that never have to be taken back: it holds back an
unfinished UTF-8 character and any tail that could still become a stop string.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Protocol

import torch

if TYPE_CHECKING:
    from recursa.models.base import Sampling


class Detokenizer(Protocol):
    eos_set: frozenset[int]

    def detokenize(self, ids: list[int]) -> str: ...


def choose_tokens(logits: torch.Tensor, sampling: Sampling, generator: torch.Generator | None) -> torch.Tensor:
    """Next token per row [B] from logits [B, V]: argmax when greedy, else temperature + nucleus sampling."""
    if sampling.greedy:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / sampling.temperature, dim=-1)
    if sampling.top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        drop = sorted_probs.cumsum(-1) - sorted_probs > sampling.top_p
        sorted_probs[drop] = 0.0
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def sampling_generator(sampling: Sampling, device: torch.device | str) -> torch.Generator | None:
    """A generator seeded by `sampling.seed` (else by the clock); None for greedy decoding."""
    if sampling.greedy:
        return None
    seed = sampling.seed if sampling.seed is not None else int(time.time_ns() % 2**31)
    return torch.Generator(device=device).manual_seed(seed)


class RowProgress:
    """One row's generated tokens and why it stopped."""

    def __init__(self) -> None:
        self.tokens: list[int] = []
        self.finish: str | None = None
        self.cut_text: str | None = None      # the text up to a stop string, when one ended the row

    def take(self, token: int, model: Detokenizer, sampling: Sampling, last: bool) -> bool:
        """Add one sampled token; True while the row goes on."""
        if token in model.eos_set and not sampling.ignore_eos:
            self.finish = "stop"
            return False
        self.tokens.append(token)
        if sampling.stop:
            text = model.detokenize(self.tokens)
            cut = min((text.find(s) for s in sampling.stop if s in text), default=-1)
            if cut >= 0:
                self.finish, self.cut_text = "stop", text[:cut]
                return False
        if last:
            self.finish = "length"
            return False
        return True

    def text(self, model: Detokenizer) -> str:
        return self.cut_text if self.cut_text is not None else model.detokenize(self.tokens)


class StreamText:
    """The part of a row's text that is safe to send so far, as deltas whose concatenation is the final text."""

    def __init__(self, stop: tuple[str, ...]) -> None:
        self.stop = stop
        self.sent = ""

    def delta(self, text: str, finished: bool) -> str:
        """New text to send, given the row's whole text now (`finished`: nothing more will come)."""
        safe = text if finished else text[:len(text) - self._held_back(text)]
        if not safe.startswith(self.sent):     # a detokenizer that rewrote earlier text: send nothing more
            return ""
        delta, self.sent = safe[len(self.sent):], safe
        return delta

    def _held_back(self, text: str) -> int:
        """Characters at the end of `text` that may still change: an unfinished character (U+FFFD while its bytes
        arrive) or the beginning of a stop string."""
        held = len(text) - len(text.rstrip("\ufffd"))
        for stop in self.stop:
            for size in range(min(len(stop) - 1, len(text)), 0, -1):
                if text.endswith(stop[:size]):
                    held = max(held, size)
                    break
        return held
