"""`SequenceState`: a batch's working memory on a white-box model (KV cache, per-row mask and next positions).

Every latent method writes agents into one state; the backend (`hf`) reads and extends it. Rows never see each
other: left padding is masked (mask 0) and each row counts its own RoPE positions, so a row's numbers do not
depend on its batch.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import DynamicCache

from recursa.models.kv_cache import new_cache


@dataclass
class SequenceState:
    """A batch's working memory: KV cache, attention mask over every cached position, next RoPE position per row."""

    cache: DynamicCache
    mask: torch.Tensor       # [B, T] long: 1 = real position, 0 = padding
    next_pos: torch.Tensor   # [B] long: position id the next real token of each row gets

    @classmethod
    def empty(cls, config: object, batch_size: int, device: torch.device | str = "cpu") -> SequenceState:
        return cls(new_cache(config), torch.zeros(batch_size, 0, dtype=torch.long, device=device),
                   torch.zeros(batch_size, dtype=torch.long, device=device))

    @property
    def batch_size(self) -> int:
        return self.mask.shape[0]

    @property
    def length(self) -> int:
        """Cached positions per row (padding included)."""
        return self.mask.shape[1]

    @property
    def device(self) -> torch.device:
        return self.mask.device

    def real_positions(self) -> list[int]:
        """[B] real (unpadded) cached positions per row."""
        return self.mask.sum(1).tolist()

    def nbytes(self) -> int:
        return sum(layer.keys.numel() * layer.keys.element_size() + layer.values.numel() * layer.values.element_size()
                   for layer in self.cache.layers if getattr(layer, "keys", None) is not None)

    def keep_positions(self, index: torch.Tensor) -> None:
        """Keep only the cached positions in `index` (1-D, ascending); keys keep their original RoPE phases."""
        index = index.to(self.device)
        for layer in self.cache.layers:
            if getattr(layer, "keys", None) is not None:
                layer.keys = layer.keys.index_select(2, index)
                layer.values = layer.values.index_select(2, index)
        self.mask = self.mask.index_select(1, index)

    def copy(self) -> SequenceState:
        return SequenceState(copy.deepcopy(self.cache), self.mask.clone(), self.next_pos.clone())

    def select_rows(self, rows: torch.Tensor) -> None:
        rows = rows.to(self.device)
        self.cache.batch_select_indices(rows)
        self.mask = self.mask.index_select(0, rows)
        self.next_pos = self.next_pos.index_select(0, rows)

    def _layers(self) -> list:
        return [layer for layer in self.cache.layers if getattr(layer, "keys", None) is not None]

    def take_rows(self, rows: torch.Tensor) -> SequenceState:
        """A new state holding copies of `rows` (this one is unchanged)."""
        rows = rows.to(self.device)
        cache = copy.copy(self.cache)
        cache.layers = [copy.copy(layer) for layer in self.cache.layers]
        for layer in cache.layers:
            if getattr(layer, "keys", None) is not None:
                layer.keys, layer.values = layer.keys.index_select(0, rows), layer.values.index_select(0, rows)
        return SequenceState(cache, self.mask.index_select(0, rows), self.next_pos.index_select(0, rows))

    def append_rows(self, other: SequenceState, quantum: int = 16) -> None:
        """Add the rows of `other` after this state's rows; the shorter side is left-padded with masked positions.

        Padding added to this state's rows is a multiple of `quantum`, so the rows already here keep the alignment
        of their keys (the bf16 kernels round a row the same way only at the same alignment)."""
        grow = max(0, other.length - self.length)
        length = self.length + -(-grow // quantum) * quantum
        mine, theirs = self._layers(), other._layers()
        if len(mine) != len(theirs):
            raise ValueError("append_rows needs two states of the same model, both prefilled")
        for layer, extra in zip(mine, theirs, strict=True):
            layer.keys = torch.cat([_pad_positions(layer.keys, length), _pad_positions(extra.keys, length)])
            layer.values = torch.cat([_pad_positions(layer.values, length), _pad_positions(extra.values, length)])
        masks = [F.pad(state.mask, (length - state.length, 0)) for state in (self, other)]
        self.mask = torch.cat(masks)
        self.next_pos = torch.cat([self.next_pos, other.next_pos])

    def trim_left(self, quantum: int = 16) -> None:
        """Drop leading positions that are padding in every row, in whole multiples of `quantum` (alignment kept)."""
        real = self.mask.any(0)
        first = int(real.nonzero()[0]) if bool(real.any()) else self.length
        drop = first // quantum * quantum
        if drop:
            self.keep_positions(torch.arange(drop, self.length, device=self.device))


def _pad_positions(kv: torch.Tensor, length: int) -> torch.Tensor:
    """[B, heads, T, D] left-padded with zeros to `length` positions."""
    return F.pad(kv, (0, 0, length - kv.shape[2], 0))
