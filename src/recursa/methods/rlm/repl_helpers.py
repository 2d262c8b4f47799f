"""Runs INSIDE the sandboxed REPL at every (re)start (sent as setup code, never imported by Recursa).

Loads `context` from the work directory and defines the helpers the RLM prompt documents. The model calls
(`llm_query`, ...) and `_final` (receives the answer text) are parent callbacks installed by the worker.
"""

import json as _json
import os as _os
import re as _re

if _os.path.exists("context.txt"):
    with open("context.txt", encoding="utf-8") as _f:
        context = _f.read()
elif _os.path.exists("context.json"):
    with open("context.json", encoding="utf-8") as _f:
        context = _json.load(_f)
else:
    context = ""

CHUNK_CHARS = int(globals().get("_chunk_chars", 8000))


def _as_text(value):
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "\n".join(v if isinstance(v, str) else _json.dumps(v) for v in value)
    return _json.dumps(value)


def _text_and_number(args, text, number, default):
    """Small models write grep(p, context) or chunks(context, 5000): accept text and number in either place."""
    for value in args:
        if isinstance(value, (str, list, dict)):
            text = value
        elif isinstance(value, int):
            number = value
    return _as_text(context if text is None else text), int(number or default)


_TOO_MANY = 20
_LINE_CHARS = 300
_warned = set()


def _hit_span(source, match, window):
    """The match's whole line when that line is short (record-like data), else `window` characters each side."""
    start = source.rfind("\n", 0, match.start()) + 1
    end = source.find("\n", match.end())
    end = len(source) if end < 0 else end
    if end - start <= max(_LINE_CHARS, 2 * window + match.end() - match.start()):
        return start, end, True
    return max(0, match.start() - window), min(len(source), match.end() + window), False


def grep(pattern, *args, window=100, limit=None, text=None):
    """Every match of the case-insensitive regex `pattern` in `text` (default: context): the matching line, or a
    snippet around the match in a long line. One hit per line, so `len(grep(...))` counts matching lines."""
    source, window = _text_and_number(args, text, window, 100)
    hits, last_line = [], -1
    for match in _re.finditer(pattern, source, _re.IGNORECASE):
        start, end, whole_line = _hit_span(source, match, window)
        if whole_line and start == last_line:
            continue  # another match in this line: the line is already a hit
        hits.append(source[start:end])
        last_line = start if whole_line else -1
        if limit and len(hits) >= limit:
            break
    if not limit and len(hits) > _TOO_MANY and pattern not in _warned:
        # Alternatives joined with | match much more than each word alone; reading only the first hits misses most.
        _warned.add(pattern)
        print(f"(grep: {len(hits)} matches for {pattern!r}. To find one fact, search for the rarest key word alone or"
              " a longer exact phrase; to count, keep the lines that meet every condition of the question.)")
        words = [w for w in pattern.split("|") if w.strip()]
        if len(words) > 1:
            print(f"({pattern!r} keeps lines with ANY of these words. For lines with ALL of them, filter in Python: "
                  f"rows = [line for line in grep({words[0]!r}) if {words[1]!r} in line])")
    return hits


def chunks(*args, size=None, text=None):
    """`text` (default: context) cut into pieces of at most `size` characters, at line breaks where possible."""
    source, size = _text_and_number(args, text, size, CHUNK_CHARS)
    pieces, start = [], 0
    while start < len(source):
        end = min(len(source), start + size)
        if end < len(source):
            cut = source.rfind("\n", start + size // 2, end)
            end = cut + 1 if cut > 0 else end
        pieces.append(source[start:end])
        start = end
    return pieces


def FINAL_VAR(name):  # noqa: N802 - the protocol's name
    """Answer with the value of the variable called `name` (a variable itself is accepted too)."""
    if isinstance(name, str) and name.strip().strip("'\"") in globals():
        value = globals()[name.strip().strip("'\"")]
    else:
        value = name
    return FINAL(value)


def FINAL(answer):  # noqa: N802 - the protocol's name
    """Give the final answer (any value; it is converted to text). Ends the run."""
    _final(answer if isinstance(answer, str) else repr(answer) if isinstance(answer, (set, tuple)) else str(answer))  # noqa: F821
    print("FINAL answer recorded.")


def SHOW_VARS():  # noqa: N802 - the protocol's name
    """Your variables and their types (helpers and modules left out)."""
    hidden = {"context", "CHUNK_CHARS", "grep", "chunks", "FINAL_VAR", "SHOW_VARS", "FINAL", "llm_query",
              "llm_query_batched", "rlm_query"}
    rows = {}
    for key, value in globals().items():
        if key.startswith("_") or key in hidden or type(value).__name__ in ("module", "function", "type"):
            continue
        rows[key] = type(value).__name__
    print(rows or "no variables yet")
    return None
