"""Latent rollout: an agent thinks in hidden states on top of a shared KV working memory, and hands it on.

One agent, for a batch of B problems (the working memory is a `SequenceState`: KV cache [B, T] plus an attention
mask [B, T] and each row's next RoPE position):

    state  ──prefill(prompt ids, left-padded)──▶  h_0 [B, H]                     cache T → T + L
    repeat m times:  e = aligner(h) [B, H]  ──step_embeds──▶  h [B, H]            cache → T + L + m

No token is sampled. Every row keeps its own mask and positions, so a row's numbers do not depend on which other
rows share the batch: padding columns are masked and never shift positions (unlike upstream, which right-pads and
seeds the latent loop from a pad token).

Between agents, `hand_over` decides what the next agent sees (the `transfer` mode):

    full         everything cached so far (default; LatentMAS)
    latent-only  only the previous agent's m latent positions (upstream's `latent_only`)
    own-only     only the previous agent's prompt + latents; earlier agents dropped (upstream's `sequential_info_only`)
    none         an empty working memory (the channel is cut: an ablation)

Kept positions keep their original RoPE phases, and new tokens continue each row's position count, so relative
distances between kept and new positions stay what they were. With m = 0 the cache is still handed on (upstream
silently drops it).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from recursa.core.errors import ConfigError
from recursa.latent.align import Aligner
from recursa.latent.modes import TRANSFER_MODES
from recursa.models.base import LatentModel
from recursa.models.state import SequenceState


@dataclass
class AgentRollout:
    """What one agent wrote into the working memory, and what it cost (for the whole batch)."""

    prompt_tokens: list[int]     # [B] real (unpadded) prompt tokens per row
    latent_steps: int            # m
    start: int                   # first cache column this agent wrote
    latent_start: int            # first latent column (= end of its prompt)
    end: int                     # one past its last column
    prefill_seconds: float
    latent_seconds: float
    thought_tokens: list[list[int]] | None = None   # [B][m] the LM head's top token per latent step (`gist=True`)
    hidden_states: torch.Tensor | None = None       # [B, m, H] h_0..h_{m-1}, each step's input before the map
    input_embeds: torch.Tensor | None = None        # [B, m, H] what was fed back (`keep_latents=True`)


@torch.inference_mode()
def latent_rollout(model: LatentModel, state: SequenceState, prompt_ids: list[list[int]], steps: int,
                   aligner: Aligner | Callable[[torch.Tensor], torch.Tensor], gist: bool = False,
                   keep_latents: bool = False) -> AgentRollout:
    """Prefill one agent's prompt on top of `state`, then take `steps` latent steps. Mutates `state`.

    `aligner` maps a last hidden state [B, H] to the next input embedding [B, H] (an `Aligner`, or any module
    such as a trained link). `gist` also records, per step, the token the LM head ranks first for the thought
    (free with soft realignment): a readable trace of what the latent channel carries. `keep_latents` returns the
    thoughts themselves (hidden states and fed embeddings, [B, m, H] each), for links to other models.
    """
    if steps < 0:
        raise ConfigError(f"latent steps must be >= 0, got {steps}")
    start = state.length
    began = time.perf_counter()
    hidden = model.prefill(state, prompt_ids)                 # [B, H]: last layer, after the final norm
    latent_start = state.length                               # start + L (L = longest prompt in the batch)
    prefilled = time.perf_counter()
    thoughts: list[torch.Tensor] = []
    hiddens: list[torch.Tensor] = []
    fed: list[torch.Tensor] = []
    for _ in range(steps):
        if gist and isinstance(aligner, Aligner):
            embeds, top_token = aligner.with_gist(model, hidden)
            thoughts.append(top_token)
        else:
            embeds = aligner(hidden)                          # [B, H] in input-embedding space (fp32)
            if gist:
                thoughts.append(model.logits(hidden).argmax(dim=-1))
        if keep_latents:
            hiddens.append(hidden)
            fed.append(embeds)
        hidden = model.step_embeds(state, embeds[:, None, :])  # [B, 1, H] in → [B, H] out; cache + 1
    finished = time.perf_counter()
    return AgentRollout(prompt_tokens=[len(row) for row in prompt_ids], latent_steps=steps, start=start,
                        latent_start=latent_start, end=state.length, prefill_seconds=prefilled - began,
                        latent_seconds=finished - prefilled,
                        thought_tokens=torch.stack(thoughts, dim=1).tolist() if thoughts else None,
                        hidden_states=torch.stack(hiddens, dim=1) if hiddens else None,
                        input_embeds=torch.stack(fed, dim=1) if fed else None)


def hand_over(model: LatentModel, state: SequenceState, last: AgentRollout, transfer: str) -> SequenceState:
    """The working memory the next agent starts from, after `last` wrote into `state` (may return a new state)."""
    if transfer == "full":
        return state
    if transfer == "none":
        return model.new_state(state.batch_size)
    if transfer == "latent-only":
        keep = torch.arange(last.latent_start, last.end)      # [m] columns: real in every row (never padded)
    elif transfer == "own-only":
        keep = torch.arange(last.start, last.end)             # [L + m] columns: this agent's segment
    else:
        raise ConfigError(f"unknown transfer mode '{transfer}'; use one of: {', '.join(TRANSFER_MODES)}")
    state.keep_positions(keep)
    return state
