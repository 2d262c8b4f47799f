"""Reading the root model's reply: code blocks (with recovery for small models) and FINAL / FINAL_VAR answers.

Small models often fence code as ```python instead of ```repl, forget the closing fence when they hit the token
limit, wrap code in prose or write no fence at all. We accept all of that, and repair what we safely can (prompt
markers, indentation, a truncated last line); what stays broken is run anyway so the model sees the SyntaxError.
"""

from __future__ import annotations

import ast
import re
import textwrap
from dataclasses import dataclass

CODE_LANGS = {"repl", "python", "py", "python3", ""}
_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
_FINAL_VAR = re.compile(r"^\s*FINAL_VAR\(\s*['\"]?([A-Za-z_]\w*)['\"]?\s*\)", re.MULTILINE)
_FINAL = re.compile(r"^\s*FINAL\((.*)\)\s*$", re.MULTILINE | re.DOTALL)
_CODE_HINT = re.compile(r"(^|\n)\s*(import |from \w+ import |for |if |while |def |print\(|[A-Za-z_]\w*\s*=[^=]|"
                        r"[A-Za-z_][\w.]*\()")


@dataclass
class CodeBlock:
    code: str
    repaired: str | None = None     # what was changed to make it run, if anything
    unfenced: bool = False          # found outside any ``` fence


@dataclass
class FinalAnswer:
    kind: str                       # "text" or "var"
    value: str


def parses(code: str) -> bool:
    try:
        ast.parse(code)
    except (SyntaxError, ValueError):
        return False
    return True


def repair(code: str) -> tuple[str, str | None]:
    """Fix common small-model slips; returns (code, note about the fix or None)."""
    if parses(code):
        return code, None
    lines = code.splitlines()
    if any(line.lstrip().startswith((">>> ", "... ")) for line in lines):
        stripped = "\n".join(line.lstrip()[4:] if line.lstrip().startswith((">>> ", "... ")) else line
                             for line in lines)
        if parses(stripped):
            return stripped, "removed '>>>' prompt markers"
    dedented = textwrap.dedent(code)
    if dedented != code and parses(dedented):
        return dedented, "fixed the indentation"
    # A reply cut off at the token limit leaves a broken last line or open block: drop lines from the end.
    for cut in range(len(lines) - 1, max(0, len(lines) // 2) - 1, -1):
        candidate = "\n".join(lines[:cut])
        if candidate.strip() and parses(candidate):
            return candidate, f"dropped {len(lines) - cut} unfinished line(s) at the end"
    # Prose lines mixed into the code: drop lines that are neither code nor blank, if that makes it parse.
    kept = [line for line in lines if not _looks_like_prose(line)]
    if len(kept) != len(lines) and parses("\n".join(kept)):
        return "\n".join(kept), "dropped lines of prose"
    return code, None


def _looks_like_prose(line: str) -> bool:
    text = line.strip()
    if not text or text.startswith("#"):
        return False
    words = text.split()
    return (len(words) >= 4 and text[0].isupper() and not _CODE_HINT.search(text)
            and not any(ch in text for ch in "=()[]{}"))


def extract_code(text: str) -> list[CodeBlock]:
    """Code blocks of a reply: fenced ones first; else unfenced code if the reply looks like a program."""
    blocks = []
    for match in _FENCE.finditer(text):
        lang, body = match.group(1).lower(), match.group(2)
        if lang not in CODE_LANGS or not body.strip():
            continue
        code, note = repair(body.strip("\n"))
        blocks.append(CodeBlock(code, note))
    if blocks or "```" in text:
        return blocks
    return _unfenced(text)


def _unfenced(text: str) -> list[CodeBlock]:
    """The longest run of lines that parses as a program with at least one call or assignment."""
    lines = [line for line in text.splitlines() if not _FINAL.match(line) and not _FINAL_VAR.match(line)]
    if not any(_CODE_HINT.search(line) for line in lines):
        return []
    best = ""
    for start in range(len(lines)):
        if not _CODE_HINT.search(lines[start]):
            continue
        for end in range(len(lines), start, -1):
            candidate = "\n".join(lines[start:end]).strip()
            if len(candidate) <= len(best):
                break
            if parses(candidate) and _does_something(candidate):
                best = candidate
                break
    return [CodeBlock(best, unfenced=True)] if best else []


def _does_something(code: str) -> bool:
    tree = ast.parse(code)
    return any(isinstance(node, (ast.Call, ast.Assign, ast.AugAssign, ast.For, ast.Import, ast.ImportFrom))
               for node in ast.walk(tree))


def outside_code(text: str) -> str:
    return _FENCE.sub("\n", text)


def find_final(text: str) -> FinalAnswer | None:
    """FINAL(...) / FINAL_VAR(name) written as text, outside code blocks."""
    prose = outside_code(text)
    match = _FINAL_VAR.search(prose)
    if match:
        return FinalAnswer("var", match.group(1))
    match = _FINAL.search(prose)
    if match:
        value = match.group(1)
        # Greedy to allow parentheses inside; stop at the first line that closes the call.
        for line_end in range(len(value)):
            if value[line_end] == "\n" and value[:line_end].rstrip().endswith(")"):
                value = value[:line_end].rstrip()[:-1]
                break
        return FinalAnswer("text", _unquote(value.strip()))
    return None


def _unquote(value: str) -> str:
    try:
        literal = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return value
    return literal if isinstance(literal, str) else str(literal)
