"""Model-written f-strings that nest single quotes (valid only from Python 3.12 on) run in the sandbox."""

from __future__ import annotations

import pytest

from recursa.core.budget import Budget
from recursa.methods.aime.toolkits import python
from recursa.methods.aime.toolkits.base import ToolEnv
from recursa.methods.aime.toolkits.fstrings import requote_nested_fstrings

TRIPLE = "'" * 3


@pytest.mark.parametrize("code, expected", [
    ("print(f'largest: {max(r['n'] for r in rows)}')\n", "print(f\"largest: {max(r['n'] for r in rows)}\")\n"),
    ("x = {'a': 1}  # it's a dict\nprint(f'{x['a']} and {x['a']:>3} {{literal}}', 'plain')\n",
     "x = {'a': 1}  # it's a dict\nprint(f\"{x['a']} and {x['a']:>3} {{literal}}\", 'plain')\n"),
    ("name = 'if'\nprint(rf'{name} {d['k']}', f'{name}')\n", "name = 'if'\nprint(rf\"{name} {d['k']}\", f'{name}')\n"),
    (f"s = {TRIPLE}f'{{a['b']}}{TRIPLE} + f'{{d['k']}}'\n",          # the first is plain text, left alone
     f"s = {TRIPLE}f'{{a['b']}}{TRIPLE} + f\"{{d['k']}}\"\n"),
])
def test_quote_nesting_fstrings_get_double_quotes(code, expected):
    compile(expected, "<code>", "exec")
    try:
        compile(code, "<code>", "exec")
        expected = code                  # Python 3.12 or later: valid as written, so left alone
    except SyntaxError:
        pass
    assert requote_nested_fstrings(code) == expected


@pytest.mark.parametrize("code", [
    "print(f'{x}')\n",                   # compiles as written
    "print(f'{x['a']}'\n",               # another error stays, so nothing changes
])
def test_other_code_is_left_as_written(code):
    assert requote_nested_fstrings(code) == code


def test_the_python_tool_runs_a_quote_nesting_fstring(tmp_path):
    kit = python.toolkit(ToolEnv(tmp_path, None, Budget()))
    try:
        tool = kit.tools[0]
        code = "row = {'crates': 83}\nprint(f'largest: {row['crates']}')\n"
        assert "largest: 83" in tool.run(tool.args(code=code))
    finally:
        kit.close()


def test_a_brace_the_masked_quote_left_after_the_last_line_is_dropped():
    from recursa.methods.aime.toolkits.code_repair import repair_code

    assert repair_code("print(3143+23)}\n") == "print(3143+23)\n"
    assert repair_code("x = 1\nprint(x)}}\n") == "x = 1\nprint(x)\n"
    assert repair_code("d = {'a': 1}\n") == "d = {'a': 1}\n"              # valid: untouched
    assert repair_code("d = {'a': 1\n") == "d = {'a': 1\n"                # no trailing brace to drop
    assert repair_code("print(1))}\n") == "print(1))}\n"                  # still invalid: untouched
    assert repair_code("print(f'{row['a']}')}\n") == "print(f\"{row['a']}\")\n"  # both repairs together


def test_a_line_break_that_cut_a_string_literal_becomes_the_escape_again():
    from recursa.methods.aime.toolkits.code_repair import rejoin_broken_strings, repair_code

    cut = "t = 5\nprint(f'total: {t}\nlargest: {t}')\n"         # JSON's "\n" meant Python's
    fixed = repair_code(cut)
    assert fixed == "t = 5\nprint(f'total: {t}\\nlargest: {t}')\n"
    namespace: dict = {}
    exec(compile(fixed.replace("print", "out = "), "<t>", "exec"), namespace)
    assert namespace["out"] == "total: 5\nlargest: 5"
    assert repair_code("s = '''a\nb'''\n") == "s = '''a\nb'''\n"          # a triple-quoted string may span lines
    assert repair_code("x = 1  # it's\ny = 'b'\n") == "x = 1  # it's\ny = 'b'\n"   # a quote in a comment
    assert repair_code("print('open\n") == "print('open\n"                  # no repair compiles: as written
    assert rejoin_broken_strings("a = 'x\\'y\nz'\n") == "a = 'x\\'y\\nz'\n"  # an escaped quote does not close
    assert repair_code("print('a\nb')}\n") == "print('a\\nb')\n"            # with a trailing brace too


def test_a_string_that_quotes_a_word_in_single_quotes_gets_double_quotes():
    from recursa.methods.aime.toolkits.code_repair import repair_code

    code = "try:\n    x = 1\nexcept KeyError:\n    print('Error: no 'rates' key.')\n"
    assert repair_code(code) == "try:\n    x = 1\nexcept KeyError:\n    print(\"Error: no 'rates' key.\")\n"
    two = "print('the 'a' one')\nprint(d['k'], 'the 'b' one')\n"
    assert repair_code(two) == "print(\"the 'a' one\")\nprint(d['k'], \"the 'b' one\")\n"
    assert repair_code("print('a' 'b)\n") == "print('a' 'b)\n"              # nothing compiles: as written


def test_a_block_whose_line_breaks_were_dropped_but_its_indentation_kept_is_restored():
    from recursa.methods.aime.toolkits.code_repair import repair_code

    collapsed = ("RATES = {'A': 1.5}\ndef rates():    if not RATES:        raise ValueError('no    rates')"
                 "    return dict(RATES)\nprint(rates()['A'])\n")
    fixed = repair_code(collapsed)
    assert fixed == ("RATES = {'A': 1.5}\ndef rates():\n    if not RATES:\n        raise ValueError('no    rates')"
                     "\n    return dict(RATES)\nprint(rates()['A'])\n")      # the spaces in the string stay
    assert repair_code("x = 1    # aligned comment\n") == "x = 1    # aligned comment\n"   # valid: untouched
    assert repair_code("print(1)    print(2)\n") == "print(1)    print(2)\n"   # no indentation fits: as written
    apostrophe = 'if True:    print("it\'s")    x = 1\n'          # a quote of the other kind inside a string
    assert repair_code(apostrophe) == 'if True:\n    print("it\'s")\n    x = 1\n'
    commented = "def f():    x = 1    return x  # see     total\n"       # spaces in a comment stay
    assert repair_code(commented) == "def f():\n    x = 1\n    return x  # see     total\n"


def test_code_wrapped_in_prose_and_a_markdown_fence_runs_as_the_fences_code():
    from recursa.methods.aime.toolkits.code_repair import repair_code

    wrapped = ("To double it we can use Python. The length is 642 km. Here's the code:\n\n```python\n"
               "length = 642\nprint(length * 5)\n```\nThis prints 3210.\n")
    assert repair_code(wrapped) == "length = 642\nprint(length * 5)\n"
    assert repair_code("Here it is:\n```\nprint(2)\n") == "print(2)\n"             # a fence never closed
    assert repair_code("x = '```python\\nprint(1)```'\n") == "x = '```python\\nprint(1)```'\n"   # valid: untouched
    assert repair_code("Nothing to run here.\n") == "Nothing to run here.\n"
