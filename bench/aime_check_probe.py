"""Does aime's result check (methods/aime/check.py) tell a complete result from one with a step left out?

    python bench/aime_check_probe.py --base-url http://127.0.0.1:8016/v1 [--seed 0] [--n 10] [--show]

For each goal of the suite (bench/aime_goals.py, the development seed by default) it builds two actor logs by hand
in the shape `call_line` writes them: one whose calls do every step of the goal, and (except for the one-step
SQLite goals) one whose last computation is missing, its unchanged intermediate value written instead. It prints
whether the check lets each stand or sends it back. A probe of the check's question, not of the actors: real logs
hold failed calls, repeats and typed numbers.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from aime_goals import make_goals  # noqa: E402

from recursa.core.budget import Budget  # noqa: E402
from recursa.methods.aime.actor import call_line  # noqa: E402
from recursa.methods.aime.board import BoardTask  # noqa: E402
from recursa.methods.aime.check import check_result  # noqa: E402
from recursa.models.base import Sampling  # noqa: E402


def wrote(path: str, content: str) -> str:
    return call_line("write_file", {"path": path, "content": content}, f"wrote {path}")


def python(code: str, output: str) -> str:
    return call_line("run_python", {"code": code}, output)


def cases_for(goal: dict) -> list[tuple[str, list[str], str, str]]:
    """(label, log, summary, file content) for a complete result and, where the goal has two steps, a partial one."""
    want, kind, name = goal["expect"], goal["kind"], goal["file"]
    numbers = [float(n) for n in re.findall(r"(?<![\w.])\d+(?:\.\d+)?(?![\w.])", goal["goal"])]
    if kind == "csv-stats":
        total = python("import csv\nrows=list(csv.DictReader(open('shipments.csv')))\n"
                       "print(sum(int(r['crates']) for r in rows))", str(want[0]))
        largest = python("print(max(int(r['crates']) for r in rows if r['depot']==DEPOT))", str(want[1]))
        full, half = f"total: {want[0]}\nlargest: {want[1]}", f"total: {want[0]}\nlargest: 88"
        return [("right", [total, largest, wrote(name, full)], f"total {want[0]}, largest {want[1]}", full),
                ("partial", [total, wrote(name, half)], f"total {want[0]}, largest 88", half)]
    if kind == "sqlite":
        count = python("import sqlite3\nc=sqlite3.connect('stock.db')\nprint(c.execute('SELECT COUNT(*) FROM parts "
                       "WHERE bin=? AND qty<?', (BIN, LIMIT)).fetchone()[0])", str(want[0]))
        return [("right", [count, wrote(name, str(want[0]))], str(want[0]), str(want[0]))]
    if kind == "wiki":
        factor = int(numbers[-1])
        length = want[0] // factor
        found = [call_line("search_knowledge", {"query": "town river"}, "City of Abc: Abc is a river town on the "
                           "Fendor river."),
                 call_line("search_knowledge", {"query": "Fendor river"}, f"Fendor river: The Fendor river is "
                           f"{length} km long.")]
        return [("right", [*found, python(f"print({length}*{factor})", str(want[0])), wrote(name, str(want[0]))],
                 str(want[0]), str(want[0])),
                ("partial", [*found, wrote(name, str(length))], f"The Fendor river is {length} km long.", str(length))]
    if kind == "long-doc":
        add = int(numbers[-1])
        code = want[0] - add
        ask = call_line("ask_document", {"path": "archive.log", "question": "What is the access code of the vault?"},
                        f"The access code is {code}.")
        return [("right", [ask, python(f"open('{name}','w').write(str({code}+{add}))", "(no output)")],
                 str(want[0]), str(want[0])),
                ("partial", [ask, wrote(name, str(code))], f"The access code is {code}.", str(code))]
    amount = next(n for n in numbers if n != 2)          # flaky: "multiply <amount> by it ... 2 decimals"
    rate = round(want[0] / amount, 2)
    fetch = "from ledger import fetch_rates\nprint(fetch_rates())"
    tried = [python(fetch, "Error: ConnectionError: ledger service is warming up; call fetch_rates() again"),
             python(fetch, f"{{'AB': {rate}, 'CD': 1.5}}")]
    product = python(f"r=round({amount:g}*{rate},2)\nopen('{name}','w').write(str(r))\nprint(r)", str(want[0]))
    return [("right", [*tried, product], str(want[0]), str(want[0])),
            ("partial", [*tried, wrote(name, str(rate))], f"The rate is {rate}.", str(rate))]


def main() -> None:
    from recursa.models.openai_compat import OpenAIChatModel

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--model", default="qwen2.5-coder-1.5b")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n", type=int, default=10)
    parser.add_argument("--show", action="store_true", help="print the check's replies")
    args = parser.parse_args()
    model = OpenAIChatModel(model=args.model, base_url=args.base_url, max_concurrency=8, timeout=3600)
    goals = make_goals(Path(tempfile.mkdtemp()), args.n, args.seed)
    cases = [(goal, *case) for goal in goals for case in cases_for(goal)]

    def judge(case: tuple) -> tuple:
        goal, label, log, summary, content = case
        workspace = Path(tempfile.mkdtemp())
        (workspace / goal["file"]).write_text(content)
        task = BoardTask("1", goal["goal"], status="done", result=summary, pointers=[goal["file"]])
        missing, reply = check_result(model, goal["goal"], task, log, workspace, Sampling(max_tokens=384), Budget())
        return goal, label, missing, reply.text

    tally: dict[tuple[str, bool], int] = {}
    with ThreadPoolExecutor(8) as pool:
        for goal, label, missing, text in pool.map(judge, cases):
            tally[label, bool(missing)] = tally.get((label, bool(missing)), 0) + 1
            print(goal["id"], goal["kind"], label, "sent back" if missing else "stands", missing,
                  text if args.show else "")
    for label in ("right", "partial"):
        print(f"{label}: {tally.get((label, True), 0)} sent back, {tally.get((label, False), 0)} stand")


if __name__ == "__main__":
    main()
