"""Bench orchestration with a scripted ChatModel (orchestration logic only): method specs, batching, resume after
a crash that tore the last line, error records, summaries. Model behaviour is tested on the real model elsewhere."""

import json

import fakes
import pytest

from recursa.core.errors import ConfigError
from recursa.eval.bench import parse_method_specs, read_results, run_bench
from recursa.eval.report import wilson_interval, write_summary
from recursa.methods.base import Task


def easy_answer(text: str) -> str:
    """The right boxed number for questions containing 'easy n', 0 otherwise."""
    return f"so \\boxed{{{text.split('easy ')[1].split()[0] if 'easy ' in text else '0'}}}"


def ScriptedModel(fail_on: str | None = None) -> fakes.ScriptedModel:  # noqa: N802 - reads like the class
    return fakes.ScriptedModel(respond=easy_answer, fail_on=fail_on, context_window=4096)


def tasks(n=5):
    return [Task(f"t{i}", f"easy {i} plus nothing" if i % 2 == 0 else f"hard {i}?", str(i),
                 {"scorer": "math", "answer_format": "math"}) for i in range(n)]


def test_parse_method_specs():
    specs = parse_method_specs("single, text-mas[pattern=hierarchical;max_tokens=64], text-mas[context-chars=none]")
    assert [s.label for s in specs] == ["single", "text-mas[pattern=hierarchical;max_tokens=64]",
                                        "text-mas[context-chars=none]"]
    assert specs[1].options == {"pattern": "hierarchical", "max_tokens": 64}
    assert specs[2].options == {"context_chars": None}
    for bad, message in [("nope", "unknown method 'nope'"), ("single,single", "listed twice"),
                         ("text-mas[pattern]", "write key=value"), ("", "no methods")]:
        with pytest.raises(ConfigError, match=message):
            parse_method_specs(bad)


def test_matrix_batches_and_records(tmp_path):
    model = ScriptedModel()
    specs = parse_method_specs("single,text-mas,text-mas[pattern=hierarchical]")
    path = run_bench(model, tasks(5), specs, tmp_path, task_name="toy", batch_size=2, show_progress=False)
    records = read_results(path)
    assert len(records) == 15 and len({(r["method"], r["id"]) for r in records}) == 15
    # single: one call per batch; sequential: 4 stages per batch; hierarchical: experts share one call + summarizer
    assert model.calls == [2, 2, 2, 2, 2, 6, 2] * 2 + [1, 1, 1, 1, 1, 3, 1]
    assert records[0]["method"] == "single" and records[2]["method"] == "text-mas"   # batch-interleaved order
    seq = next(r for r in records if r["method"] == "text-mas" and r["id"] == "t0")
    assert [a["role"] for a in seq["agents"]] == ["planner", "critic", "refiner", "judger"]
    assert "[Planner]:" in seq["agents"][1]["prompt"] and "[Refiner]:" in seq["agents"][3]["prompt"]
    assert seq["correct"] and seq["completion_tokens"] == 20 and seq["extracted"] == "0"
    summary = write_summary(tmp_path)
    assert [r["accuracy"] for r in summary["methods"]] == [0.6, 0.6, 0.6]   # t0, t2, t4 are "easy"; t1 gold=1 fails
    assert summary["methods"][1]["vs_first"]["completion_tokens"] == 4.0
    for name in ("summary.md", "summary.json", "summary.png"):
        assert (tmp_path / name).stat().st_size > 0


def test_resume_after_torn_write_redoes_nothing_finished(tmp_path):
    specs = parse_method_specs("single,text-mas")
    run_bench(ScriptedModel(), tasks(4), specs, tmp_path, task_name="toy", batch_size=2, show_progress=False)
    path = tmp_path / "results.jsonl"
    lines = path.read_text().splitlines()
    finished = lines[:-1]                                     # the last sample "was being written" when killed
    path.write_text("\n".join(finished) + "\n" + lines[-1][: len(lines[-1]) // 2])   # torn, no newline
    lost = json.loads(lines[-1])
    assert len(read_results(path)) == 7                     # the torn tail is ignored when reading
    model = ScriptedModel()
    run_bench(model, tasks(4), specs, tmp_path, task_name="toy", batch_size=2, show_progress=False)
    records = read_results(path)
    assert len(records) == 8 and len({(r["method"], r["id"]) for r in records}) == 8
    assert model.calls == [1] * 4                             # only the lost sample, through text-mas's 4 stages
    assert (records[-1]["method"], records[-1]["id"]) == (lost["method"], lost["id"])
    assert all(line.strip() for line in path.read_text().splitlines())   # the torn fragment was cut off


def test_method_errors_are_recorded_not_skipped(tmp_path):
    specs = parse_method_specs("single")
    run_bench(ScriptedModel(fail_on="hard 1"), tasks(4), specs, tmp_path, task_name="toy", batch_size=2,
              show_progress=False)
    records = read_results(tmp_path / "results.jsonl")
    errors = [r for r in records if r.get("error")]
    assert len(records) == 4 and {r["id"] for r in errors} == {"t0", "t1"}
    assert "ContextTooLongError" in errors[0]["error"]
    assert write_summary(tmp_path)["methods"][0]["errors"] == 2


def test_resume_refuses_another_task(tmp_path):
    run_bench(ScriptedModel(), tasks(2), parse_method_specs("single"), tmp_path, task_name="toy",
              show_progress=False)
    with pytest.raises(ConfigError, match="task='toy'"):
        run_bench(ScriptedModel(), tasks(2), parse_method_specs("single"), tmp_path, task_name="other",
                  show_progress=False)


def test_wilson_interval():
    low, high = wilson_interval(7, 10)
    assert low == pytest.approx(0.3968, abs=1e-3) and high == pytest.approx(0.8922, abs=1e-3)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == pytest.approx(1.0)
    assert wilson_interval(0, 0) == (0.0, 0.0)


def test_cli_bad_task_fails_clearly():
    from typer.testing import CliRunner

    from recursa.cli import app

    result = CliRunner().invoke(app, ["bench", "--task", "gsm9k", "--methods", "single"])
    assert result.exit_code == 2 and "unknown task 'gsm9k'" in result.output
