"""Model-written code bent by its own decoding constraint, made valid before it runs.

The code argument's pattern (python.py) keeps `"` out of the code and makes it end in a newline, so the string can
only close at the end of a line. A model that wants to close the JSON right after its last line (`...)"}`) finds
the quote masked and writes the brace first: `print(3143+23)}`, then the newline and the quote. Such trailing
braces are dropped. As with nested f-strings (fstrings.py), code changes only when it does not compile as written
and compiles after the change.
"""

from __future__ import annotations

from recursa.methods.aime.toolkits.fstrings import compiles, requote_nested_fstrings


def repair_code(code: str) -> str:
    """`code` with nested f-strings requoted and, where only they stop it compiling, its trailing braces dropped."""
    fixed = requote_nested_fstrings(code)
    if compiles(fixed):
        return fixed
    body = code.rstrip()
    trimmed = body.rstrip("}").rstrip()
    if trimmed != body:
        candidate = requote_nested_fstrings(trimmed + "\n")
        if compiles(candidate):
            return candidate
    return fixed
