"""Prompt templates of the RLM (data in `recursa/prompts/rlm.md`) and what the root model is told about `context`."""

from __future__ import annotations

import json
import re
from functools import lru_cache
from importlib import resources
from typing import Any

from recursa.core.errors import ConfigError
from recursa.models.base import ChatModel

PREVIEW_CHARS = 200


@lru_cache(maxsize=1)
def sections() -> dict[str, str]:
    """`@@ name` sections of rlm.md (lines before the first section are comments)."""
    text = resources.files("recursa.prompts").joinpath("rlm.md").read_text(encoding="utf-8")
    found: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith("@@ "):
            current = found.setdefault(line[3:].strip(), [])
        elif current is not None:
            current.append(line)
    needed = {"system", "tools_subcalls", "tools_rlm_query", "strategy_subcalls", "strategy_no_subcalls",
              "example_search", "example_count", "example_classify", "example_batched", "first_user", "next_user",
              "hint_subcalls", "no_code", "too_early", "final_request", "sub_system"}
    missing = needed - found.keys()
    if missing:
        raise ConfigError(f"recursa/prompts/rlm.md lacks sections: {', '.join(sorted(missing))}")
    return {name: "\n".join(lines).strip("\n") for name, lines in found.items()}


def render(name: str, **values: Any) -> str:
    return sections()[name].format(**values)


def context_type(context: Any) -> str:
    if isinstance(context, str):
        return "string"
    if isinstance(context, list):
        return "list"
    if isinstance(context, dict):
        return "dict"
    return type(context).__name__


def context_text(context: Any) -> str:
    """The context as the REPL helpers see it when searching (lists joined by lines, dicts as JSON)."""
    if isinstance(context, str):
        return context
    if isinstance(context, list):
        return "\n".join(item if isinstance(item, str) else json.dumps(item) for item in context)
    return json.dumps(context)


def context_shape(context: Any) -> str:
    if isinstance(context, str):
        return f" in {context.count(chr(10)) + 1} lines"
    if isinstance(context, list):
        lengths = [len(item) if isinstance(item, str) else len(json.dumps(item)) for item in context[:10]]
        more = f" (first item lengths {lengths})" if context else ""
        return f", {len(context)} items{more}"
    if isinstance(context, dict):
        keys = list(context)[:10]
        return f", keys {keys}{' ...' if len(context) > 10 else ''}"
    return ""


def context_chars(context: Any) -> int:
    return len(context_text(context)) if context is not None else 0


def preview(context: Any, chars: int = PREVIEW_CHARS) -> str:
    text = context_text(context) if context is not None else ""
    return text[:chars] + (" ..." if len(text) > chars else "")


def chunk_chars(sub_model: ChatModel, sample: str, max_chunk_tokens: int, sub_max_tokens: int) -> int:
    """Characters per chunk so one chunk + instructions + answer fits the sub-model's window.

    Uses the measured characters-per-token of the context itself (code, numbers and prose differ a lot), capped at
    `max_chunk_tokens`: small CPU models read short chunks faster and more accurately than a full window.
    """
    window_room = max(256, sub_model.context_window - sub_max_tokens - 256)
    tokens = min(window_room, max_chunk_tokens)
    sample = sample[:4000]
    ratio = len(sample) / max(1, sub_model.count_tokens(sample)) if sample.strip() else 4.0
    return max(500, int(tokens * min(ratio, 6.0) * 0.9))


_COUNTING = re.compile(r"(how many|how often|count|what is the (total )?number of|list|(find|give|name) (all|every))\b",
                       re.IGNORECASE)


def system_prompt(*, context: Any, chunk: int, sub_calls: bool, recursive: bool, question: str = "") -> str:
    tools = ""
    if sub_calls:
        tools = render("tools_subcalls", chunk_chars=chunk) + "\n"
        if recursive:
            tools += render("tools_rlm_query") + "\n"
    counting = render("example_classify" if sub_calls else "example_count")
    examples = [render("example_search"), counting]
    if question and _COUNTING.match(question.strip()):
        examples.reverse()  # small models copy the first example: put the one that fits the question first
    if sub_calls:
        examples.append(render("example_batched"))
    strategy = render("strategy_subcalls" if sub_calls else "strategy_no_subcalls")
    return render("system", context_type=context_type(context), context_chars=context_chars(context),
                  chunk_chars=chunk, tools=tools, strategy=strategy, examples="\n\n".join(examples))


_QUOTED = re.compile("'([^']{2,40})'|\"([^\"]{2,40})\"")
# Plain English function and question words: never worth a search.
_STOPWORDS = frozenset("""
a an the and or but not no nor of in on at to for from by with without about into onto over under between among
is are was were be been being am do does did has have had having will would shall should can could may might must
what which who whom whose when where why how many much this that these those it its they them their there here
he she his her we our you your i me my all any both each every some few more most other such than then too very
only own same so just also
list name find give tell show say count
""".split())  # noqa: SIM905 - a word list reads better as text
# Sentences that only say how to write the answer; their example values are no search terms.
_FORMAT_SENTENCE = re.compile(r"^\W*(answer|reply|respond|format|give (your|the) answer|write (your|the) answer|"
                              r"return|use the format)\b", re.IGNORECASE)


def _content_sentences(question: str) -> list[str]:
    sentences = [s for s in re.split(r"(?<=[.?!])\s+", question.strip()) if s]
    kept = [s for s in sentences if not _FORMAT_SENTENCE.match(s)]
    return kept or sentences


def key_words(question: str, limit: int = 4) -> list[str]:
    """Words of the question worth searching for: quoted phrases, names, numbers, then the longest other words.

    Small models tend to grep for the preview's first words instead of the question's; naming the search terms
    in the prompt fixes most of that. Sentences about the answer's format are left out.
    """
    words: list[str] = []
    names: list[str] = []
    numbers: list[str] = []
    plain: list[str] = []
    for sentence in _content_sentences(question):
        words += [a or b for a, b in re.findall(_QUOTED, sentence)]
        tokens = re.findall(r"[A-Za-z][\w'-]*|\d[\d-]*", sentence)
        names += [t for i, t in enumerate(tokens) if i > 0 and t[0].isupper() and t.lower() not in _STOPWORDS]
        numbers += [t for t in tokens if any(c.isdigit() for c in t) and t not in names]   # numbers and ids
        plain += [t.lower() for t in tokens if not any(c.isdigit() for c in t) and t.lower() not in _STOPWORDS
                  and len(t) > 3]
    words += numbers + names   # ids and numbers are the most specific search terms
    if not words:
        # Plain words are weak search terms: used only when the question names nothing specific, longest first.
        order = {w: i for i, w in reversed(list(enumerate(plain)))}
        words = sorted(order, key=lambda w: (-len(w), order[w]))
    unique: list[str] = []
    for word in words:
        if word.lower() not in {u.lower() for u in unique}:
            unique.append(word)
    return unique[:limit]


def first_user(question: str, context: Any) -> str:
    words = key_words(question)
    # One concrete first step: small models otherwise join all key words with "|" and get every line.
    first = words[0] if words else ""
    pattern = re.escape(first) if re.search(r"[.^$*+?{}\[\]|()\\]", first) else first
    first_step = f"rows = grep({pattern!r})" if words else "print(context[:1000])"
    return render("first_user", question=question, context_type=context_type(context),
                  context_chars=context_chars(context), context_shape=context_shape(context),
                  preview=preview(context), key_words=", ".join(repr(w) for w in words), first_step=first_step)
