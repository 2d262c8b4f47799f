"""The final answer in a model's text: the last `\\boxed{...}`, then "#### n", then "the (final) answer is ...",
then "Answer: ...", then the last number. Shared by `Method.run` (the `extracted` field) and the scorers."""

from __future__ import annotations

import re

_BOX_START = re.compile(r"\\(?:boxed|fbox)\s*\{")
_HASHES = re.compile(r"####\s*([^\n]+)")
ANSWER_IS = re.compile(r"(?:final\s+answer|answer)\s*(?:is|:|=)\s*[:\s]*([^\n]+)", re.IGNORECASE)
NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?|[-+]?\.\d+")


def boxed_contents(text: str) -> list[str]:
    """Contents of every `\\boxed{...}` / `\\fbox{...}`, with nested braces balanced (unclosed boxes are skipped)."""
    found = []
    for match in _BOX_START.finditer(text):
        depth, i = 1, match.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:
            found.append(text[match.end():i - 1].strip())
    return found


def _strip_trailing(answer: str) -> str:
    answer = answer.strip().strip("*").strip()
    return re.sub(r"[\s.;,]+$", "", answer).strip("$").strip()


def extract_answer(text: str | None) -> str | None:
    """The final answer a model gave, as a string (None when it gave none)."""
    if not text:
        return None
    boxes = [b for b in boxed_contents(text) if b]
    if boxes:
        return boxes[-1]
    for pattern in (_HASHES, ANSWER_IS):
        matches = pattern.findall(text)
        if matches and _strip_trailing(matches[-1]):
            return _strip_trailing(matches[-1])
    numbers = NUMBER.findall(text)
    return numbers[-1] if numbers else None


