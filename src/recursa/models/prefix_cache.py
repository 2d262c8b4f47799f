"""Reuse of the previous prompt's KV cache by a single-row request that extends it.

An RLM root model, a chat or an agent loop sends one conversation that grows turn by turn; without reuse every turn
prefills the whole transcript again (the RLM's ~900-token system prompt alone, each iteration). The cache keeps the
states of the last `capacity` single-row prompts (one per conversation); a new prompt sharing at least `min_tokens`
leading tokens with one gets a copy cropped to that shared prefix and prefills only the rest.
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
    """The states of the last `capacity` single-row prompts (least recently used goes first). A server with many
    agents gives each conversation an entry; the library's own loops (one conversation at a time) need one."""

    def __init__(self, min_tokens: int, capacity: int = 1):
        self.min_tokens = min_tokens
        self.capacity = capacity
        self._entries: list[tuple[list[int], SequenceState]] = []     # oldest first
        self._lock = threading.Lock()
        self.hits = 0
        self.reused_tokens = 0

    def _best(self, ids: list[int]) -> tuple[int, int]:
        """(index of the entry sharing the longest prefix with `ids`, that length), or (-1, 0)."""
        best, common = -1, 0
        for index, (kept, _) in enumerate(self._entries):
            shared = min(shared_prefix(kept, ids), len(ids) - 1)
            if shared > common:
                best, common = index, shared
        return (best, common) if common >= self.min_tokens > 0 else (-1, 0)

    def lookup(self, ids: list[int]) -> int:
        """How many leading tokens of `ids` a `take` would reuse (0: none); copies nothing."""
        with self._lock:
            return self._best(ids)[1]

    def take(self, ids: list[int]) -> tuple[SequenceState | None, int]:
        """(a private copy of the state cropped to the first n tokens of `ids`, n), or (None, 0) when too little
        is shared.

        At least the last token is left out, so the caller always prefills something and gets fresh logits."""
        with self._lock:
            index, common = self._best(ids)
            if index < 0:
                return None, 0
            entry = self._entries.pop(index)
            self._entries.append(entry)              # most recently used
            state = entry[1].copy()
            self.hits += 1
            self.reused_tokens += common
        real_seen = state.mask.cumsum(1)[0]
        state.keep_positions(torch.nonzero(real_seen <= common).flatten())
        state.next_pos = state.mask.sum(1)
        return state, common

    def store(self, ids: list[int], state: SequenceState) -> None:
        """Keep `state`: one row holding the prompt `ids` (and maybe tokens generated after it). An entry whose
        prompt `ids` extends replaces it (a conversation keeps one entry).

        Kept as it is, not copied: the caller is done with it, and cache updates replace tensors instead of writing
        into them, so `take` copies only on a hit."""
        if self.min_tokens <= 0 or state.batch_size != 1 or self.capacity < 1:
            return
        with self._lock:
            self._entries = [(kept, held) for kept, held in self._entries
                             if shared_prefix(kept, ids) < min(len(kept), len(ids))]
            self._entries.append((list(ids), state))
            del self._entries[:-self.capacity]

    def clear(self) -> None:
        with self._lock:
            self._entries = []
