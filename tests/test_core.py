"""core/: budget, trace, errors for bad model names and broken weight packages."""

import json
import uuid

import pytest

from recursa.core.budget import Budget
from recursa.core.errors import BudgetExceeded, ChecksumError, ConfigError, ModelNotFoundError, ModelNotInstalledError
from recursa.core.trace import Tracer, record_model_call, span
from recursa.models import registry
from recursa.models.embedded import EmbeddedSpec, assemble_gguf


def test_budget_trip_carries_partial_answer():
    budget = Budget(max_calls=2)
    budget.offer("42 (so far)")
    budget.charge(calls=2)
    with pytest.raises(BudgetExceeded) as info:
        budget.child().charge(calls=1)
    assert info.value.limit == "model_calls" and info.value.partial_answer == "42 (so far)"


def test_budget_depth_limit():
    budget = Budget(max_depth=1)
    child = budget.child()
    with pytest.raises(BudgetExceeded) as info:
        child.child()
    assert info.value.limit == "depth"
    with pytest.raises(ConfigError):
        Budget(max_tokens=-1)


def test_trace_writes_nested_events(tmp_path):
    with Tracer.start(runs_dir=tmp_path) as tracer, span("agent", "planner"):
        record_model_call("m", 0.5, prompt_tokens=10, completion_tokens=5, batch_size=2)
    events = [json.loads(line) for line in tracer.path.read_text().splitlines()]
    call = next(e for e in events if e["kind"] == "model_call")
    agent = next(e for e in events if e["kind"] == "agent")
    run = next(e for e in events if e["kind"] == "run")
    assert call["parent_id"] == agent["span_id"] and agent["parent_id"] == run["span_id"]
    assert call["prompt_tokens"] == 10 and call["seconds"] == pytest.approx(0.5, abs=0.05)
    assert tracer.totals.as_dict() == {"prompt_tokens": 10, "completion_tokens": 5, "latent_steps": 0,
                                       "model_calls": 2}


def test_unknown_model_name_lists_known_names():
    with pytest.raises(ModelNotFoundError, match="known names: qwen2.5-coder-0.5b"):
        registry.resolve_path("no-such-model")


def _fake_parts(tmp_path, monkeypatch, contents):
    """Part packages on a fresh import path; returns their unique module prefix."""
    prefix = "fake" + uuid.uuid4().hex[:8]
    for i, data in enumerate(contents, start=1):
        pkg = tmp_path / f"{prefix}part{i}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "data" / "p.bin").write_bytes(data)
        (pkg / "__init__.py").write_text(
            "import os\ndef get_part_path():\n    return os.path.join(os.path.dirname(__file__), 'data', 'p.bin')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return prefix


def test_wrong_checksum_is_one_clear_error(tmp_path, monkeypatch):
    prefix = _fake_parts(tmp_path, monkeypatch, [b"abc", b"def"])
    spec = EmbeddedSpec("fake", "", "fake-part{i}", prefix + "part{i}", "1.0", 2, sha256="0" * 64)
    with pytest.raises(ChecksumError, match="corrupt.*--force-reinstall"):
        assemble_gguf(spec, tmp_path / "out" / "fake.gguf")
    assert not (tmp_path / "out" / "fake.gguf").exists()


def test_missing_part_package_names_what_to_install(tmp_path, monkeypatch):
    prefix = _fake_parts(tmp_path, monkeypatch, [b"abc"])
    spec = EmbeddedSpec("fake", "", "fake-part{i}", prefix + "part{i}", "1.0", 2, sha256=None)
    with pytest.raises(ModelNotInstalledError, match="pip install fake-part2==1.0"):
        assemble_gguf(spec, tmp_path / "out" / "fake.gguf")


def test_correct_parts_assemble_in_order(tmp_path, monkeypatch):
    import hashlib

    prefix = _fake_parts(tmp_path, monkeypatch, [b"abc", b"def"])
    spec = EmbeddedSpec("fake", "", "fake-part{i}", prefix + "part{i}", "1.0", 2,
                        sha256=hashlib.sha256(b"abcdef").hexdigest())
    assert assemble_gguf(spec, tmp_path / "out" / "fake.gguf").read_bytes() == b"abcdef"
