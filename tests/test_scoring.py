"""Answer extraction and scoring (pure functions, the scoring bugs users hit upstream included)."""

import pytest

from recursa.eval.scoring import (
    SCORERS,
    boxed_contents,
    code_test_program,
    extract_answer,
    extract_choice,
    extract_code,
    graded,
    parse_number,
    score_choice,
    score_math,
    score_task,
)


@pytest.mark.parametrize("text, expected", [
    (r"so \boxed{18}.", "18"),
    (r"first \boxed{3} then \boxed{\frac{1}{2}}", r"\frac{1}{2}"),          # last box wins, nested braces kept
    (r"\boxed{\text{B}}", r"\text{B}"),
    (r"\boxed{18 \text{ dollars}}", r"18 \text{ dollars}"),
    ("Natalia sold 48 clips.\n#### 72", "72"),
    ("So the final answer is $1,234.", "1,234"),
    ("The answer is: 42 apples", "42 apples"),
    ("She has 5 left, then buys 7 more, so 12", "12"),                     # last number fallback
    (r"unclosed \boxed{12", "12"),
    ("no numbers here", None),
    ("", None),
])
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_boxed_nested_braces():
    assert boxed_contents(r"\boxed{\frac{a}{\sqrt{b}}} and \fbox{7}") == [r"\frac{a}{\sqrt{b}}", "7"]


@pytest.mark.parametrize("answer, value", [
    ("18", 18), ("1,234,567", 1234567), ("$1,234.50", 1234.5), ("-7", -7), ("−7", -7), ("3/4", 0.75),
    (r"\frac{3}{4}", 0.75), (r"\dfrac{-6}{4}", -1.5), ("12 dollars", 12), (r"18 \text{ dollars}", 18),
    ("x = 5", 5), ("3 + 4 = 7", 7), ("0.5", 0.5), (".5", 0.5), ("25%", 25), ("1e3", 1000), ("none", None),
])
def test_parse_number(answer, value):
    parsed = parse_number(answer)
    assert parsed == value if value is None else parsed == pytest.approx(value)


@pytest.mark.parametrize("text, gold, correct", [
    (r"\boxed{18}", "18", True),
    (r"\boxed{18.0}", "18", True),              # upstream compared strings: "18.0" != "18"
    (r"\boxed{1,200}", "1200", True),
    (r"The total is \boxed{\$1,200.00}", "1200", True),
    (r"\boxed{17}", "18", False),
    ("#### -3", "-3", True),
    ("#### 3", "-3", False),
    (r"\boxed{\frac{4}{6}}", "2/3", True),
    (r"\boxed{0.6667}", "2/3", False),          # default tolerance is tight
    ("The answer is 5 hours.", "5", True),
    ("I cannot tell.", "5", False),
    (r"\boxed{Yes}", "yes", True),              # non-numeric gold: normalized text equality
    (r"\boxed{(a^3+2b)/(3a)}", "(a^3 + 2b)/(3a)", True),
])
def test_score_math(text, gold, correct):
    assert score_math(text, gold).correct is correct


def test_tolerance_is_configurable():
    assert score_math(r"\boxed{33.33}", "33.3333", rel_tol=1e-3).correct
    assert not score_math(r"\boxed{33.33}", "33.3333").correct


@pytest.mark.parametrize("text, letter", [
    (r"\boxed{B}", "B"), (r"\boxed{\text{C}}", "C"), ("The answer is (D).", "D"), ("Answer: a", "A"),
    (r"\boxed{C: 3.5 eV}", "C"), ("I think it is\nB", "B"), ("nothing", None),
])
def test_extract_choice(text, letter):
    assert extract_choice(text) == letter


def test_score_choice():
    assert score_choice(r"\boxed{b}", "B").correct
    assert not score_choice(r"\boxed{A}", "B").correct


def test_extract_code_and_program():
    text = "Here:\n```python\ndef add(a, b):\n    return a + b\n```\nDone."
    assert extract_code(text) == "def add(a, b):\n    return a + b"
    assert extract_code("```python\ndef f():\n    return 1") == "def f():\n    return 1"   # cut off by max_tokens
    body_only = "    return a + b\n"
    program = code_test_program(body_only, "def check(c):\n    assert c(1, 2) == 3", "add", "def add(a, b):\n")
    assert program.startswith("def add(a, b):\n    return a + b") and program.rstrip().endswith("check(add)")


def test_score_task_dispatch():
    assert score_task(r"\boxed{7}", "7", {}).correct
    assert score_task(r"\boxed{B}", "B", {"scorer": "choice"}).correct
    assert score_task(r"\boxed{Paris}", "paris", {"scorer": "exact"}).correct
    assert not score_task("7", None, {}).correct
    with pytest.raises(ValueError, match="unknown scorer"):
        score_task("7", "7", {"scorer": "bleu"})


def test_one_table_scores_long_context_answers_too():
    assert {"math", "code", "niah", "oolong_number", "pairs_f1"} <= set(SCORERS)
    off_by_one = score_task("I count 11.", "12", {"scorer": "oolong_number"})
    assert not off_by_one.correct and graded(off_by_one.detail) == pytest.approx(0.75)
    assert graded(score_task("(2, 1)", "(1, 2), (1, 3)", {"scorer": "pairs_f1"}).detail) == pytest.approx(2 / 3,
                                                                                                          abs=1e-3)
    assert graded(score_task("no pairs", None, {"scorer": "pairs_f1"}).detail) is None   # no gold: not graded
