"""Real run folders for the viewer's tests, written by the real methods, tracer and bench with a scripted model.

The scripted model drives the control flow only (what an RLM iteration runs, what a team says); the files are the
ones `recursa run` and `recursa bench` write, so the viewer is tested on the real formats.
"""

from __future__ import annotations

import json
from pathlib import Path

from fakes import ScriptedModel

from recursa.core.trace import record_model_call
from recursa.eval.bench import parse_method_specs, run_bench
from recursa.eval.report import write_summary
from recursa.methods.base import Task, create

RLM_QUESTION = "What is the special magic number for Accra?"
RLM_CONTEXT = ("filler text. " * 200) + "The special magic number for Accra is 5138149. " + ("more filler. " * 200)
RLM_ROOT = "You answer a question about a large text"


class TracedScriptedModel(ScriptedModel):
    """A scripted model that records its calls on the trace, as the real backends do."""

    def generate(self, batch, sampling):
        completions = super().generate(batch, sampling)
        record_model_call(self.name, 0.01, sum(c.prompt_tokens for c in completions),
                          sum(c.completion_tokens for c in completions), batch_size=len(batch))
        return completions


def rlm_run(root: Path) -> str:
    """An RLM run of two iterations (grep + sub-calls, then FINAL); returns its viewer key."""
    model = TracedScriptedModel(["```repl\nhits = grep(r'Accra')\nprint(hits)\nnotes = llm_query_batched(['one', "
                                 "'two'])\nprint(notes)\n```", "```repl\nFINAL('5138149')\n```"],
                                script_when=RLM_ROOT)
    answer = create("rlm", model, max_iterations=4, max_depth=1).run(RLM_QUESTION, context=RLM_CONTEXT,
                                                                     runs_dir=root)
    return key_of(root, answer.trace_path)


def text_mas_run(root: Path) -> str:
    model = TracedScriptedModel(respond=lambda text: "plan: add them. so \\boxed{7}")
    question = "What is 3 + 4?"
    answer = create("text-mas", model).run(question, runs_dir=root)
    return key_of(root, answer.trace_path)


def aime_call(tool: str, **args) -> str:
    return json.dumps({"thought": "t", "tool": tool, **args})


def aime_run(root: Path) -> str:
    plan = json.dumps({"thought": "t", "action": "dispatch", "task_id": "1", "answer": "",
                       "add": [{"id": "1", "title": "Write a.txt", "criteria": "a.txt exists",
                                "toolkits": ["workspace"], "role": "clerk"}]})
    model = TracedScriptedModel([plan, aime_call("write_file", path="a.txt", content="x"),
                           aime_call("finish", status="done", summary="wrote a.txt", pointers=["a.txt"])])
    answer = create("aime", model, workspace=str(root / "ws")).run("Write a.txt", runs_dir=root)
    return key_of(root, answer.trace_path)


def bench_answer(text: str) -> str:
    """Right on 'easy n' questions; on 'hard 3' right only for a team (its prompts quote earlier agents)."""
    if "easy " in text:
        return f"so \\boxed{{{text.split('easy ')[1].split()[0]}}}"
    team = "hard 3" in text and "previous agents" in text
    return f"so \\boxed{{{3 if team else 0}}}"


def bench_folder(root: Path) -> str:
    """single and text-mas on 5 problems: both right on p0, p2, p4; on p3 only text-mas (they disagree); p1 both
    wrong with the same answer. Accuracy 60% and 80%. Returns the folder's key."""
    tasks = [Task(f"p{i}", f"easy {i} plus nothing" if i % 2 == 0 else f"hard {i}?", str(i),
                  {"scorer": "math", "answer_format": "math"}) for i in range(5)]
    out = root / "bench-toy"
    run_bench(ScriptedModel(respond=bench_answer, context_window=4096), tasks, parse_method_specs("single,text-mas"),
              out, task_name="toy", batch_size=5, show_progress=False)
    write_summary(out)
    return "bench-toy"


def corrupt_copy(root: Path, key: str) -> str:
    """A copy of a trace with a broken line in the middle and a torn last line (a crash mid-write)."""
    lines = (root / f"{key}.jsonl").read_text().splitlines()
    lines[1] = lines[1][:40]
    (root / "traces" / "torn.jsonl").write_text("\n".join(lines) + "\n" + '{"span_id": "x", "kind": "rl')
    return "traces/torn"


def key_of(root: Path, trace_path: str) -> str:
    return Path(trace_path).resolve().relative_to(root.resolve()).with_suffix("").as_posix()


def build_runs(root: Path) -> dict[str, str]:
    """Every kind of run the viewer shows, under `root`; the viewer keys by name."""
    keys = {"rlm": rlm_run(root), "text_mas": text_mas_run(root), "aime": aime_run(root),
            "bench": bench_folder(root)}
    keys["torn"] = corrupt_copy(root, keys["rlm"])
    return keys
