import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def qwen():
    """The embedded default model, loaded once for the whole suite (real weights, bf16, CPU)."""
    from recursa.models import registry

    return registry.load("qwen2.5-coder-0.5b")


@pytest.fixture(autouse=True)
def _isolated_runs(tmp_path, monkeypatch):
    """Traces and bench outputs of a test go to its own temporary folder."""
    from recursa.core import config

    monkeypatch.setenv("RECURSA_RUNS_DIR", str(tmp_path / "runs"))
    config.settings.cache_clear()
    yield
    config.settings.cache_clear()
