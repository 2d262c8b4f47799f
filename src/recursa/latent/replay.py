"""The inputs that built a working memory, kept so another engine can rebuild it (`latent-mas --decoder vllm`).

A key or value at position t depends only on the input embeddings at positions 0..t. So a server that takes
input embeddings (vLLM's `prompt_embeds`) and is fed, in order, every embedding that entered a row of the
working memory (each agent's prompt tokens through the embedding table, then its m latent vectors exactly as
they were fed, in the model's dtype) computes that row's cache again, and decodes as the local model would
from the handed-over cache. Per row, without padding:

    agent 1: embed(prompt ids) [L_1, H] ++ latents [m, H] ++ agent 2: ... ++ final agent: embed(prompt ids)  → [T, H]

This holds when the cache is handed on whole (`transfer=full`) or dropped (`none`). The other modes keep some
columns at their original positions and drop the inputs they attended to, which no replay of inputs rebuilds.
"""

from __future__ import annotations

import torch

from recursa.core.errors import ConfigError
from recursa.latent.modes import REPLAYABLE_TRANSFERS
from recursa.models.base import LatentModel


class InputTape:
    """Per row, every input embedding appended to a working memory, in order ([T_row, H] each, no padding)."""

    def __init__(self, model: LatentModel, batch_size: int):
        self.model = model
        self.rows: list[list[torch.Tensor]] = [[] for _ in range(batch_size)]

    @torch.inference_mode()
    def add_tokens(self, ids: list[list[int]]) -> None:
        """Each row's prompt ids [L_row], through the model's embedding table (what prefill feeds)."""
        self._check(len(ids))
        for row, row_ids in zip(self.rows, ids, strict=True):
            if row_ids:
                tokens = torch.tensor(row_ids, dtype=torch.long, device=self.model.device)
                row.append(self.model.embed(tokens).to(self.model.dtype))       # [L_row, H]

    def add_latents(self, embeds: torch.Tensor) -> None:
        """Latent vectors [B, m, H] as they were fed (step_embeds casts them to the model's dtype, so do we)."""
        self._check(embeds.shape[0])
        for row, latents in zip(self.rows, embeds, strict=True):
            if latents.shape[0]:
                row.append(latents.to(self.model.device, self.model.dtype))    # [m, H]

    def hand_over(self, transfer: str) -> None:
        """Follow `rollout.hand_over`: `full` keeps everything, `none` starts over."""
        if transfer not in REPLAYABLE_TRANSFERS:
            raise ConfigError(f"transfer={transfer} cannot be replayed from inputs; use one of: "
                              f"{', '.join(REPLAYABLE_TRANSFERS)}")
        if transfer == "none":
            self.rows = [[] for _ in self.rows]

    def sequences(self) -> list[torch.Tensor]:
        """[T_row, H] per row."""
        empty = torch.zeros(0, self.model.hidden_size, dtype=self.model.dtype, device=self.model.device)
        return [torch.cat(row, dim=0) if row else empty for row in self.rows]

    def _check(self, batch: int) -> None:
        if batch != len(self.rows):
            raise ValueError(f"the tape holds {len(self.rows)} rows, got {batch}")
