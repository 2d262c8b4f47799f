"""The public library surface: `import recursa`, typed options that refuse typos everywhere, `run()` in one call."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import recursa
from recursa.cli import app
from recursa.core.errors import ConfigError
from recursa.methods.base import Task

ROOT = Path(__file__).parents[1]


def test_public_names_resolve_and_are_listed():
    for name in recursa.__all__:
        assert getattr(recursa, name) is not None, name
    assert {"load", "Task", "Answer", "Budget", "Single", "TextMAS", "LatentMAS", "RLM", "create"} <= set(dir(recursa))
    with pytest.raises(AttributeError):
        recursa.NoSuchThing  # noqa: B018


def test_task_gets_an_id_and_needs_a_question():
    first, second = Task(question="q?"), Task(question="q?")
    assert first.id and second.id and first.id != second.id
    assert Task("mine", "q?").id == "mine"
    with pytest.raises(ConfigError, match="non-empty question"):
        Task(question="  ")


@pytest.mark.parametrize(("name", "options", "message"), [
    ("latent-mas", {"latent_step": 8}, r"unknown option 'latent_step' \(did you mean 'latent_steps'\?\)"),
    ("latent-mas", {"realign": "ridge+nrom"}, r"realign must be one of .*ridge\+norm.*did you mean 'ridge\+norm'"),
    ("text-mas", {"pattern": "star"}, r"pattern must be one of sequential, hierarchical"),
    ("single", {"latent_steps": 4}, r"single: unknown option 'latent_steps'; valid options: max_tokens"),
    ("rlm", {"max_iterations": 0}, r"max_iterations"),
])
def test_a_misspelt_or_invalid_option_is_one_clear_error(qwen, name, options, message):
    with pytest.raises(ConfigError, match=message):
        recursa.create(name, qwen, **options)


def test_options_come_as_a_config_or_as_keywords_and_strings_are_converted(qwen):
    config = recursa.LatentMAS.Config(latent_steps=2, realign="none")
    assert recursa.LatentMAS(qwen, config).latent_steps == 2
    with pytest.raises(ConfigError, match="not both"):
        recursa.LatentMAS(qwen, config, latent_steps=3)
    with pytest.raises(ConfigError, match="must be a TextMASConfig"):
        recursa.TextMAS(qwen, config)
    built = recursa.LatentMAS.Config.build("latent-mas", {"latent_steps": "8", "gist": "true", "transfer": "none"})
    assert (built.latent_steps, built.gist, built.transfer) == (8, True, "none")   # "none" is a mode here
    assert recursa.TextMAS.Config.build("text-mas", {"context_chars": "none"}).context_chars is None


def test_run_answers_a_plain_question_with_usage_and_a_trace(qwen, tmp_path):
    answer = recursa.Single(qwen, max_tokens=48).run("What is 6 times 7? Answer with the number.",
                                                     runs_dir=tmp_path)
    assert answer.text and answer.method == "single"
    assert answer.extracted is not None and answer.to_dict()["extracted"] == answer.extracted
    assert answer.usage["completion_tokens"] > 0 and answer.usage["model_calls"] == 1
    trace = Path(answer.trace_path)
    assert trace.is_file() and trace.parent.parent == tmp_path
    kinds = {json.loads(line)["kind"] for line in trace.read_text().splitlines()}
    assert "model_call" in kinds
    record = json.loads(trace.with_name(trace.stem + ".answer.json").read_text())   # the texts, for the viewer
    assert record["question"].startswith("What is 6 times 7") and record["text"] == answer.text
    assert record["model"] == qwen.name


def test_cli_refuses_typos_before_loading_a_model():
    runner = CliRunner()
    result = runner.invoke(app, ["run", "-m", "latent-mas", "--realign", "ridge+nrom", "--model", "no/such-model",
                                 "hi"])
    assert result.exit_code == 2 and "did you mean 'ridge+norm'" in result.output
    result = runner.invoke(app, ["run", "-m", "latent-mas", "-o", "latent_step=8", "hi"])
    assert result.exit_code == 2 and "unknown option 'latent_step'" in result.output
    result = runner.invoke(app, ["run", "--latent-steps", "4", "hi"])            # single has no latent steps
    assert result.exit_code == 2 and "single: unknown option 'latent_steps'" in result.output


def test_the_cli_and_its_help_load_neither_torch_nor_transformers():
    code = ("import sys; from typer.testing import CliRunner; from recursa.cli import app; "
            "result = CliRunner().invoke(app, ['run', '--help']); "
            "print(result.exit_code, 'latent-mas: Latent steps' in ' '.join(result.output.split()), "
            "'torch' in sys.modules, 'transformers' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["0", "True", "False", "False"], done.stdout + done.stderr


def test_bench_refuses_typos_in_specs_and_shared_options():
    runner = CliRunner()
    result = runner.invoke(app, ["bench", "--methods", "single,latent-mas[latent_step=8]", "--limit", "1"])
    assert result.exit_code == 2 and "unknown option 'latent_step'" in result.output
    result = runner.invoke(app, ["bench", "--methods", "single,text-mas", "-o", "latent_steps=3", "--limit", "1"])
    assert result.exit_code == 2 and "none of the methods" in result.output
    result = runner.invoke(app, ["bench", "--methods", "text-mas", "-o", "pattern=ring", "--limit", "1"])
    assert result.exit_code == 2 and "pattern must be one of" in result.output


def test_methods_command_lists_every_declared_option():
    result = CliRunner().invoke(app, ["methods", "latent-mas"])
    assert result.exit_code == 0
    for doc in recursa.LatentMAS.Config.describe():
        assert doc.name in result.output


def test_an_unavailable_device_is_a_clear_error(monkeypatch):
    import torch

    from recursa.models.devices import resolve_device, resolve_dtype

    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_dtype("auto", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(ConfigError, match="unknown device"):
        resolve_device("tpu:0")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            resolve_device("cuda:1")
        monkeypatch.setenv("RECURSA_DEVICE", "cuda")
        from recursa.core import config

        config.settings.cache_clear()
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            recursa.load()


def readme_python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), flags=re.S)


@pytest.mark.slow
def test_readme_python_section_runs_as_written(tmp_path):
    blocks = readme_python_blocks()
    assert blocks, "the README has a Python section"
    for block in blocks:
        done = subprocess.run([sys.executable, "-c", block], cwd=tmp_path, capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(p.name for p in (ROOT / "examples").glob("*.py")))
def test_examples_run(script, tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "examples" / script)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip()
