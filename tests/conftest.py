import os

import pytest

from recursa.models import invariance

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def qwen():
    """The embedded default model, loaded once for the whole suite (real weights, bf16, CPU).

    The device is passed explicitly: the suite checks device-independent behaviour on the CPU, so a wrong default
    device shows up in the tests of `load` instead of silently moving the whole suite."""
    from recursa.models import registry

    return registry.load("qwen2.5-coder-0.5b", device="cpu")


@pytest.fixture(scope="session")
def smollm2():
    """SmolLM2-135M (another tokenizer and hidden size), loaded once for the suite, on the CPU."""
    from recursa.models import registry

    return registry.load("smollm2-135m", device="cpu")


@pytest.fixture(autouse=True)
def _isolated_runs(tmp_path, monkeypatch):
    """Traces and bench outputs of a test go to its own temporary folder."""
    from recursa.core import config

    monkeypatch.setenv("RECURSA_RUNS_DIR", str(tmp_path / "runs"))
    config.settings.cache_clear()
    yield
    config.settings.cache_clear()


diverges_only_at_a_tie = invariance.diverges_only_at_a_tie   # the backend's batch guarantee, shared with bench/
