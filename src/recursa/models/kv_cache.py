"""A KV cache whose layers grow into preallocated room instead of being copied at every step.

transformers' `DynamicLayer` appends with `torch.cat`, which copies a layer's whole cache for each new token: a
decode step over 12 agent conversations of ~3,000 positions copied ~1 GB on the 1.5B, 11% of a server's time
(bench/results/attention.md). Here each layer keeps a buffer with spare positions; `keys` and `values` are views
of its filled part, so an append writes only the new positions, and a full buffer is reallocated with headroom
(amortised: a few copies per conversation instead of one per token). Everything else (row selection, cropping,
padding, deep copies) still reads and assigns `keys`/`values` as plain tensors, so it works unchanged.
"""

from __future__ import annotations

import copy

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

MIN_HEADROOM = 256       # positions of spare room given at each reallocation (at least)


class _Grown:
    """One of a layer's two tensors: a [B, heads, capacity, D] buffer and how many positions are filled."""

    __slots__ = ("buffer", "length")

    def __init__(self) -> None:
        self.buffer: torch.Tensor | None = None
        self.length = 0

    def view(self) -> torch.Tensor | None:
        return self.buffer if self.buffer is None or self.buffer.dim() < 3 else self.buffer[..., :self.length, :]

    def assign(self, tensor: torch.Tensor | None) -> None:
        self.buffer = tensor
        self.length = tensor.shape[-2] if tensor is not None and tensor.dim() >= 3 else 0

    def append(self, new: torch.Tensor) -> torch.Tensor:
        filled, added = self.length, new.shape[-2]
        buffer = self.buffer
        fits = (buffer is not None and buffer.dim() == new.dim() and buffer.shape[:-2] == new.shape[:-2]
                and buffer.shape[-2] >= filled + added)
        if not fits:
            room = filled + added + max(MIN_HEADROOM, (filled + added) // 4)
            grown = new.new_empty(*new.shape[:-2], room, new.shape[-1])
            if filled:
                grown[..., :filled, :] = buffer[..., :filled, :]
            self.buffer = buffer = grown
        buffer[..., filled:filled + added, :] = new
        self.length = filled + added
        return buffer[..., :self.length, :]


class GrowingLayer(DynamicLayer):
    """A `DynamicLayer` that appends in place (see the module docstring)."""

    def __init__(self) -> None:
        self._keys, self._values = _Grown(), _Grown()
        super().__init__()

    @property
    def keys(self) -> torch.Tensor | None:
        return self._keys.view()

    @keys.setter
    def keys(self, tensor: torch.Tensor | None) -> None:
        self._keys.assign(tensor)

    @property
    def values(self) -> torch.Tensor | None:
        return self._values.view()

    @values.setter
    def values(self, tensor: torch.Tensor | None) -> None:
        self._values.assign(tensor)

    def _twin(self, copy_attribute, keys: torch.Tensor | None, values: torch.Tensor | None) -> GrowingLayer:
        twin = self.__class__.__new__(self.__class__)
        twin.__dict__.update({k: copy_attribute(v) for k, v in self.__dict__.items() if k not in ("_keys", "_values")})
        twin._keys, twin._values = _Grown(), _Grown()
        twin._keys.assign(keys)
        twin._values.assign(values)
        return twin

    def __copy__(self) -> GrowingLayer:
        """A twin sharing the filled positions but not the spare room: an append on either side writes only
        into its own memory (the twin's first append reallocates)."""
        return self._twin(lambda v: v, self.keys, self.values)

    def __deepcopy__(self, memo: dict) -> GrowingLayer:
        """A copy of the filled positions only (a prefix-cache entry does not keep spare room)."""
        return self._twin(lambda v: copy.deepcopy(v, memo), None if self.keys is None else self.keys.clone(),
                          None if self.values is None else self.values.clone())

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
               ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        return self._keys.append(key_states), self._values.append(value_states)


def new_cache(config: object) -> DynamicCache:
    """transformers' cache for `config`, its full-attention layers replaced by growing ones (sliding-window layers,
    which drop old positions, stay as they are)."""
    cache = DynamicCache(config=config)
    cache.layers = [GrowingLayer() if type(layer) is DynamicLayer else layer for layer in cache.layers]
    return cache
