"""Reuse of the previous prompt's KV cache by a single-row request that extends it.

An RLM root model, a chat or an agent loop sends one conversation that grows turn by turn; without reuse every turn
prefills the whole transcript again (the RLM's ~900-token system prompt alone, each iteration). The cache keeps the
state of the last single-row prompt; a new prompt sharing at least `min_tokens` leading tokens gets a copy cropped
to that shared prefix and prefills only the rest.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from recursa.models.state import SequenceState


def shared_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


class PrefixCache:
    def __init__(self, min_tokens: int):
        self.min_tokens = min_tokens
        self._ids: list[int] = []
        self._state: SequenceState | None = None
        self._lock = threading.Lock()
        self.hits = 0
        self.reused_tokens = 0

    def take(self, ids: list[int]) -> tuple[SequenceState | None, int]:
        """(a private copy of the state cropped to the first n tokens of `ids`, n), or (None, 0) when too little
        is shared.

        At least the last token is left out, so the caller always prefills something and gets fresh logits."""
        with self._lock:
            if self._state is None or self.min_tokens <= 0:
                return None, 0
            common = min(shared_prefix(self._ids, ids), len(ids) - 1)
            if common < self.min_tokens:
                return None, 0
            state = self._state.copy()
            self.hits += 1
            self.reused_tokens += common
        real_seen = state.mask.cumsum(1)[0]
        state.keep_positions(torch.nonzero(real_seen <= common).flatten())
        state.next_pos = state.mask.sum(1)
        return state, common

    def store(self, ids: list[int], state: SequenceState) -> None:
        """Keep `state`: one row holding the prompt `ids` (and maybe tokens generated after it).

        Kept as it is, not copied: the caller is done with it, and cache updates replace tensors instead of writing
        into them, so `take` copies only on a hit."""
        if self.min_tokens <= 0 or state.batch_size != 1:
            return
        with self._lock:
            self._ids, self._state = list(ids), state

    def clear(self) -> None:
        with self._lock:
            self._ids, self._state = [], None
