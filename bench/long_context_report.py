"""Table of long-context results: `recursa bench` folders and `bench/rlms_peer.py` output, graded as the paper.

    python bench/long_context_report.py runs/lc-*/results.jsonl runs/rlms-peer/rlms_results.jsonl

Per (task, context chars, method): n, accuracy (strict), mean graded score (niah 0/1, 0.75^|error|, pair F1),
mean seconds, model calls and tokens per task.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path


def rows(paths: list[Path]) -> list[dict]:
    from recursa.eval.scoring import graded

    out = []
    for path in paths:
        for line in path.read_text(encoding="utf-8").splitlines():
            r = json.loads(line)
            chars = r.get("context_chars") or int(r["id"].rsplit("-", 2)[0].rsplit("-", 1)[1])
            score = r.get("score", graded(r.get("detail")))
            out.append({"model": r.get("model", "?"), "task": r["task"], "chars": chars, "method": r["method"],
                        "correct": bool(r["correct"]),
                        "score": score or 0.0, "seconds": r["seconds"], "calls": r.get("model_calls", 0),
                        "tokens": r.get("prompt_tokens", 0) + r.get("completion_tokens", 0),
                        "error": r.get("error")})
    return out


def main() -> None:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows([Path(p) for p in sys.argv[1:]]):
        groups[(r["model"], r["task"], r["chars"], r["method"])].append(r)
    print("| model | task | chars | method | n | acc | score | s/task | calls/task | tokens/task | errors |")
    print("|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for (model, task, chars, method), rs in sorted(groups.items()):
        n = len(rs)
        print(f"| {model} | {task} | {chars:,} | {method} | {n} | {sum(r['correct'] for r in rs) / n:.2f} | "
              f"{sum(r['score'] for r in rs) / n:.2f} | {sum(r['seconds'] for r in rs) / n:.0f} | "
              f"{sum(r['calls'] for r in rs) / n:.1f} | {sum(r['tokens'] for r in rs) / n:,.0f} | "
              f"{sum(1 for r in rs if r['error'])} |")


if __name__ == "__main__":
    main()
