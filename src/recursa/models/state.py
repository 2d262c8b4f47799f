"""`SequenceState`: a batch's working memory on a white-box model (KV cache, per-row mask and next positions).

Every latent method writes agents into one state; the backend (`hf`) reads and extends it. Rows never see each
other: left padding is masked (mask 0) and each row counts its own RoPE positions, so a row's numbers do not
depend on its batch.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from transformers import DynamicCache


@dataclass
class SequenceState:
    """A batch's working memory: KV cache, attention mask over every cached position, next RoPE position per row."""

    cache: DynamicCache
    mask: torch.Tensor       # [B, T] long: 1 = real position, 0 = padding
    next_pos: torch.Tensor   # [B] long: position id the next real token of each row gets

    @classmethod
    def empty(cls, config: object, batch_size: int, device: torch.device | str = "cpu") -> SequenceState:
        return cls(DynamicCache(config=config), torch.zeros(batch_size, 0, dtype=torch.long, device=device),
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
