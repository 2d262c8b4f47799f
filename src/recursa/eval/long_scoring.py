"""Scorers of the long-context tasks (pure functions): needle found, 0.75^|error| for counts, F1 over pairs.

Each returns a `Score` whose `correct` is the strict verdict and whose `detail` starts with "score=<0..1>", the
graded value the RLM paper reports (`graded()` reads it back).
"""

from __future__ import annotations

import re

from recursa.eval.scoring import Score, extract_answer, parse_number

LONG_CONTEXT_SCORERS = ("niah", "oolong_number", "pairs_f1")
_PAIR = re.compile(r"\(\s*(\d+)\s*,\s*(\d+)\s*\)|\[\s*(\d+)\s*,\s*(\d+)\s*\]")


def score_niah(text: str, gold: str) -> Score:
    found = gold.strip() in (text or "").replace(",", "")
    return Score(found, gold if found else extract_answer(text), f"score={float(found):.3f}")


def score_oolong_number(text: str, gold: str) -> Score:
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
    predicted, expected = parse_pairs(text), parse_pairs(gold)
    f1 = pair_f1(predicted, expected)
    shown = ", ".join(f"({a}, {b})" for a, b in sorted(predicted)[:20])
    return Score(f1 == 1.0, shown, f"score={f1:.3f}")


def score_long_context(scorer: str, text: str, gold: str) -> Score:
    return {"niah": score_niah, "oolong_number": score_oolong_number, "pairs_f1": score_pairs_f1}[scorer](text, gold)


def graded(detail: str | None) -> float | None:
    """The graded score a long-context scorer put in `detail`."""
    match = re.match(r"score=([0-9.]+)", detail or "")
    return float(match.group(1)) if match else None
