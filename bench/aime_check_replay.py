"""Replay the result check's recorded verdicts of earlier aime runs under `check.step_missing`: every verdict it
changes, with the goal's outcome, and how many verdicts were replayed.

    python bench/aime_check_replay.py runs/aime16/aime runs/aime17/aime runs/aime18/aime
"""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from recursa.methods.aime.check import GoalStep, not_done, step_missing  # noqa: E402


def _check_replies(trace: Path) -> list[str]:
    replies = []
    for line in trace.read_text().splitlines():
        reply = json.loads(line).get("reply") or ""
        if reply.startswith('{"steps"'):
            replies.append(reply)
    return replies


def replay(run_dir: Path) -> int:
    """Print each changed verdict of one suite's aime run; return the number of verdicts replayed."""
    goals = {g["goal"]: g["id"] for g in json.loads((run_dir / "goals.json").read_text())}
    outcome = {r["id"]: r["success"] for r in map(json.loads, (run_dir / "results.jsonl").read_text().splitlines())}
    replayed = 0
    for db in sorted(run_dir.glob("boards/*/board.sqlite")):
        con = sqlite3.connect(db)
        goal_id = goals.get(json.loads(con.execute("select value from meta where key='goal'").fetchone()[0]))
        logs = [json.loads(log or "[]") for (log,) in
                con.execute("select log from reports where status='done' order by id")]
        trace = run_dir / "runs" / "traces" / f"{db.parent.name}.jsonl"
        if not trace.exists():
            continue
        for i, reply in enumerate(_check_replies(trace)):    # the i-th check judged the i-th done report
            try:
                steps = [GoalStep(**step) for step in json.loads(reply)["steps"]]
            except (ValueError, KeyError, TypeError):
                continue
            replayed += 1
            log = logs[i] if i < len(logs) else []
            before = [s.step for s in steps if not_done(s.done_by)]
            after = [s.step for s in steps if step_missing(s, log)]
            if before != after:
                state = {True: "right", False: "wrong"}.get(outcome.get(goal_id), "unfinished")
                print(f"{run_dir.parent.name} {goal_id} ({state} in the end) check {i}: missing {before} -> {after}")
    return replayed


if __name__ == "__main__":
    total = sum(replay(Path(arg)) for arg in sys.argv[1:])
    print(f"{total} verdicts replayed")
