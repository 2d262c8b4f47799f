"""Aime's offline goal suite: multi-step goals with checkable outcomes, generated from seeds, and its runner.

    python bench/aime_goals.py run --model qwen2.5-coder-1.5b --systems aime,solo --limit 10 --out runs/aime-bench
    python bench/aime_goals.py run --base-url http://127.0.0.1:8013/v1 --parallel 8 ...   # against recursa serve
    python bench/aime_goals.py make --out runs/aime-goals          # only write the goals (for the peer script)
    python bench/aime_goals.py report runs/aime-bench [runs/aime-peer ...] > bench/results/aime.md

Kinds (seeded, invented data; nothing here is known to any model):
  csv-stats   a CSV in the workspace → two statistics with Python → report.md
  sqlite      a SQLite table → a filtered count → answer.txt
  wiki        a JSON "wiki" of invented facts (--knowledge) → a two-hop fact → arithmetic → result.txt
  long-doc    a fact buried in a long log file (long-context toolkit) → arithmetic → code.txt
  flaky       a workspace tool (ledger.py) that fails on its first call → a product → total.txt
A goal succeeds when its output file holds the expected numbers. Rerunning `run` resumes: finished goals stay.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import random
import re
import shutil
import sqlite3
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

KINDS = ("csv-stats", "sqlite", "wiki", "long-doc", "flaky")
SYLLABLES = ["ka", "lo", "mi", "ren", "tu", "vo", "zan", "qui", "bel", "dor", "fen", "gar", "hul", "ix", "jor"]


def invented(rng: random.Random, parts: int = 3) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(parts)).capitalize()


def _csv_stats(rng: random.Random, ws: Path, kn: Path) -> dict:
    names = [invented(rng, 2) for _ in range(3)]
    rows = [(rng.choice(names), rng.randint(5, 95)) for _ in range(rng.randint(8, 14))]
    (ws / "shipments.csv").write_text("depot,crates\n" + "".join(f"{d},{c}\n" for d, c in rows))
    depot = names[0]
    mine = [c for d, c in rows if d == depot] or [0]
    total, largest = sum(c for _, c in rows), max(mine)
    goal = (f"shipments.csv has columns depot and crates. Compute the total of crates over all rows and the largest "
            f"crates value of depot {depot}, then write report.md with two lines: 'total: <total>' and "
            f"'largest: <largest>'.")
    return {"goal": goal, "file": "report.md", "expect": [total, largest]}


def _sqlite(rng: random.Random, ws: Path, kn: Path) -> dict:
    db = sqlite3.connect(ws / "stock.db")
    db.execute("CREATE TABLE parts (name TEXT, bin TEXT, qty INTEGER)")
    bins = [invented(rng, 1).upper() + str(rng.randint(1, 9)) for _ in range(3)]
    rows = [(invented(rng), rng.choice(bins), rng.randint(0, 60)) for _ in range(rng.randint(12, 20))]
    db.executemany("INSERT INTO parts VALUES (?, ?, ?)", rows)
    db.commit()
    db.close()
    limit, target = rng.randint(15, 40), bins[0]
    count = sum(1 for _, b, q in rows if b == target and q < limit)
    goal = (f"stock.db is a SQLite database with a table parts(name, bin, qty). Count the parts in bin {target} "
            f"whose qty is below {limit}, and write that count alone to answer.txt.")
    return {"goal": goal, "file": "answer.txt", "expect": [count]}


def _wiki(rng: random.Random, ws: Path, kn: Path) -> dict:
    wiki = {}
    for _ in range(6):
        city, river = invented(rng), invented(rng, 2)
        length = rng.randint(80, 900)
        wiki[f"City of {city}"] = f"{city} is a river town on the {river} river, founded by weavers."
        wiki[f"{river} river"] = f"The {river} river is {length} km long and freezes in winter."
    city_key = rng.choice([k for k in wiki if k.startswith("City of ")])
    city = city_key.removeprefix("City of ")
    river = wiki[city_key].split(" on the ")[1].split(" river")[0]
    length = int(re.search(r"(\d+) km", wiki[f"{river} river"]).group(1))
    factor = rng.randint(2, 7)
    (kn / "wiki.json").write_text(json.dumps(wiki, indent=1))
    goal = (f"The knowledge base says which river the town of {city} lies on and how long each river is. Find the "
            f"length in km of {city}'s river, multiply it by {factor}, and write the result alone to result.txt.")
    return {"goal": goal, "file": "result.txt", "expect": [length * factor], "knowledge": True}


def _long_doc(rng: random.Random, ws: Path, kn: Path) -> dict:
    vault, code = invented(rng), rng.randint(1000, 8999)
    lines = []
    for i in range(1400):
        lines.append(f"{i:05d} sensor {invented(rng, 2)} reading {rng.randint(0, 999)} status nominal")
    lines.insert(rng.randint(300, 1100), f"NOTE: the access code of vault {vault} is {code}.")
    (ws / "archive.log").write_text("\n".join(lines) + "\n")
    add = rng.randint(10, 99)
    goal = (f"archive.log is a very long log file. Somewhere in it a note gives the access code of vault {vault}. "
            f"Find that code, add {add} to it, and write the sum alone to code.txt.")
    return {"goal": goal, "file": "code.txt", "expect": [code + add]}


_LEDGER = '''"""The ledger service (local)."""
import os

RATES = {rates!r}


def fetch_rates():
    """Exchange rates per currency. The service needs one warm-up call."""
    if not os.path.exists("ledger_state.txt"):
        open("ledger_state.txt", "w").write("warm")
        raise ConnectionError("ledger service is warming up; call fetch_rates() again")
    return dict(RATES)
'''


def _flaky(rng: random.Random, ws: Path, kn: Path) -> dict:
    rates = {invented(rng, 1).upper() + invented(rng, 1).upper(): round(rng.uniform(0.2, 4.0), 2) for _ in range(4)}
    currency = rng.choice(list(rates))
    amount = rng.randint(20, 500)
    (ws / "ledger.py").write_text(_LEDGER.format(rates=rates))
    goal = (f"ledger.py in the workspace has a function fetch_rates() that returns exchange rates. Using Python, get "
            f"the rate of {currency}, multiply {amount} by it, and write the result rounded to 2 decimals alone to "
            f"total.txt.")
    return {"goal": goal, "file": "total.txt", "expect": [round(amount * rates[currency], 2)]}


MAKERS = {"csv-stats": _csv_stats, "sqlite": _sqlite, "wiki": _wiki, "long-doc": _long_doc, "flaky": _flaky}


def make_goals(out: Path, n: int, seed: int = 0) -> list[dict]:
    """Goal i is kind KINDS[i % 5] with its own seed; its workspace and knowledge folder live under out/goals/."""
    goals = []
    for i in range(n):
        kind = KINDS[i % len(KINDS)]
        rng = random.Random(f"{seed}-{i}")
        base = out / "goals" / f"g{i:02d}"
        ws, kn = base / "workspace", base / "knowledge"
        if base.exists():
            shutil.rmtree(base)
        ws.mkdir(parents=True)
        kn.mkdir()
        goal = {"id": f"g{i:02d}", "kind": kind, **MAKERS[kind](rng, ws, kn), "workspace": str(ws),
                "knowledge_dir": str(kn)}
        goals.append(goal)
    (out / "goals.json").write_text(json.dumps(goals, indent=1))
    return goals


def check(goal: dict, workspace: Path) -> bool:
    path = workspace / goal["file"]
    if not path.is_file():
        return False
    numbers = [float(x) for x in re.findall(r"-?\d+(?:\.\d+)?", path.read_text(errors="replace"))]
    return all(any(abs(x - want) <= 0.011 for x in numbers) for want in goal["expect"])


SYSTEMS = {"aime": {}, "solo": {"planner": "none", "max_steps": 12, "stall_steps": 6}}


def _trace_usage(path: str | None) -> dict:
    usage = {"tokens": 0, "model_calls": 0}
    if path and Path(path).is_file():
        for line in Path(path).read_text().splitlines():
            event = json.loads(line)
            if event.get("kind") == "model_call":
                usage["tokens"] += int(event.get("prompt_tokens", 0)) + int(event.get("completion_tokens", 0))
                usage["model_calls"] += int(event.get("model_calls", 1))
    return usage


def run_one(model, system: str, goal: dict, out: Path) -> dict:
    from recursa.core.errors import BackendUnreachable
    from recursa.methods.base import create

    ws = out / "work" / system / goal["id"]
    if ws.exists():
        shutil.rmtree(ws)
    shutil.copytree(goal["workspace"], ws)
    knowledge = goal["knowledge_dir"] if goal.get("knowledge") else None
    started = time.perf_counter()
    error, lost = None, False
    try:
        method = create("aime", model, workspace=str(ws), knowledge=knowledge, board_dir=str(out / "boards"),
                        **SYSTEMS[system])
        answer = method.run(goal["goal"], runs_dir=out / "runs")
        meta, trace, stopped, text = answer.meta, answer.trace_path, answer.stopped, answer.text
    except Exception as exc:  # noqa: BLE001 - a crash is a result here (the target is none)
        meta, trace, stopped, text, error = {}, None, None, "", f"{type(exc).__name__}: {exc}"
        lost = isinstance(exc, BackendUnreachable)
    return {"id": goal["id"], "kind": goal["kind"], "system": system, "success": check(goal, ws),
            "seconds": round(time.perf_counter() - started, 1), **_trace_usage(trace), "replans": meta.get("replans"),
            "guards": meta.get("guards"), "checks": meta.get("checks"),
            "invalid_replies": meta.get("invalid_replies"), "state": meta.get("state"),
            "stopped": stopped, "crash": error, "answer": text[:300], "board": meta.get("board_markdown", ""),
            "lost_to_server": lost}


def load_model(args: argparse.Namespace):
    """The embedded model in this process, or (--base-url) a server such as `recursa serve`, where several goals
    run at once (--parallel) and the server batches their requests."""
    if args.base_url:
        from recursa.models.openai_compat import OpenAIChatModel

        # one CPU serving many goals answers slowly: a request may wait its turn for minutes, not a failure
        return OpenAIChatModel(model=args.model, base_url=args.base_url, max_concurrency=max(8, args.parallel),
                               timeout=3600)
    from recursa.models import registry

    return registry.load(args.model)


def cmd_run(args: argparse.Namespace) -> None:
    out = Path(args.out)
    kinds = args.kinds.split(",") if args.kinds else list(KINDS)
    if set(kinds) - set(KINDS):
        raise SystemExit(f"unknown goal kinds {sorted(set(kinds) - set(KINDS))}; known: {', '.join(KINDS)}")
    goals = [goal for goal in make_goals(out, args.n, args.seed)[args.start:args.start + args.limit]
             if goal["kind"] in kinds]
    results = out / "results.jsonl"
    done = {(r["system"], r["id"]) for r in map(json.loads, results.read_text().splitlines())} \
        if results.exists() else set()
    model = load_model(args)
    # goal-major: an interrupted run still compares the systems on (nearly) the same goals
    todo = [(goal, system) for goal in goals for system in args.systems.split(",") if (system, goal["id"]) not in done]
    lock = threading.Lock()
    commit = _commit()

    def run_and_keep(goal: dict, system: str) -> None:
        record = {"model": args.model, "backend": args.base_url or "local", "commit": commit,
                  **run_one(model, system, goal, out)}
        if record.pop("lost_to_server"):   # the server went down: not the system's result; rerun
            print(f"not kept (server unreachable): {system} {goal['id']}", flush=True)
            return
        with lock, results.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
            print(json.dumps({k: record[k] for k in ("id", "kind", "system", "success", "seconds", "tokens")}),
                  flush=True)

    with ThreadPoolExecutor(max_workers=max(1, args.parallel)) as pool:
        for future in [pool.submit(run_and_keep, goal, system) for goal, system in todo]:
            future.result()


def _commit() -> str:
    """The checkout's commit, kept with each record: a suite resumed after a change mixes two."""
    import subprocess

    here = Path(__file__).parent
    done = subprocess.run(["git", "-C", str(here), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return done.stdout.strip() or "unknown"


def cmd_make(args: argparse.Namespace) -> None:
    print(f"{len(make_goals(Path(args.out), args.n, args.seed))} goals in {args.out}")


def _mean(rows: list[dict], key: str) -> float:
    return sum(r.get(key) or 0 for r in rows) / max(1, len(rows))


def _commits(rows: list[dict]) -> str:
    """Which code ran the records (a resumed suite can mix commits; the peer's records name none)."""
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.get("commit") or "-"] = counts.get(r.get("commit") or "-", 0) + 1
    return ", ".join(f"{commit} ×{n}" for commit, n in sorted(counts.items()))


def cmd_report(args: argparse.Namespace) -> None:
    from recursa.eval.report import wilson_interval

    records = [json.loads(line) for folder in args.folders
               for line in (Path(folder) / "results.jsonl").read_text().splitlines()]
    by: dict[tuple[str, str], list[dict]] = {}
    for r in records:
        by.setdefault((r["model"], r["system"]), []).append(r)
    print("| model | system | n | success | 95% CI | tokens/goal | calls/goal | s/goal | replans | "
          "guards (cap/repeat/stall) | invalid replies | crashes | commits |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for (model, system), rows in sorted(by.items()):
        n, wins = len(rows), sum(r["success"] for r in rows)
        low, high = wilson_interval(wins, n)
        guards = [sum((r.get("guards") or {}).get(g, 0) for r in rows) for g in ("step_cap", "repeat", "no_progress")]
        print(f"| {model} | {system} | {n} | {wins}/{n} = {wins / n:.0%} | {low:.0%}–{high:.0%} | "
              f"{_mean(rows, 'tokens'):.0f} | {_mean(rows, 'model_calls'):.1f} | {_mean(rows, 'seconds'):.0f} | "
              f"{sum(r.get('replans') or 0 for r in rows)} | {'/'.join(map(str, guards))} | "
              f"{sum(r.get('invalid_replies') or 0 for r in rows)} | {sum(bool(r.get('crash')) for r in rows)} | "
              f"{_commits(rows)} |")
    kinds = sorted({r["kind"] for r in records})
    print("\nSuccesses per kind:\n\n| model | system | " + " | ".join(kinds) + " |")
    print("|---|---|" + "---|" * len(kinds))
    for (model, system), rows in sorted(by.items()):
        cells = [f"{sum(r['success'] for r in rows if r['kind'] == k)}/{sum(r['kind'] == k for r in rows)}"
                 for k in kinds]
        print(f"| {model} | {system} | " + " | ".join(cells) + " |")
    _report_common_goals(by)
    _report_pairs(by)


def sign_test(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar (sign) test on the goals exactly one of two systems solved."""
    n = only_a + only_b
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(only_a, only_b) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def _report_pairs(by: dict[tuple[str, str], list[dict]]) -> None:
    """Each pair of systems of a model on the goals both finished: the paired comparison (which goals only one of
    them solved) is what tells two systems apart on a small suite, not two overlapping intervals."""
    print("\nPairs, on the goals both finished:\n\n| model | a | b | goals | a wins | b wins | only a | only b | "
          "sign test p |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (model, a), (other, b) in itertools.combinations(sorted(by), 2):
        if model != other:
            continue
        solved_a = {r["id"]: r["success"] for r in by[(model, a)]}
        solved_b = {r["id"]: r["success"] for r in by[(model, b)]}
        common = solved_a.keys() & solved_b.keys()
        only_a = sum(solved_a[g] and not solved_b[g] for g in common)
        only_b = sum(solved_b[g] and not solved_a[g] for g in common)
        print(f"| {model} | {a} | {b} | {len(common)} | {sum(solved_a[g] for g in common)} | "
              f"{sum(solved_b[g] for g in common)} | {only_a} | {only_b} | {sign_test(only_a, only_b):.2f} |")


def _report_common_goals(by: dict[tuple[str, str], list[dict]]) -> None:
    """Success on the goals that every system of a model finished: a run cut short finishes the cheap systems'
    goals first, so their rates over different goal sets do not compare."""
    from recursa.eval.report import wilson_interval

    print("\nOn the goals every system finished (per model):\n\n| model | goals | system | success | 95% CI |")
    print("|---|---|---|---|---|")
    for model in sorted({m for m, _ in by}):
        systems = sorted(s for m, s in by if m == model)
        common = set.intersection(*({r["id"] for r in by[(model, s)]} for s in systems))
        for system in systems:
            wins = sum(r["success"] for r in by[(model, system)] if r["id"] in common)
            low, high = wilson_interval(wins, len(common)) if common else (0.0, 1.0)
            print(f"| {model} | {len(common)} | {system} | {wins}/{len(common)} | {low:.0%}–{high:.0%} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run")
    run.add_argument("--model", default="qwen2.5-coder-0.5b")
    run.add_argument("--systems", default="aime,solo")
    run.add_argument("--start", type=int, default=0)
    run.add_argument("--limit", type=int, default=35)
    run.add_argument("--kinds", default="", help=f"only goals of these kinds, comma-separated ({', '.join(KINDS)})")
    run.add_argument("--base-url", help="an OpenAI-compatible server (e.g. recursa serve) instead of this process")
    run.add_argument("--parallel", type=int, default=1, help="goals run at once (useful with --base-url)")
    make = sub.add_parser("make")
    for p in (run, make):
        p.add_argument("--out", required=True)
        p.add_argument("--n", type=int, default=35)
        p.add_argument("--seed", type=int, default=0)
    report = sub.add_parser("report")
    report.add_argument("folders", nargs="+")
    args = parser.parse_args()
    {"run": cmd_run, "make": cmd_make, "report": cmd_report}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
