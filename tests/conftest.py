import math
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def qwen():
    """The embedded default model, loaded once for the whole suite (real weights, bf16, CPU).

    The device is passed explicitly: the suite checks device-independent behaviour on the CPU, so a wrong default
    device shows up in the tests of `load` instead of silently moving the whole suite."""
    from recursa.models import registry

    return registry.load("qwen2.5-coder-0.5b", device="cpu")


@pytest.fixture(autouse=True)
def _isolated_runs(tmp_path, monkeypatch):
    """Traces and bench outputs of a test go to its own temporary folder."""
    from recursa.core import config

    monkeypatch.setenv("RECURSA_RUNS_DIR", str(tmp_path / "runs"))
    config.settings.cache_clear()
    yield
    config.settings.cache_clear()


def diverges_only_at_a_tie(model, prompt_ids: list[int], reference: list[int], other: list[int],
                           state=None) -> bool:
    """Greedy tokens `other` equal `reference` until a step where the reference's two best logits are tied.

    On this CPU a bf16 product rounds a row differently with the batch's shape, so where the two best next tokens
    are within rounding (two bf16 steps of the top logit) either can win; anything else must not differ. The
    margin is read from one teacher-forced forward over the reference (on top of `state`, a one-row working
    memory, when the prompt continues one).
    """
    step = next((i for i, (a, b) in enumerate(zip(reference, other, strict=False)) if a != b), None)
    if step is None:
        return len(reference) == len(other)
    hidden = model.prefill(state if state is not None else model.new_state(1), [prompt_ids + reference[:step]])
    best, second = model.logits(hidden)[0].float().topk(2).values.tolist()
    bf16_step = 2.0 ** (math.floor(math.log2(abs(best))) - 7) if best else 2.0 ** -133
    return best - second <= 2 * bf16_step
