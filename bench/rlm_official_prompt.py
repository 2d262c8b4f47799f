"""Recursa's `rlm` loop with the official rlms 0.1.3 system prompt next to the same loop with its own prompt.

    bench-slot python bench/rlm_official_prompt.py --tasks s-niah,oolong-lite --sizes 32000 --limit 2 \
        [--model qwen2.5-coder-1.5b] [--prompts ours,official] [--max-iterations 30] [--max-seconds 600]
    python bench/rlm_official_prompt.py --report runs/rlm-official-prompt/*.jsonl

Separates the scaffold from the prompt: `bench/rlms_peer.py` runs rlms' scaffold with its prompt; this runs ours
with rlms' prompt. The prompt is the system message rlms sends in `bench/rlms_peer.py --system-prompt window` mode
(its package prompt and orchestrator addendum, with the size claims replaced by the model's real window), taken
from the installed package through the rlms venv. One edit makes it true of our REPL: rlms submits by setting an
`answer` dict (`answer["ready"] = True`), which our REPL does not have; those sentences say `FINAL(...)` instead.
Everything else (REPL objects, strategy, budgets) is rlms' text. Results append to `<out>/<model>.jsonl` (resumes:
finished (method, task) pairs are skipped); each run's trace goes to `<out>/traces/`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rlms_peer import RLMS_PYTHON  # noqa: E402 - the sibling bench script

_SUBMIT_EDITS = (  # rlms' submission protocol -> ours; each phrase must occur (checked)
    ('- `answer`: dict initialized to `{"content": "", "ready": False}`. To submit, set `answer["content"]` to the '
     'final answer and `answer["ready"] = True` inside a ```repl``` block.',
     "- `FINAL(value)`: to submit, call `FINAL(your final answer)` inside a ```repl``` block; it ends the run."),
    ('flip `answer["ready"] = True`', "call `FINAL(...)`"),
)


def official_prompt(window: int) -> str:
    """rlms' system message (window mode) with its submission protocol said in our REPL's terms."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "prompt.txt"
        subprocess.run([RLMS_PYTHON, str(Path(__file__).with_name("rlms_peer.py")), "--dump-system-prompt",
                        str(path), "--system-prompt", "window", "--window", str(window)], check=True,
                       env={"PATH": "/usr/bin:/bin"})
        text = path.read_text(encoding="utf-8")
    for old, new in _SUBMIT_EDITS:
        if old not in text:
            raise SystemExit(f"rlms prompt changed: {old!r} not found")
        text = text.replace(old, new)
    if 'answer["' in text:
        raise SystemExit("rlms prompt still mentions the answer dict")
    return text


def _trace_summary(path: str | None) -> dict:
    """First replies of the root model, read back from our trace (rlm_iteration spans)."""
    replies = []
    if path and Path(path).exists():
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            event = json.loads(line)  # span attributes sit at the top level of each record
            if event.get("kind") == "rlm_iteration" and "reply" in event and event.get("depth", 0) == 0:
                replies.append({"reply": str(event["reply"])[:160], "code_blocks": event.get("code_blocks")})
    return {"first_replies": replies[:3], "last_reply": replies[-1]["reply"] if replies else ""}


def solve_one(model, task, label: str, options: dict, max_seconds: float | None, traces: Path) -> dict:
    from recursa.core.budget import Budget
    from recursa.core.trace import Tracer
    from recursa.eval.scoring import graded, score_task
    from recursa.methods.base import create

    budget = Budget(max_seconds=max_seconds, max_depth=options.get("max_depth", 1),
                    max_iterations=options["max_iterations"])
    method = create("rlm", model, budget=budget, **options)
    started, error = time.perf_counter(), None
    with Tracer.start(runs_dir=traces) as tracer:
        try:
            answer = method.solve(task)
            text, meta, usage, stopped = answer.text, answer.meta, answer.usage, answer.stopped
        except Exception as exc:  # noqa: BLE001 - a failed run is a result too
            text, meta, usage, stopped = "", {}, tracer.totals.as_dict(), None
            error = f"{type(exc).__name__}: {exc}"[:300]
    score = score_task(text, task.answer, task.meta)
    return {"id": task.id, "method": label,
            "model": model.name, "gold": task.answer, "answer": text, "correct": score.correct,
            "score": graded(score.detail), "seconds": round(time.perf_counter() - started, 2),
            "model_calls": usage.get("model_calls", 0), "prompt_tokens": usage.get("prompt_tokens", 0),
            "completion_tokens": usage.get("completion_tokens", 0), "error": error, "stopped": stopped,
            **{k: meta.get(k) for k in ("iterations", "code_blocks", "block_errors", "sub_calls", "final_source")},
            **_trace_summary(str(tracer.path))}


def run(args: argparse.Namespace) -> None:
    from recursa.eval.tasks import load_tasks
    from recursa.models import registry

    model = registry.load(args.model)
    prompts = {"ours": None, "official": official_prompt(model.context_window)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "official-system-prompt.txt").write_text(prompts["official"], encoding="utf-8")
    path = args.out / f"{model.name}.jsonl"
    done = {(r["method"], r["id"]) for r in map(json.loads, path.read_text().splitlines())} if path.exists() else set()
    for task_name in args.tasks.split(","):
        for size in (int(s) for s in args.sizes.split(",")):
            for task in load_tasks(task_name, limit=args.limit, seed=args.seed, context_chars=size):
                for prompt in args.prompts.split(","):
                    label = f"rlm[prompt={prompt};max_iterations={args.max_iterations}]"
                    if (label, task.id) in done:
                        continue
                    options = {"max_iterations": args.max_iterations}
                    if prompts[prompt] is not None:
                        options["system_prompt"] = prompts[prompt]
                    record = solve_one(model, task, label, options, args.max_seconds, args.out / "traces")
                    record.update(task=task_name, context_chars=size)
                    with open(path, "a", encoding="utf-8") as out:
                        out.write(json.dumps(record) + "\n")
                    print(json.dumps({k: record[k] for k in ("id", "method", "answer", "correct", "seconds",
                                                             "iterations", "code_blocks", "final_source")}),
                          flush=True)


def report(paths: list[Path]) -> None:
    groups: dict[tuple, list[dict]] = {}
    for path in paths:
        for r in map(json.loads, path.read_text(encoding="utf-8").splitlines()):
            groups.setdefault((r["model"], r["task"], r["context_chars"], r["method"]), []).append(r)
    print("| model | task | chars | method | n | correct | score | calls/task | tokens/task | answered by FINAL |"
          " turns/task | blocks run/task | blocks failed/task | sub-calls | s/task |")
    print("|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for (model, task, chars, method), rows in sorted(groups.items()):
        n = len(rows)

        def mean(key: str, rows: list[dict] = rows, n: int = n) -> float:
            return sum(r.get(key) or 0 for r in rows) / n
        finals = sum(1 for r in rows if (r.get("final_source") or "").startswith("FINAL"))
        print(f"| {model} | {task} | {chars:,} | {method} | {n} | {sum(r['correct'] for r in rows)}/{n} | "
              f"{mean('score'):.2f} | {mean('model_calls'):.1f} | "
              f"{sum(r['prompt_tokens'] + r['completion_tokens'] for r in rows) / n:,.0f} | {finals} | "
              f"{mean('iterations'):.1f} | {mean('code_blocks'):.1f} | {mean('block_errors'):.1f} | "
              f"{mean('sub_calls'):.1f} | {mean('seconds'):.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="s-niah,oolong-lite")
    parser.add_argument("--sizes", default="32000")
    parser.add_argument("--limit", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default="qwen2.5-coder-0.5b")
    parser.add_argument("--prompts", default="ours,official")
    parser.add_argument("--max-iterations", type=int, default=30, help="rlms' default, for both prompts")
    parser.add_argument("--max-seconds", type=float, default=None, help="Wall limit per task (a Budget).")
    parser.add_argument("--out", type=Path, default=Path("runs/rlm-official-prompt"))
    parser.add_argument("--report", type=Path, nargs="+", default=None)
    args = parser.parse_args()
    if args.report:
        report(args.report)
    else:
        run(args)


if __name__ == "__main__":
    main()
