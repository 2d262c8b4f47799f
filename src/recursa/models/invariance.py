"""The backend's batch guarantee, as a check: a row's greedy tokens alone and in a batch part only at a tie.

On bf16 hardware a matrix product can round a row differently with the batch's shape, so where the two best next
tokens are within rounding (two bf16 steps of the top logit) either can win; anything else must not differ. The
margin is read from one teacher-forced forward over the reference. Used by the tests and `bench/device_check.py`.
"""

from __future__ import annotations

import math

from recursa.models.base import LatentModel
from recursa.models.state import SequenceState


def top_two_gap(model: LatentModel, prompt_ids: list[int], prefix: list[int],
                state: SequenceState | None = None) -> float:
    """The gap between the two best next-token logits after `prompt_ids + prefix` (on top of `state`), in bf16
    rounding steps at the top logit's magnitude: 2 or less is a tie."""
    hidden = model.prefill(state if state is not None else model.new_state(1), [prompt_ids + prefix])
    best, second = model.logits(hidden)[0].float().topk(2).values.tolist()
    bf16_step = 2.0 ** (math.floor(math.log2(abs(best))) - 7) if best else 2.0 ** -133
    return (best - second) / bf16_step


def diverges_only_at_a_tie(model: LatentModel, prompt_ids: list[int], reference: list[int], other: list[int],
                           state: SequenceState | None = None) -> bool:
    """`other` equals `reference` until a step where the reference's two best logits tie (on top of `state`, a
    one-row working memory, when the prompt continues one)."""
    step = next((i for i, (a, b) in enumerate(zip(reference, other, strict=False)) if a != b), None)
    if step is None:
        return len(reference) == len(other)
    return top_two_gap(model, prompt_ids, reference[:step], state) <= 2
