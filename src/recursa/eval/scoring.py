"""Answer extraction and scoring: pure functions (code scoring delegates only the execution to the sandbox).

One table (`SCORER_TABLE`, plus "code") serves every task: math | choice | exact | code, and the long-context
scorers niah | oolong_number | pairs_f1, whose `detail` carries the graded score ("score=0.563", see `graded`).

Extraction order for a final answer: the last `\\boxed{...}` (nested braces allowed), then "#### n", then
"the (final) answer is ...", then "Answer: ...", then the last number in the text. Numbers are compared as
numbers: "1,234", "$1234.00", "1234 dollars", "\\frac{2468}{2}" all equal 1234.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from recursa.methods.extract import ANSWER_IS as _ANSWER_IS
from recursa.methods.extract import NUMBER as _NUMBER
from recursa.methods.extract import boxed_contents, extract_answer

__all__ = ["boxed_contents", "extract_answer"]  # re-exported: scorers and callers read them from here

_FRACTION = re.compile(r"^([-+]?\d+(?:\.\d+)?)\s*/\s*([-+]?\d+(?:\.\d+)?)$")
_LATEX_FRAC = re.compile(r"\\[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}")
_TEXT_WRAPPER = re.compile(r"\\(?:text|textbf|mathrm|mathbf|operatorname)\s*\{([^{}]*)\}")


def _clean_latex(answer: str) -> str:
    answer = answer.replace("\\!", "").replace("\\,", "").replace("\\$", "").replace("\\%", "%")
    answer = answer.replace("−", "-").replace("–", "-").replace("\\left", "").replace("\\right", "")
    for _ in range(3):  # nested wrappers: \text{\textbf{B}}
        answer = _TEXT_WRAPPER.sub(r"\1", answer)
    return _LATEX_FRAC.sub(r"(\1)/(\2)", answer)


def parse_number(answer: str | None) -> float | None:
    """A number from an answer string: units, currency, thousands separators, %, fractions and `x = ...` allowed."""
    if answer is None:
        return None
    s = _clean_latex(str(answer)).strip()
    if "=" in s:  # "x = 5" or "3 + 4 = 7": the value is what follows the last "="
        s = s.rsplit("=", 1)[1]
    s = s.replace("$", "").replace("€", "").replace("£", "").strip()
    frac = _FRACTION.match(s.replace("(", "").replace(")", "").replace(",", ""))
    if frac:
        num, den = float(frac.group(1)), float(frac.group(2))
        return num / den if den else None
    match = _NUMBER.search(s)
    if not match:
        return None
    try:
        return float(match.group(0).replace(",", ""))
    except ValueError:
        return None


def numbers_match(a: float | None, b: float | None, rel_tol: float = 1e-6, abs_tol: float = 1e-9) -> bool:
    if a is None or b is None or math.isnan(a) or math.isnan(b):
        return False
    return math.isclose(a, b, rel_tol=rel_tol, abs_tol=abs_tol)


def normalize_text(answer: str) -> str:
    """Case, spaces, LaTeX wrappers and trailing punctuation removed: for comparing non-numeric answers."""
    s = _clean_latex(answer).lower()
    s = re.sub(r"\s+", "", s)
    return s.strip(".").strip("$")


def extract_choice(text: str | None, choices: str = "ABCD") -> str | None:
    """The option letter a model chose: a boxed letter, "answer is (B)", "Answer: B", or a lone letter."""
    if not text:
        return None
    letters = re.escape(choices.upper() + choices.lower())
    candidates = boxed_contents(text) + [m for m in _ANSWER_IS.findall(text)]
    for candidate in reversed(candidates):
        match = re.match(rf"^\W*([{letters}])(?:\W|$)", _clean_latex(candidate).strip())
        if match:
            return match.group(1).upper()
    lone = re.findall(rf"(?:^|[\s(])([{re.escape(choices.upper())}])(?:[).:]|\s*$)", text, flags=re.MULTILINE)
    return lone[-1].upper() if lone else None


def extract_code(text: str) -> str:
    """The last ```python block (or any fenced block); the whole text when there is no fence."""
    blocks = re.findall(r"```(?:python|py|Python)?[ \t]*\n(.*?)```", text, flags=re.DOTALL)
    if blocks:
        return blocks[-1].strip("\n")
    unclosed = re.search(r"```(?:python|py)?[ \t]*\n(.*)$", text, flags=re.DOTALL)  # cut off by max_tokens
    return (unclosed.group(1) if unclosed else text).strip("\n")


@dataclass
class Score:
    correct: bool
    extracted: str | None
    detail: str = ""


def score_math(text: str, gold: str, rel_tol: float = 1e-6) -> Score:
    """Numeric comparison when both sides are numbers, else normalized text equality."""
    predicted = extract_answer(text)
    if predicted is None:
        return Score(False, None, "no answer found")
    gold_value, pred_value = parse_number(gold), parse_number(predicted)
    if gold_value is not None and _is_plain_number(gold):
        return Score(numbers_match(pred_value, gold_value, rel_tol=rel_tol), predicted)
    if normalize_text(predicted) == normalize_text(gold):
        return Score(True, predicted)
    if gold_value is not None and pred_value is not None and _same_symbolic(gold, predicted):
        return Score(True, predicted)
    return Score(False, predicted)


def _is_plain_number(answer: str) -> bool:
    """True for "18", "-3.5", "1,200", "3/4", "\\frac{1}{2}", "$5": a value, not an expression with variables."""
    s = _clean_latex(answer).replace("$", "").replace(",", "").replace(" ", "").replace("(", "").replace(")", "")
    return bool(re.fullmatch(r"[-+]?(?:\d+(?:\.\d+)?|\.\d+)(?:/[-+]?\d+(?:\.\d+)?)?%?", s))


def _same_symbolic(gold: str, predicted: str) -> bool:
    """Both are plain rational values written differently (e.g. "2/3" vs "0.6667" is NOT equal; "4/6" vs "2/3" is)."""
    try:
        g = Fraction(_clean_latex(gold).replace("(", "").replace(")", "").replace(" ", ""))
        p = Fraction(_clean_latex(predicted).replace("(", "").replace(")", "").replace(" ", ""))
    except (ValueError, ZeroDivisionError):
        return False
    return g == p


def score_choice(text: str, gold: str, choices: str = "ABCD") -> Score:
    predicted = extract_choice(text, choices)
    return Score(predicted is not None and predicted == gold.strip().upper(), predicted)


def score_exact(text: str, gold: str) -> Score:
    predicted = extract_answer(text)
    return Score(predicted is not None and normalize_text(predicted) == normalize_text(gold), predicted)


def code_test_program(completion: str, test: str, entry_point: str, prompt: str = "") -> str:
    """A program that defines the model's code and runs HumanEval-style `check(candidate)` tests on it.

    When the model wrote only the function body (HumanEval's completion style), the task prompt is prepended.
    """
    code = extract_code(completion)
    if f"def {entry_point}" not in code and prompt:
        code = prompt + code
    return f"{code}\n\n{test}\n\ncheck({entry_point})\n"


def score_code(completion: str, test: str, entry_point: str, prompt: str = "", timeout: float = 10.0) -> Score:
    """Run the tests against the model's code in the sandbox; correct iff the program exits 0."""
    from recursa.core.sandbox import run_python

    program = code_test_program(completion, test, entry_point, prompt)
    result = run_python(program, timeout=timeout)
    if result.timed_out:
        return Score(False, entry_point, f"timed out after {timeout:.0f}s")
    if result.returncode != 0:
        last = (result.stderr or result.stdout).strip().splitlines()[-1:] or [f"exit code {result.returncode}"]
        return Score(False, entry_point, last[0][:300])
    return Score(True, entry_point, f"tests passed ({result.isolation})")


# ---- long-context scorers: `detail` starts with "score=<0..1>", the graded value the RLM paper reports -----------
_PAIR = re.compile(r"\(\s*(\d+)\s*,\s*(\d+)\s*\)|\[\s*(\d+)\s*,\s*(\d+)\s*\]")


def score_niah(text: str, gold: str) -> Score:
    """The needle's value appears in the answer (thousands separators ignored)."""
    found = gold.strip() in (text or "").replace(",", "")
    return Score(found, gold if found else extract_answer(text), f"score={float(found):.3f}")


def score_oolong_number(text: str, gold: str) -> Score:
    """A count: correct when exact, graded 0.75^|error|."""
    extracted = extract_answer(text)
    value = parse_number(extracted)
    if value is None:
        return Score(False, extracted, "score=0.000 (no number)")
    score = 0.75 ** abs(value - float(gold))
    return Score(value == float(gold), extracted, f"score={score:.3f}")


def parse_pairs(text: str) -> set[tuple[int, int]]:
    pairs = set()
    for match in _PAIR.finditer(text or ""):
        a, b = (int(x) for x in (match.group(1, 2) if match.group(1) else match.group(3, 4)))
        if a != b:
            pairs.add((min(a, b), max(a, b)))
    return pairs


def pair_f1(predicted: set[tuple[int, int]], gold: set[tuple[int, int]]) -> float:
    if not predicted and not gold:
        return 1.0
    hits = len(predicted & gold)
    if not hits:
        return 0.0
    precision, recall = hits / len(predicted), hits / len(gold)
    return 2 * precision * recall / (precision + recall)


def score_pairs_f1(text: str, gold: str) -> Score:
    """A set of id pairs: correct when equal, graded by F1."""
    predicted, expected = parse_pairs(text), parse_pairs(gold)
    f1 = pair_f1(predicted, expected)
    shown = ", ".join(f"({a}, {b})" for a, b in sorted(predicted)[:20])
    return Score(f1 == 1.0, shown, f"score={f1:.3f}")


def graded(detail: str | None) -> float | None:
    """The graded score a long-context scorer put in `detail`."""
    match = re.match(r"score=([0-9.]+)", detail or "")
    return float(match.group(1)) if match else None


# ---- the one scorer table ----------------------------------------------------------------------------------------
Scorer = Callable[[str, str, dict[str, Any]], Score]
SCORER_TABLE: dict[str, Scorer] = {
    "math": lambda text, gold, meta: score_math(text, gold, float(meta.get("rel_tol", 1e-6))),
    "choice": lambda text, gold, meta: score_choice(text, gold, str(meta.get("choices", "ABCD"))),
    "exact": lambda text, gold, meta: score_exact(text, gold),
    "niah": lambda text, gold, meta: score_niah(text, gold),
    "oolong_number": lambda text, gold, meta: score_oolong_number(text, gold),
    "pairs_f1": lambda text, gold, meta: score_pairs_f1(text, gold),
}
SCORERS = ("code", *SCORER_TABLE)   # "code" runs tests from meta and needs no gold answer


def score_task(text: str, gold: str | None, meta: dict[str, Any]) -> Score:
    """Score one answer by the task's `meta["scorer"]` (default "math")."""
    scorer = meta.get("scorer", "math")
    if scorer == "code":
        return score_code(text, meta["test"], meta["entry_point"], meta.get("code_prompt", ""),
                          float(meta.get("timeout", 10.0)))
    if scorer not in SCORER_TABLE:
        raise ValueError(f"unknown scorer '{scorer}'; available: {', '.join(SCORERS)}")
    if gold is None:
        return Score(False, extract_answer(text), "task has no gold answer")
    return SCORER_TABLE[scorer](text, gold, meta)
