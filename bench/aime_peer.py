"""The peer on Aime's goal suite: smolagents' CodeAgent (with `planning_interval`) against `recursa serve`.

Runs in its own venv so smolagents does not touch ours:

    python -m venv /tmp/smol-venv && /tmp/smol-venv/bin/pip install "smolagents[openai]==1.26.0" rank-bm25
    python bench/aime_goals.py make --out runs/aime-goals
    recursa serve --model qwen2.5-coder-1.5b --port 8011 &
    /tmp/smol-venv/bin/python bench/aime_peer.py --goals runs/aime-goals --model qwen2.5-coder-1.5b \
        --base-url http://127.0.0.1:8011/v1 --limit 10 --out runs/aime-peer-1.5b

CodeAgent runs with its defaults (max_steps 20, its own prompts and local Python executor) plus
`planning_interval=3` (`--planning-interval 0`: none, smolagents' default) and `additional_authorized_imports` csv,
json, sqlite3 (`--authorized-imports`: the goals need them, Aime's sandbox imports anything, and the 1.5B's code
imports sqlite3 at once; smolagents' own error says to authorize it). With `--structured`, its documented
`use_structured_outputs_internally=True`: each action step is a JSON object {thought, code} under the server's
JSON-schema decoding ("improves performance for many models", smolagents' docstring); without it, the 1.5B sampled
at 1.0 wrote prose with no code block in most steps. smolagents sends no temperature, so the server samples at
OpenAI's default 1.0 (Aime decodes greedily); `--temperature 0` matches.
Its tools mirror Aime's toolkits: workspace files, Python in a bubblewrap sandbox with the
workspace as cwd (ledger.py and stock.db need real files), and BM25 search over the knowledge folder. It has no
long-context reader: it reads long files with code, as a code agent does. Each goal's full agent log is kept.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from aime_goals import check  # noqa: E402  (stdlib only)


def tools_for(ws: Path, knowledge: Path | None):
    from smolagents import tool

    def inside(path: str) -> Path:
        target = (ws / path).resolve()
        if ws.resolve() not in target.parents:
            raise ValueError(f"{path} is outside the workspace")
        return target

    @tool
    def read_file(path: str) -> str:
        """Read a text file of the workspace (first 4000 characters).

        Args:
            path: path relative to the workspace
        """
        return inside(path).read_text(errors="replace")[:4000]

    @tool
    def write_file(path: str, content: str) -> str:
        """Write text to a workspace file.

        Args:
            path: path relative to the workspace
            content: the text to write
        """
        inside(path).write_text(content)
        return f"wrote {path}"

    @tool
    def list_files() -> str:
        """List the workspace's files."""
        return "\n".join(str(p.relative_to(ws)) for p in sorted(ws.rglob("*")) if p.is_file())

    @tool
    def run_python(code: str) -> str:
        """Run a Python script with the workspace as its current folder (it can open the workspace's files and
        import its modules); returns what it prints.

        Args:
            code: the Python source
        """
        cmd = ["bwrap", "--ro-bind", "/", "/", "--bind", str(ws), str(ws), "--unshare-net", "--die-with-parent",
               "--chdir", str(ws), sys.executable, "-c", code]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        return (done.stdout + done.stderr)[-3000:] or "(no output)"

    tools = [read_file, write_file, list_files, run_python]
    if knowledge is not None:
        from rank_bm25 import BM25Okapi

        passages = []
        for path in sorted(knowledge.rglob("*.json")):
            passages += [f"{k}: {v}" for k, v in json.loads(path.read_text()).items()]
        index = BM25Okapi([re.findall(r"[a-z0-9]+", p.lower()) for p in passages])

        @tool
        def search_knowledge(query: str) -> str:
            """Search the knowledge base of reference facts.

            Args:
                query: keywords
            """
            scores = index.get_scores(re.findall(r"[a-z0-9]+", query.lower()))
            best = sorted(range(len(passages)), key=lambda i: -scores[i])[:3]
            return "\n".join(passages[i] for i in best)

        tools.append(search_knowledge)
    return tools


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--goals", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--limit", type=int, default=35)
    parser.add_argument("--planning-interval", type=int, default=3,
                        help="CodeAgent's planning_interval; 0: no planning steps (smolagents' own default)")
    parser.add_argument("--parallel", type=int, default=1, help="goals run at once (the server batches them)")
    parser.add_argument("--temperature", type=float, default=None,
                        help="sampling temperature sent with each request (default: none sent, so the server's 1.0)")
    parser.add_argument("--authorized-imports", default="csv,json,sqlite3",
                        help="CodeAgent's additional_authorized_imports, comma-separated ('' for none); Aime's "
                             "sandbox imports any module")
    parser.add_argument("--start-within", type=float, default=None, metavar="MINUTES",
                        help="start no goal later than this many minutes after launch (those left are not recorded "
                             "and a rerun resumes them), so a run sized to a time window ends with whole goals")
    parser.add_argument("--structured", action="store_true",
                        help="CodeAgent's use_structured_outputs_internally (JSON {thought, code} action steps)")
    args = parser.parse_args()
    out = Path(args.out).resolve()   # each goal's worker runs inside its own workspace
    (out / "logs").mkdir(parents=True, exist_ok=True)
    results = out / "results.jsonl"
    done = {json.loads(line)["id"] for line in results.read_text().splitlines()} if results.exists() else set()
    goals = json.loads((Path(args.goals) / "goals.json").read_text())[args.start:args.start + args.limit]
    system = "smolagents-codeagent" + ("-structured" if args.structured else "") \
        + ("" if args.planning_interval else "-noplan")

    start_by = None if args.start_within is None else time.time() + 60 * args.start_within
    with ProcessPoolExecutor(max_workers=max(1, args.parallel)) as pool:
        futures = [pool.submit(run_goal, goal, args, out, system, start_by) for goal in goals if goal["id"] not in done]
        for future in as_completed(futures):
            record = future.result()
            if record is None:
                continue
            with results.open("a") as handle:
                handle.write(json.dumps(record) + "\n")
            print(json.dumps({k: record[k] for k in ("id", "kind", "success", "seconds", "tokens")}), flush=True)


def run_goal(goal: dict, args: argparse.Namespace, out: Path, system: str, start_by: float | None) -> dict | None:
    """One goal in a worker process whose current folder is the goal's workspace (CodeAgent's own interpreter
    opens files relative to it, as Aime's sandbox does); None when the server was unreachable or the goal's
    start came after `start_by`."""
    if start_by is not None and time.time() > start_by:
        print(f"not started (past --start-within): {goal['id']}", flush=True)
        return None
    from smolagents import CodeAgent, OpenAIServerModel

    ws = out / "work" / goal["id"]   # absolute (main resolves `out`): bwrap binds and enters it
    if ws.exists():
        shutil.rmtree(ws)
    shutil.copytree(goal["workspace"], ws)
    os.chdir(ws)
    knowledge = Path(goal["knowledge_dir"]) if goal.get("knowledge") else None
    model = OpenAIServerModel(model_id=args.model, api_base=args.base_url, api_key="not-needed",
                              client_kwargs={"timeout": 3600},   # the same patience as Aime's client
                              **({} if args.temperature is None else {"temperature": args.temperature}))
    agent = CodeAgent(tools=tools_for(ws, knowledge), model=model, planning_interval=args.planning_interval or None,
                      use_structured_outputs_internally=args.structured,
                      additional_authorized_imports=[m for m in args.authorized_imports.split(",") if m])
    started, crash, answer, lost = time.perf_counter(), None, "", False
    try:
        answer = str(agent.run(goal["goal"]))
    except Exception as exc:  # noqa: BLE001 - recorded as the run's outcome
        crash, lost = f"{type(exc).__name__}: {exc}", server_unreachable(exc)
    steps = agent.memory.steps
    usage = agent.monitor.get_total_token_counts()
    tokens = (usage.input_tokens + usage.output_tokens) if hasattr(usage, "input_tokens") else 0
    errors = sum(1 for s in steps if getattr(s, "error", None))
    log = json.dumps(agent.memory.get_full_steps(), default=str)
    (out / "logs" / f"{goal['id']}.json").write_text(log[:2_000_000])
    record = {"model": args.model, "id": goal["id"], "kind": goal["kind"], "system": system,
              "success": check(goal, ws), "seconds": round(time.perf_counter() - started, 1), "tokens": tokens,
              "model_calls": sum(1 for s in steps if getattr(s, "model_output", None) is not None
                                 or type(s).__name__ == "PlanningStep"),
              "replans": sum(1 for s in steps if type(s).__name__ == "PlanningStep"),
              "guards": {"step_cap": int(sum(type(s).__name__ == "ActionStep" for s in steps) >= agent.max_steps)},
              "invalid_replies": errors, "crash": crash, "answer": answer[:300], "parallel": args.parallel,
              "temperature": args.temperature, "authorized_imports": args.authorized_imports,
              "planning_interval": args.planning_interval or None}
    if lost:   # the server went down: not the peer's result; rerun
        print(f"not kept (server unreachable): {goal['id']}", flush=True)
        return None
    return record


def server_unreachable(exc: BaseException | None) -> bool:
    """True when the openai client could not connect at all (smolagents wraps that error in its own)."""
    import openai

    while exc is not None:
        if isinstance(exc, openai.APIConnectionError):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


if __name__ == "__main__":
    main()
