"""Long-context task generators (seeded, needle present, gold answers right) and their scorers."""

from __future__ import annotations

import random
import re

import pytest

from recursa.core.errors import TaskError
from recursa.eval import long_context, reading_tasks
from recursa.eval.scoring import graded, pair_f1, parse_pairs, score_task
from recursa.eval.tasks import load_tasks
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
    assert score_task("The number is 5,138,149.", "5138149", {"scorer": "niah"}).correct
    assert not score_task("I could not find it", "5138149", {"scorer": "niah"}).correct
    exact = score_task("There are 12 records.", "12", {"scorer": "oolong_number"})
    off = score_task("\\boxed{10}", "12", {"scorer": "oolong_number"})
    assert exact.correct and graded(exact.detail) == 1.0
    assert not off.correct and graded(off.detail) == pytest.approx(0.75 ** 2, abs=1e-3)
    assert graded(score_task("no idea", "12", {"scorer": "oolong_number"}).detail) == 0.0
    assert pair_f1({(1, 2), (1, 3)}, {(1, 2), (2, 3)}) == pytest.approx(0.5)
    both = score_task("(3, 1), [1, 2] and (2,3)", "(1, 2), (1, 3), (2, 3)", {"scorer": "pairs_f1"})
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


# ---- tasks that need reading --------------------------------------------------------------------------------------
READING = ("reading-posts", "reading-posts-pairs", "reading-logs", "reading-tickets")
_GROUP = re.compile(r"(?:member|service|product) (\S+) ")


def _free_words(line: str) -> set[str]:
    return set(re.findall(r"[a-z][a-z'-]{2,}", line.lower()))


@pytest.mark.parametrize("name", READING)
def test_reading_tasks_are_seeded_sized_and_registered(name):
    a = load_tasks(name, limit=2, seed=4, context_chars=20_000)
    assert [t.context for t in a] == [t.context for t in load_tasks(name, limit=2, seed=4, context_chars=20_000)]
    assert [t.context for t in a] != [t.context for t in load_tasks(name, limit=2, seed=5, context_chars=20_000)]
    for task in a:
        assert 19_000 < len(task.context) <= 20_000 and task.meta["scorer"] in ("oolong_number", "pairs_f1")
    big = reading_tasks.build(name, 1_000_000, 0, 0)[0]
    assert 990_000 < len(big.context) <= 1_000_000


@pytest.mark.parametrize("name", READING)
@pytest.mark.parametrize("chars", [32_000, 256_000])
def test_a_reader_gets_the_gold_answer(name, chars):
    """Counting the records a reader would classify as the asked class gives the gold answer."""
    for index in range(3):
        task, records = reading_tasks.build(name, chars, 0, index)
        assert task.context.splitlines() == [r.line for r in records]
        family = reading_tasks.FAMILIES[reading_tasks.TASKS[name]]
        label = next(c for c, (words, _) in family.classes.items() if words and f" {words}" in task.question)
        if name.endswith("-pairs"):
            first, last = re.findall(r"\d{4}-\d{2}-\d{2}", task.question)
            holders = sorted({int(r.group) for r in records if r.label == label and first <= str(r.day) <= last})
            assert parse_pairs(task.answer) == {(a, b) for i, a in enumerate(holders) for b in holders[i + 1:]}
            assert len(holders) >= 3 and "1234" not in task.answer
        else:
            group = _GROUP.search(task.question).group(1)
            assert int(task.answer) == sum(r.group == group and r.label == label for r in records) > 0
            # the group is written plainly: a program selects exactly its records
            assert sum(f" {group}: " in line for line in task.context.splitlines()) == sum(
                r.group == group for r in records)


@pytest.mark.parametrize("family", ["posts", "logs", "tickets"])
def test_no_single_key_word_finds_a_class(family):
    """For every class asked about, the best key word that marks it (>= 70% of its matches in the class) finds
    under 40% of its records, so grep-and-count recovers well under the gold count; the lines holding any word
    of the question's description are not the class either (F1 under 0.5)."""
    records = reading_tasks.records(family, random.Random(11), 256_000)
    spec = reading_tasks.FAMILIES[family]
    by_word: dict[str, list[str]] = {}
    for record in records:
        for word in _free_words(record.line):
            by_word.setdefault(word, []).append(record.label)
    for label, (description, _) in spec.classes.items():
        if label == spec.other:
            continue
        total = sum(r.label == label for r in records)
        recalls = [labels.count(label) / total for labels in by_word.values()
                   if labels.count(label) / len(labels) >= 0.7]
        assert total > 200 and max(recalls) < 0.4, (label, max(recalls))
        asked = _free_words(description) - {"the", "and", "was", "for", "too", "that", "they", "than", "over",
                                           "another", "lack", "item", "data", "product"}
        matched = [r.label == label for r in records if asked & _free_words(r.line)]
        f1 = 2 * sum(matched) / (len(matched) + total)
        assert f1 < 0.5, (label, asked, f1)
