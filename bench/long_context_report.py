"""Table of long-context results: `recursa bench` folders and `bench/rlms_peer.py` output, graded as the paper.

    python bench/long_context_report.py runs/lc-*/results.jsonl runs/rlms-peer/rlms_results.jsonl

Per (task, context chars, method): n, accuracy (strict) with its 95% Wilson interval, mean graded score (niah 0/1,
0.75^|error|, pair F1), mean seconds, model calls, sub-calls (prompts the REPL sent to the sub-model) and tokens per
task. `--by-family` adds one row per (model, method, size) over all tasks given, with a 95% interval of the mean
graded score (t-interval, shown only for n >= 5).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from collections import defaultdict
from pathlib import Path

from recursa.eval.report import wilson_interval
from recursa.eval.scoring import graded

_T95 = {5: 2.776, 6: 2.571, 7: 2.447, 8: 2.365, 9: 2.306, 10: 2.262, 12: 2.201, 16: 2.131, 20: 2.093, 30: 2.045}


def sub_calls(record: dict) -> int:
    """Sub-model prompts of an `rlm` run (its own and its child RLMs'); 0 for other methods."""
    return sum(int(a.get("model_calls", 0)) for a in record.get("agents", [])
               if a.get("role", "").split("/")[-1] == "sub")


def rows(paths: list[Path]) -> list[dict]:
    out = []
    for path in paths:
        for line in path.read_text(encoding="utf-8").splitlines():
            r = json.loads(line)
            chars = r.get("context_chars") or int(r["id"].rsplit("-", 2)[0].rsplit("-", 1)[1])
            score = r.get("score", graded(r.get("detail")))
            out.append({"model": r.get("model", "?"), "task": r["task"], "chars": chars, "method": r["method"],
                        "correct": bool(r["correct"]),
                        "score": score or 0.0, "seconds": r["seconds"], "calls": r.get("model_calls", 0),
                        "sub_calls": r.get("sub_calls", sub_calls(r)),
                        "tokens": r.get("prompt_tokens", 0) + r.get("completion_tokens", 0),
                        "error": r.get("error")})
    return out


def mean_interval(values: list[float]) -> str:
    """Mean graded score with a 95% t-interval (n >= 5), clipped to [0, 1]."""
    mean = sum(values) / len(values)
    if len(values) < 5:
        return f"{mean:.2f}"
    t = _T95.get(len(values), next((v for k, v in sorted(_T95.items(), reverse=True) if k <= len(values)), 2.0))
    half = t * statistics.stdev(values) / math.sqrt(len(values))
    return f"{mean:.2f} [{max(0.0, mean - half):.2f}, {min(1.0, mean + half):.2f}]"


def table(groups: dict[tuple, list[dict]], first: str) -> None:
    print(f"| model | {first} | chars | method | n | acc [95% CI] | score | s/task | calls/task | sub-calls/task | "
          "tokens/task | errors |")
    print("|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for (model, task, chars, method), rs in sorted(groups.items()):
        n, correct = len(rs), sum(r["correct"] for r in rs)
        low, high = wilson_interval(correct, n)
        print(f"| {model} | {task} | {chars:,} | {method} | {n} | {correct / n:.2f} [{low:.2f}, {high:.2f}] | "
              f"{mean_interval([r['score'] for r in rs])} | {sum(r['seconds'] for r in rs) / n:.0f} | "
              f"{sum(r['calls'] for r in rs) / n:.1f} | {sum(r['sub_calls'] for r in rs) / n:.1f} | "
              f"{sum(r['tokens'] for r in rs) / n:,.0f} | {sum(1 for r in rs if r['error'])} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", type=Path)
    parser.add_argument("--by-family", action="store_true", help="also pool the tasks given per (model, size, method)")
    args = parser.parse_args()
    records = rows(args.paths)
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        groups[(r["model"], r["task"], r["chars"], r["method"])].append(r)
    table(groups, "task")
    if args.by_family:
        pooled: dict[tuple, list[dict]] = defaultdict(list)
        for r in records:
            pooled[(r["model"], "all given", r["chars"], r["method"])].append(r)
        print()
        table(pooled, "tasks")


if __name__ == "__main__":
    main()
