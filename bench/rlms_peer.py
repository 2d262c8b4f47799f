"""The official RLM (`rlms==0.1.3`, its own venv) on Recursa's long-context tasks, served by `recursa serve`.

    python -m venv /work/rlms-venv && /work/rlms-venv/bin/pip install rlms==0.1.3     # once, never into Recursa's venv
    python bench/rlms_peer.py --task s-niah --context-chars 32000 --limit 2 [--port 8011] [--max-iterations 6]

Run with Recursa's Python: it generates the tasks (same seeds as `recursa bench`), starts `recursa serve` on
loopback unless `--base-url` points at a running one, then runs this same file with the rlms venv's Python
(`--worker`, which imports only `rlm`), and scores the answers with Recursa's scorers. Results go to
`<out>/rlms_results.jsonl` (accuracy, graded score, seconds, model calls and tokens as rlms counts them).
Note: rlms' default "local" environment runs the model's code in-process without a sandbox (its design).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

RLMS_PYTHON = "/work/rlms-venv/bin/python"


def worker(tasks_path: Path, out_path: Path, base_url: str, model: str, max_iterations: int, max_depth: int,
           max_tokens: int) -> None:
    """Runs inside the rlms venv."""
    from rlm import RLM

    with open(out_path, "a", encoding="utf-8") as out:
        for line in tasks_path.read_text(encoding="utf-8").splitlines():
            task = json.loads(line)
            rlm = RLM(backend="vllm", backend_kwargs={"base_url": base_url, "model_name": model, "api_key": "local",
                                                      "sampling_args": {"max_tokens": max_tokens, "temperature": 0}},
                      environment="local", max_depth=max_depth, max_iterations=max_iterations)
            started = time.perf_counter()
            error, response, usage = None, "", {}
            try:
                result = rlm.completion(task["context"], root_prompt=task["question"])
                response = result.response if hasattr(result, "response") else str(result)
                usage = result.usage_summary.to_dict() if hasattr(result, "usage_summary") else {}
            except Exception as exc:  # noqa: BLE001 - a failed run is a result too
                error = f"{type(exc).__name__}: {exc}"
            record = {"id": task["id"], "answer": response, "error": error, "usage": usage,
                      "seconds": round(time.perf_counter() - started, 2)}
            out.write(json.dumps(record) + "\n")
            out.flush()
            print(json.dumps({k: record[k] for k in ("id", "answer", "error", "seconds")})[:300], flush=True)


def _wait_for(url: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url + "/models", timeout=2)
            return
        except OSError:
            time.sleep(1)
    raise SystemExit(f"recursa serve did not come up at {url}")


def _totals(usage: dict) -> tuple[int, int, int]:
    models = usage.get("model_usage_summaries", usage)
    calls = sum(m.get("total_calls", 0) for m in models.values() if isinstance(m, dict))
    tokens_in = sum(m.get("total_input_tokens", 0) for m in models.values() if isinstance(m, dict))
    tokens_out = sum(m.get("total_output_tokens", 0) for m in models.values() if isinstance(m, dict))
    return calls, tokens_in, tokens_out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="s-niah")
    parser.add_argument("--context-chars", type=int, default=32_000)
    parser.add_argument("--limit", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default="qwen2.5-coder-0.5b")
    parser.add_argument("--port", type=int, default=8011)
    parser.add_argument("--base-url", default=None, help="A running OpenAI-compatible server (skip starting one).")
    parser.add_argument("--max-iterations", type=int, default=6)
    parser.add_argument("--max-depth", type=int, default=1)
    parser.add_argument("--max-tokens", type=int, default=512)
    parser.add_argument("--out", type=Path, default=Path("runs/rlms-peer"))
    parser.add_argument("--worker", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--results", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.results, args.base_url, args.model, args.max_iterations, args.max_depth,
               args.max_tokens)
        return

    from recursa.eval.long_scoring import graded
    from recursa.eval.scoring import score_task
    from recursa.eval.tasks import load_tasks

    tasks = load_tasks(args.task, limit=args.limit, seed=args.seed, context_chars=args.context_chars)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"{args.task}-{args.context_chars}-{args.seed}"
    tasks_path, raw_path = args.out / f"{stem}.tasks.jsonl", args.out / f"{stem}.raw.jsonl"
    tasks_path.write_text("".join(json.dumps({"id": t.id, "question": t.question, "context": t.context}) + "\n"
                                  for t in tasks), encoding="utf-8")
    raw_path.unlink(missing_ok=True)
    server = None
    base_url = args.base_url
    if base_url is None:
        base_url = f"http://127.0.0.1:{args.port}/v1"
        server = subprocess.Popen([sys.executable, "-m", "recursa.cli", "serve", "--model", args.model, "--port",
                                   str(args.port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(base_url, 180)
        subprocess.run([RLMS_PYTHON, __file__, "--worker", str(tasks_path), "--results", str(raw_path),
                        "--base-url", base_url, "--model", args.model, "--max-iterations", str(args.max_iterations),
                        "--max-depth", str(args.max_depth), "--max-tokens", str(args.max_tokens)],
                       check=True, env={**os.environ, "PYTHONPATH": ""})
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
    by_id = {t.id: t for t in tasks}
    with open(args.out / "rlms_results.jsonl", "a", encoding="utf-8") as results:
        for line in raw_path.read_text(encoding="utf-8").splitlines():
            raw = json.loads(line)
            task = by_id[raw["id"]]
            score = score_task(raw["answer"] or "", task.answer, task.meta)
            calls, tokens_in, tokens_out = _totals(raw["usage"])
            record = {"task": args.task, "context_chars": args.context_chars, "id": task.id, "method": "rlms-0.1.3",
                      "model": args.model,
                      "gold": task.answer, "answer": raw["answer"], "correct": score.correct,
                      "score": graded(score.detail), "seconds": raw["seconds"], "model_calls": calls,
                      "prompt_tokens": tokens_in, "completion_tokens": tokens_out, "error": raw["error"]}
            results.write(json.dumps(record) + "\n")
            print(json.dumps(record)[:400])


if __name__ == "__main__":
    main()
