"""Why the peer's steps failed: each action step's error in a run of `bench/aime_peer.py`, sorted into kinds.

    python bench/aime_peer_errors.py runs/aime21/peer-noplan [more run folders]

Reads each goal's kept agent log (`logs/<id>.json`) and prints, per goal and for all goals together, how many
action steps ended in an error of each kind, and the names the model called or imported that its interpreter
refused (tools it made up, modules outside the authorised imports). Stdlib only.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from pathlib import Path

KINDS = (   # (kind, pattern over smolagents' error message): the first that matches
    ("unknown function or tool", re.compile(r"Forbidden function evaluation: '([^']+)'")),
    ("import refused", re.compile(r"Import (?:of|from) ([\w.]+) is not allowed")),
    ("syntax error", re.compile(r"SyntaxError|IndentationError|Code parsing failed")),
    ("no code block", re.compile(r"regex pattern .* was not found|no code", re.IGNORECASE)),
    ("step cap", re.compile(r"Reached max steps")),
    ("name not defined", re.compile(r"The variable `([^`]+)` is not defined|'([^']+)' is not defined")),
)


def error_kind(message: str) -> tuple[str, str | None]:
    """(kind, the refused name where the kind has one)."""
    for kind, pattern in KINDS:
        match = pattern.search(message)
        if match:
            return kind, next((group for group in match.groups() if group), None)
    return "other", None


def step_errors(log: list[dict]) -> list[str]:
    messages = []
    for step in log:
        error = step.get("error")
        if error:
            messages.append(error.get("message", "") if isinstance(error, dict) else str(error))
    return messages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="output folders of bench/aime_peer.py")
    args = parser.parse_args()
    total_kinds, total_names = Counter(), Counter()
    for run in args.runs:
        records = [json.loads(line) for line in (Path(run) / "results.jsonl").open()]
        results = {record["id"]: record for record in records}
        for goal_id, record in sorted(results.items()):
            log_path = Path(run) / "logs" / f"{goal_id}.json"
            if not log_path.exists():
                continue
            kinds, names = Counter(), Counter()
            for message in step_errors(json.loads(log_path.read_text())):
                kind, named = error_kind(message)
                kinds[kind] += 1
                names.update([named] if named else [])
            total_kinds.update(kinds)
            total_names.update(names)
            outcome = "solved" if record["success"] else "failed"
            print(f"{run} {goal_id} ({record['kind']}, {outcome}, {record['model_calls']} calls): "
                  + ", ".join(f"{kind} {n}" for kind, n in kinds.most_common())
                  + (f"; refused names: {', '.join(names)}" if names else ""))
    print("all goals: " + ", ".join(f"{kind} {n}" for kind, n in total_kinds.most_common()))
    print("refused names, most often first: " + ", ".join(f"{name} {n}" for name, n in total_names.most_common(12)))


if __name__ == "__main__":
    main()
