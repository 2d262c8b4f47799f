"""Model-written code bent by its own decoding constraint, made valid before it runs.

The code argument's pattern (python.py) keeps `"` out of the code and makes it end in a newline, so the string can
only close at the end of a line. A model that wants to close the JSON right after its last line (`...)"}`) finds
the quote masked and writes the brace first: `print(3143+23)}`, then the newline and the quote. Such trailing
braces are dropped. A model that means Python's `\n` inside a string literal writes JSON's `\n`, which decodes to
a line break, so `print('a\nb')` arrives with the literal cut in two: such a break becomes the escape again. With
`"` masked, a message that quotes a word comes as `print('no 'rates' key')`: the line's string gets double
quotes. Some replies drop the line breaks of a block but keep its indentation (`def f():    if x:        return
1`): each run of four or more spaces after code (not in a string or comment) becomes a line break with that
indentation. As with nested f-strings (fstrings.py), code changes only when it does not compile as written and
compiles after. Code wrapped in prose and a Markdown fence runs as the fence's code.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from recursa.methods.aime.toolkits.fstrings import compiles, requote_nested_fstrings


def _chunks(code: str) -> Iterator[tuple[str, str]]:
    """`code` cut into chunks (an escape pair, a quote delimiter, a comment, or one character), each with the quote
    of the string literal left open after it ("" outside any). A one-line literal cut by a line break stays open."""
    quote, i = "", 0
    while i < len(code):
        char = code[i]
        if quote and char == "\\" and i + 1 < len(code):
            chunk = code[i:i + 2]
        elif quote and code.startswith(quote, i):
            chunk, quote = quote, ""
        elif not quote and char == "#":
            end = code.find("\n", i)
            chunk = code[i:len(code) if end < 0 else end]
        elif not quote and char in "'\"":
            quote = char * 3 if code.startswith(char * 3, i) else char
            chunk = quote
        else:
            chunk = char
        yield chunk, quote
        i += len(chunk)


def rejoin_broken_strings(code: str) -> str:
    """`code` with each line break inside a one-line string literal written as the escape `\\n`."""
    return "".join("\\n" if chunk == "\n" and len(quote) == 1 else chunk for chunk, quote in _chunks(code))


def _error_line(code: str) -> int | None:
    try:
        compile(code, "<code>", "exec")
    except SyntaxError as error:
        return error.lineno
    except ValueError:
        return None
    return None


def _requote_line(line: str) -> Iterator[str]:
    """The line with one pair of its single quotes made double, widest pairs first, each enclosing a quote."""
    quotes = [i for i, char in enumerate(line) if char == "'" and (i == 0 or line[i - 1] != "\\")]
    for first in quotes:
        for last in reversed(quotes):
            if last - first > 1 and "'" in line[first + 1:last]:
                yield f'{line[:first]}"{line[first + 1:last]}"{line[last + 1:]}'


def requote_quoting_strings(code: str, lines_to_fix: int = 3) -> str:
    """`code` with the string of each failing line that holds single quotes double-quoted, where that makes the
    line compile (a later line may fail next: up to `lines_to_fix` lines)."""
    if '"' in code:
        return code
    for _ in range(lines_to_fix):
        number = _error_line(code)
        lines = code.split("\n")
        if number is None or not 0 < number <= len(lines):
            return code
        for candidate in _requote_line(lines[number - 1]):
            fixed = "\n".join([*lines[:number - 1], candidate, *lines[number:]])
            moved = _error_line(fixed)
            if moved is None or moved > number:
                code = fixed
                break
        else:
            return code
    return code


COLLAPSED_BREAK = re.compile(r"(?<=\S) {4,}(?=[^\s#])")


def restore_collapsed_lines(code: str) -> str:
    """`code` with each run of four or more spaces that follows code on a line, outside a string literal or a
    comment, made a line break indented by that run."""
    lines = []
    for line in code.split("\n"):
        in_code = _code_offsets(line)
        for match in reversed([m for m in COLLAPSED_BREAK.finditer(line) if m.start() in in_code]):
            line = f"{line[:match.start()]}\n{match.group()}{line[match.end():]}"
        lines.append(line)
    return "\n".join(lines)


def _code_offsets(line: str) -> set[int]:
    """The offsets of `line` that lie in code: outside any string literal and before any comment."""
    offsets, at = {0}, 0
    for chunk, quote in _chunks(line):
        if chunk.startswith("#") and not quote:
            break
        at += len(chunk)
        if not quote:
            offsets.add(at)
    return offsets


FENCED = re.compile(r"```[ \t]*(?:python|py)?[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL)


def fenced_block(code: str) -> str | None:
    """The code of the first Markdown code fence in `code`, when the model wrapped its code in prose (`To do this,
    we can use Python: ```python ...```); None when there is no fence."""
    match = FENCED.search(code)
    return match.group(1).rstrip() + "\n" if match and match.group(1).strip() else None


def _candidates(code: str) -> Iterator[str]:
    body = code.rstrip()
    trimmed = body.rstrip("}").rstrip() + "\n"
    fenced = fenced_block(code)
    for source in dict.fromkeys([code, trimmed, *([fenced] if fenced else [])]):
        yield requote_nested_fstrings(source)
        yield requote_nested_fstrings(rejoin_broken_strings(source))
        yield requote_quoting_strings(rejoin_broken_strings(source))
        yield restore_collapsed_lines(source)


def repair_code(code: str) -> str:
    """`code` as written when it compiles; otherwise the first repair that compiles (nested f-strings requoted,
    trailing braces dropped, broken string literals rejoined, strings that quote requoted, collapsed line breaks
    restored, the code of a Markdown fence in prose), or the code as written."""
    if compiles(code):
        return code
    return next((candidate for candidate in _candidates(code) if compiles(candidate)), code)
