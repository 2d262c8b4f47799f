"""Long-context task generators (seeded, needle present, gold answers right) and their scorers."""

from __future__ import annotations

import re

import pytest

from recursa.core.errors import TaskError
from recursa.eval import long_context
from recursa.eval.long_scoring import graded, pair_f1, parse_pairs, score_long_context
from recursa.methods.rlm.truncated import TruncatedSingle


def test_s_niah_is_seeded_and_holds_exactly_one_needle():
    a = long_context.s_niah(n=3, context_chars=20_000, seed=7)
    b = long_context.s_niah(n=3, context_chars=20_000, seed=7)
    c = long_context.s_niah(n=3, context_chars=20_000, seed=8)
    assert [t.context for t in a] == [t.context for t in b]
    assert [t.context for t in a] != [t.context for t in c]
    for task in a:
        assert len(task.context) == 20_000
        key = re.search(r"number for (\w+)", task.question).group(1)
        assert task.context.count(f"The special magic number for {key} is {task.answer}.") == 1
        assert task.context.count("special magic number") == 1
        assert task.meta["scorer"] == "niah" and task.meta["haystack"] in ("paul-graham-essays", "generated")


def test_s_niah_scales_to_millions_of_characters():
    task = long_context.s_niah(n=1, context_chars=2_000_000, seed=1)[0]
    assert len(task.context) == 2_000_000 and task.answer in task.context


def test_oolong_lite_gold_counts_match_the_records():
    for task in long_context.oolong_lite(n=3, context_chars=30_000, seed=2):
        lines = task.context.splitlines()
        label = re.search(r"label '(\w+)'", task.question).group(1)
        user = re.search(r"user (\d+)", task.question)
        month = re.search(r"month (\d{4}-\d{2})", task.question)
        count = sum(f"| label: {label} |" in line and (not user or f"| user: {user.group(1)} |" in line)
                    and (not month or f"| date: {month.group(1)}-" in line) for line in lines)
        assert str(count) == task.answer
        assert 29_000 < len(task.context) <= 30_000


def test_oolong_pairs_lite_gold_pairs_match_the_records():
    for task in long_context.oolong_pairs_lite(n=2, context_chars=30_000, seed=3):
        holders = sorted({int(m) for m in re.findall(r"user: (\d+) \|[^\n]*label: urgent", task.context)})
        expected = {(a, b) for i, a in enumerate(holders) for b in holders[i + 1:]}
        assert parse_pairs(task.answer) == expected and len(holders) >= 3


def test_loader_validates_options():
    assert len(long_context.load("s-niah", limit=2, context_chars=5000)) == 2
    with pytest.raises(TaskError):
        long_context.load("s-niah", context_chars=10)
    with pytest.raises(TaskError):
        long_context.load("nope")


def test_scorers():
    assert score_long_context("niah", "The number is 5,138,149.", "5138149").correct
    assert not score_long_context("niah", "I could not find it", "5138149").correct
    exact = score_long_context("oolong_number", "There are 12 records.", "12")
    off = score_long_context("oolong_number", "\\boxed{10}", "12")
    assert exact.correct and graded(exact.detail) == 1.0
    assert not off.correct and graded(off.detail) == pytest.approx(0.75 ** 2, abs=1e-3)
    assert graded(score_long_context("oolong_number", "no idea", "12").detail) == 0.0
    assert pair_f1({(1, 2), (1, 3)}, {(1, 2), (2, 3)}) == pytest.approx(0.5)
    both = score_long_context("pairs_f1", "(3, 1), [1, 2] and (2,3)", "(1, 2), (1, 3), (2, 3)")
    assert both.correct and graded(both.detail) == 1.0


class _CharModel:
    name = "chars"
    context_window = 1000

    def count_tokens(self, text: str) -> int:
        return len(text) // 4


def test_truncated_single_fits_the_window():
    method = TruncatedSingle(_CharModel(), max_tokens=100)
    prompt, cut = method.fit("Where?", "x" * 100_000)
    assert cut and _CharModel().count_tokens(prompt) <= method.prompt_tokens
    prompt, cut = method.fit("Where?", "short context")
    assert not cut and "short context" in prompt
