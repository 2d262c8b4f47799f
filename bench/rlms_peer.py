"""The official RLM (`rlms==0.1.3`, its own venv) on Recursa's long-context tasks, served by `recursa serve`.

    python -m venv /work/rlms-venv && /work/rlms-venv/bin/pip install rlms==0.1.3     # once, never into Recursa's venv
    bench-slot python bench/rlms_peer.py --task s-niah --context-chars 32000 --limit 2 [--model qwen2.5-coder-1.5b]
    python bench/rlms_peer.py --report runs/rlms-peer/*/rlms_results.jsonl            # the markdown table

rlms runs with its own defaults (30 iterations, depth 1, the "local" REPL, its default prompt and orchestrator
addendum), greedy sampling (`--temperature`, default 0) and the server's reply cap (1024 tokens unless
`--max-tokens`). `--system-prompt window` (the default) passes rlms' own system prompt with its size claims
(sub-LLM window "500K chars", "~100K characters per prompt") replaced by the served model's real window, read from
`/v1/models`; `--system-prompt default` leaves the package prompt alone. The prompt text is taken from the
installed package at run time, not copied here. Note: rlms' first user message still says "~100k tokens" (built
in, not part of the system prompt).

Run with Recursa's Python: it generates the tasks (same seeds as `recursa bench`), starts `recursa serve` on
loopback unless `--base-url` points at a running one, then runs this same file with the rlms venv's Python
(`--worker`, which imports only `rlm`), and scores the answers with Recursa's scorers. Each task's `RLMLogger`
trajectory goes to `<out>/trajectories/`; results (score, seconds, calls and tokens as rlms counts them, and a
summary of the trajectory: answered or fell back, REPL blocks run, why blocks failed or never ran) are appended
to `<out>/rlms_results.jsonl`, and the summaries alone to `--summary-dir`.
Note: rlms' "local" environment runs the model's code in-process without a sandbox (its design).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

RLMS_PYTHON = "/work/rlms-venv/bin/python"

# (phrase in rlms 0.1.3's prompt, replacement with the real window W in tokens); C = a char budget derived from W.
_WINDOW_EDITS = (
    ("Sub-LLM context window ≈ 500K chars.",
     "Sub-LLM context window: {W:,} tokens, prompt and reply together (roughly {C}K characters)."),
    ("Your own context window is small.",
     "Your own context window is small: {W:,} tokens, and the whole conversation so far counts against it."),
    ("a useful rough ceiling is ~100K characters per prompt",
     "a useful rough ceiling is ~{P}K characters per prompt (the window is {W:,} tokens)"),
    ("(e.g. a context far larger than ~20 × 100K chars)", "(e.g. a context far larger than ~20 × {P}K chars)"),
)


# ---- inside the rlms venv -----------------------------------------------------------------------------------------
def system_prompt(mode: str, window: int) -> tuple[str | None, bool]:
    """(custom_system_prompt, orchestrator) for rlms.RLM; `window` mode edits the package prompt's size claims."""
    if mode == "default":
        return None, True
    from rlm.utils import prompts

    text = prompts.RLM_SYSTEM_PROMPT + "\n\n" + prompts.ORCHESTRATOR_ADDENDUM  # what rlms sends by default
    numbers = {"W": window, "C": round(window * 3 / 1000), "P": round(window * 2 / 1000)}
    for old, new in _WINDOW_EDITS:
        if text.count(old) != 1:
            raise SystemExit(f"rlms prompt changed: {old!r} found {text.count(old)} times")
        text = text.replace(old, new.format(**numbers))
    return text, False  # the addendum is already inside


def rendered_system_prompt(mode: str, window: int) -> str:
    """The system message rlms sends (no custom tools)."""
    from rlm.utils import prompts

    custom, orchestrator = system_prompt(mode, window)
    text = (custom or prompts.RLM_SYSTEM_PROMPT).format(custom_tools_section="")
    return f"{text}\n\n{prompts.ORCHESTRATOR_ADDENDUM}" if orchestrator else text


def worker(args: argparse.Namespace) -> None:
    """Runs inside the rlms venv: one RLM per task, its trajectory logged by RLMLogger."""
    from rlm import RLM
    from rlm.logger import RLMLogger

    custom, orchestrator = system_prompt(args.system_prompt, args.window)
    sampling = {"temperature": args.temperature}
    if args.max_tokens:
        sampling["max_tokens"] = args.max_tokens
    with open(args.results, "a", encoding="utf-8") as out:
        for line in args.worker.read_text(encoding="utf-8").splitlines():
            task = json.loads(line)
            logger = RLMLogger(log_dir=str(args.trajectories), file_name=task["id"])
            rlm = RLM(backend="vllm", backend_kwargs={"base_url": args.base_url, "model_name": args.model,
                                                      "api_key": "local", "sampling_args": sampling},
                      environment="local", max_depth=args.max_depth, max_iterations=args.max_iterations,
                      custom_system_prompt=custom, orchestrator=orchestrator, logger=logger,
                      max_timeout=args.max_timeout)
            started = time.perf_counter()
            error, response, usage = None, "", {}
            try:
                result = rlm.completion(task["context"], root_prompt=task["question"])
                response = result.response if hasattr(result, "response") else str(result)
                usage = result.usage_summary.to_dict() if hasattr(result, "usage_summary") else {}
            except Exception as exc:  # noqa: BLE001 - a failed run is a result too
                error = f"{type(exc).__name__}: {exc}"[:500]
            record = {"id": task["id"], "answer": response, "error": error, "usage": usage,
                      "seconds": round(time.perf_counter() - started, 2), "trajectory": logger.log_file_path}
            out.write(json.dumps(record) + "\n")
            out.flush()
            print(json.dumps({k: record[k] for k in ("id", "answer", "error", "seconds")})[:300], flush=True)


# ---- trajectory summary (plain JSON, either venv) -------------------------------------------------------------------
_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)")


def _no_block_cause(response: str) -> str:
    """Why a reply ran no code: what it held instead."""
    text = (response or "").strip()
    if not text:
        return "empty reply"
    langs = [lang or "(none)" for lang in _FENCE.findall(text)]
    if "repl" in langs:
        return "```repl fence that rlms cannot parse (unclosed, or no newline before the closing ```)"
    if langs:
        return f"```{langs[0]} fence (only ```repl runs)"
    if re.fullmatch(r"(Turn\s*)?\d+(/\d+)?:?\.?", text):
        return "bare number (continues the turn count)"
    if re.search(r"Turn \d+/\d+", text):
        return "prose that repeats the 'Turn k/N' marker"
    return "prose, no fence"


def _block_failure(stderr: str) -> str:
    """`NameError: name 'x' is not defined` -> `NameError: name 'x' is not defined` (last line, cut short)."""
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    return lines[-1][:90] if lines else "stderr"


def summarise(path: str | Path) -> dict:
    """Answered (set answer['ready']) or fell back, REPL blocks run and failed by cause, replies that ran nothing."""
    entries = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    turns = [e for e in entries if e.get("type") == "iteration"]
    answered = any(b["result"].get("final_answer") is not None for t in turns for b in t["code_blocks"])
    # rlms logs its out-of-turns answer as one more iteration with no blocks and a final answer.
    fell_back = bool(turns) and not answered and not turns[-1]["code_blocks"] and turns[-1].get(
        "final_answer") is not None
    if fell_back:
        turns = turns[:-1]
    failures, no_block, ignored_fences = Counter(), Counter(), Counter()
    blocks = sub_calls = 0
    for turn in turns:
        response = turn.get("response") or ""
        ignored_fences.update(lang or "(none)" for lang in _FENCE.findall(response) if lang != "repl")
        if not turn["code_blocks"]:
            no_block[_no_block_cause(response)] += 1
        for block in turn["code_blocks"]:
            blocks += 1
            sub_calls += len(block["result"].get("rlm_calls") or [])
            if block["result"].get("stderr"):
                failures[_block_failure(block["result"]["stderr"])] += 1
    return {"answered": answered, "fell_back": fell_back, "turns": len(turns), "blocks_run": blocks,
            "blocks_failed": sum(failures.values()), "block_failures": dict(failures.most_common(8)),
            "turns_without_block": dict(no_block), "ignored_fences": dict(ignored_fences), "sub_calls": sub_calls,
            "first_replies": [(t.get("response") or "")[:160] for t in turns[:3]],
            "last_reply": ((turns[-1].get("response") or "")[:300] if turns else "")}


# ---- Recursa's side -----------------------------------------------------------------------------------------------
def _models(url: str, seconds: float) -> dict:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/models", timeout=2) as reply:
                return json.load(reply)
        except OSError:
            time.sleep(1)
    raise SystemExit(f"recursa serve did not come up at {url}")


def _totals(usage: dict) -> tuple[int, int, int]:
    models = usage.get("model_usage_summaries", usage)
    rows = [m for m in models.values() if isinstance(m, dict)]
    return (sum(m.get("total_calls", 0) for m in rows), sum(m.get("total_input_tokens", 0) for m in rows),
            sum(m.get("total_output_tokens", 0) for m in rows))


def _run_worker(args: argparse.Namespace, tasks_path: Path, raw_path: Path, base_url: str, window: int) -> None:
    command = [RLMS_PYTHON, __file__, "--worker", str(tasks_path), "--results", str(raw_path), "--base-url", base_url,
               "--model", args.model, "--max-iterations", str(args.max_iterations), "--max-depth",
               str(args.max_depth), "--temperature", str(args.temperature), "--system-prompt", args.system_prompt,
               "--window", str(window), "--trajectories", str(args.out / "trajectories")]
    for flag, value in (("--max-tokens", args.max_tokens), ("--max-timeout", args.max_timeout)):
        if value:
            command += [flag, str(value)]
    subprocess.run(command, check=True, env={**os.environ, "PYTHONPATH": ""})


def _score(args: argparse.Namespace, tasks: list, raw_path: Path, window: int) -> None:
    from recursa.eval.scoring import graded, score_task

    by_id = {t.id: t for t in tasks}
    args.summary_dir.mkdir(parents=True, exist_ok=True)
    label = f"rlms-0.1.3[prompt={args.system_prompt};max_iterations={args.max_iterations}]"
    with open(args.out / "rlms_results.jsonl", "a", encoding="utf-8") as results, \
            open(args.summary_dir / f"{args.model}.summaries.jsonl", "a", encoding="utf-8") as summaries:
        for line in raw_path.read_text(encoding="utf-8").splitlines():
            raw = json.loads(line)
            task = by_id[raw["id"]]
            score = score_task(raw["answer"] or "", task.answer, task.meta)
            calls, tokens_in, tokens_out = _totals(raw["usage"])
            summary = summarise(raw["trajectory"]) if raw.get("trajectory") else {}
            record = {"task": args.task, "context_chars": args.context_chars, "id": task.id, "method": label,
                      "model": args.model, "window": window, "gold": task.answer, "answer": raw["answer"],
                      "correct": score.correct, "score": graded(score.detail), "seconds": raw["seconds"],
                      "model_calls": calls, "prompt_tokens": tokens_in, "completion_tokens": tokens_out,
                      "error": raw["error"], "trajectory": raw.get("trajectory"), "summary": summary}
            results.write(json.dumps(record) + "\n")
            summaries.write(json.dumps({k: record[k] for k in ("task", "context_chars", "id", "method", "model",
                                                               "gold", "answer", "correct", "error", "summary")})
                            + "\n")
            print(json.dumps({k: v for k, v in record.items() if k != "summary"})[:400], flush=True)


def run(args: argparse.Namespace) -> None:
    from recursa.eval.tasks import load_tasks

    tasks = load_tasks(args.task, limit=args.limit, seed=args.seed, context_chars=args.context_chars)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"{args.task}-{args.context_chars}-{args.seed}"
    tasks_path, raw_path = args.out / f"{stem}.tasks.jsonl", args.out / f"{stem}.raw.jsonl"
    tasks_path.write_text("".join(json.dumps({"id": t.id, "question": t.question, "context": t.context}) + "\n"
                                  for t in tasks), encoding="utf-8")
    raw_path.unlink(missing_ok=True)
    server, base_url = None, args.base_url
    if base_url is None:
        base_url = f"http://127.0.0.1:{args.port}/v1"
        server = subprocess.Popen([sys.executable, "-m", "recursa.cli", "serve", "--model", args.model, "--port",
                                   str(args.port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        served = _models(base_url, 300)["data"]
        window = args.window or next(m["max_model_len"] for m in served if m["id"] == args.model)
        _run_worker(args, tasks_path, raw_path, base_url, window)
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
    _score(args, tasks, raw_path, window)


def report(paths: list[Path]) -> None:
    """One markdown row per (model, task, size, method) over rlms_results.jsonl files."""
    groups: dict[tuple, list[dict]] = {}
    for path in paths:
        for line in path.read_text(encoding="utf-8").splitlines():
            r = json.loads(line)
            groups.setdefault((r["model"], r["task"], r["context_chars"], r["method"]), []).append(r)
    print("| model | task | chars | method | n | correct | score | calls/task | tokens/task | answered | fell back |"
          " errors | turns/task | blocks run/task | blocks failed/task | s/task |")
    print("|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for (model, task, chars, method), rows in sorted(groups.items()):
        n, s = len(rows), [r.get("summary") or {} for r in rows]

        def mean(values: list, n: int = n) -> float:
            return sum(values) / n
        print(f"| {model} | {task} | {chars:,} | {method} | {n} | {sum(r['correct'] for r in rows)}/{n} | "
              f"{mean([r['score'] for r in rows]):.2f} | {mean([r['model_calls'] for r in rows]):.1f} | "
              f"{mean([r['prompt_tokens'] + r['completion_tokens'] for r in rows]):,.0f} | "
              f"{sum(x.get('answered', False) for x in s)} | {sum(x.get('fell_back', False) for x in s)} | "
              f"{sum(bool(r['error']) for r in rows)} | {mean([x.get('turns', 0) for x in s]):.1f} | "
              f"{mean([x.get('blocks_run', 0) for x in s]):.1f} | {mean([x.get('blocks_failed', 0) for x in s]):.1f} | "
              f"{mean([r['seconds'] for r in rows]):.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="s-niah")
    parser.add_argument("--context-chars", type=int, default=32_000)
    parser.add_argument("--limit", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default="qwen2.5-coder-0.5b")
    parser.add_argument("--port", type=int, default=8011)
    parser.add_argument("--base-url", default=None, help="A running OpenAI-compatible server (skip starting one).")
    parser.add_argument("--max-iterations", type=int, default=30, help="rlms' default")
    parser.add_argument("--max-depth", type=int, default=1, help="rlms' default")
    parser.add_argument("--max-tokens", type=int, default=None, help="Reply cap (default: the server's, 1024).")
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--max-timeout", type=float, default=None, help="rlms' per-task wall limit (default none).")
    parser.add_argument("--system-prompt", choices=("window", "default"), default="window")
    parser.add_argument("--window", type=int, default=None, help="Tokens (default: the server's max_model_len).")
    parser.add_argument("--out", type=Path, default=Path("runs/rlms-peer"))
    parser.add_argument("--summary-dir", type=Path, default=Path("bench/results/rlms-peer"))
    parser.add_argument("--report", type=Path, nargs="+", default=None, help="Print the table of these results.")
    parser.add_argument("--dump-system-prompt", type=Path, default=None,
                        help="(rlms venv) write the system message rlms sends in this --system-prompt mode; exit.")
    parser.add_argument("--worker", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--results", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--trajectories", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.report:
        report(args.report)
    elif args.dump_system_prompt:
        args.dump_system_prompt.write_text(rendered_system_prompt(args.system_prompt, args.window or 32_768),
                                           encoding="utf-8")
    elif args.worker:
        worker(args)
    else:
        run(args)


if __name__ == "__main__":
    main()
