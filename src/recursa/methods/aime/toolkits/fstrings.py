"""Single-quoted f-strings that quote inside their braces, made valid before Python 3.12.

The schema constraint keeps `"` out of model-written code (python.py), so a model formatting a dict value writes
`f'total: {row['crates']}'`: valid from Python 3.12 on (PEP 701), a SyntaxError on 3.11. Giving such an f-string
double quotes, `f"total: {row['crates']}"`, means the same on every version. Code is changed only when it does
not compile as written and compiles after the change.
"""

from __future__ import annotations

import re

_FSTRING_START = re.compile(r"(?<!\w)([rRbB]?[fF][rRbB]?)'(?!'')")


def compiles(code: str) -> bool:
    try:
        compile(code, "<code>", "exec")
    except (SyntaxError, ValueError):
        return False
    return True


def _string_end(code: str, start: int) -> int:
    """Index after the plain string literal opening at `start` (a `'`)."""
    if code.startswith("'''", start):
        end = code.find("'''", start + 3)
        return len(code) if end < 0 else end + 3
    i = start + 1
    while i < len(code) and code[i] not in "'\n":
        i += 2 if code[i] == "\\" else 1
    return min(i + 1, len(code))


def _fstring_end(code: str, i: int) -> tuple[int | None, bool]:
    """(index of the closing quote or None, whether a braced expression holds a quoted string) for the f-string
    whose body starts at `i`."""
    depth, nested = 0, False
    while i < len(code):
        char = code[i]
        if char == "\\":
            i += 2
            continue
        if char == "\n":
            return None, nested
        if depth == 0:
            if char == "'":
                return i, nested
            if char == "{":
                if code.startswith("{{", i):
                    i += 2
                    continue
                depth = 1
        elif char in "{}":
            depth += 1 if char == "{" else -1
        elif char == "'":
            close = code.find("'", i + 1)
            if close < 0 or "\n" in code[i:close]:
                return None, nested
            nested, i = True, close
        i += 1
    return None, nested


def _requote(code: str) -> str:
    out, i = [], 0
    while i < len(code):
        match = _FSTRING_START.match(code, i)
        if code[i] == "#":
            end = code.find("\n", i)
            end = len(code) if end < 0 else end
        elif match:
            close, nested = _fstring_end(code, match.end())
            if close is not None and nested:
                out.append(f'{match.group(1)}"{code[match.end():close]}"')
                i = close + 1
                continue
            end = len(code) if close is None else close + 1
        elif code[i] == "'":
            end = _string_end(code, i)
        else:
            end = i + 1
        out.append(code[i:end])
        i = end
    return "".join(out)


def requote_nested_fstrings(code: str) -> str:
    """`code`, or, when it does not compile, the same code with its quote-nesting f-strings double-quoted if that
    makes it compile."""
    if "'" not in code or compiles(code):
        return code
    fixed = _requote(code)
    return fixed if fixed != code and compiles(fixed) else code
