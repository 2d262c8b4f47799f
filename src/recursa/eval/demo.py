"""`recursa demo`: a few GSM8K problems through `single`, `text-mas`, `latent-mas` (and `recursive-mas` once its
links are trained), side by side; then `rlm` on a document several times the model's window.

Every method gets the same problems as one batch on the same model; answers are scored with the harness's scorer,
tokens come from the trace (`Answer.usage`), seconds are the batch's wall time. The point to see: text-mas pays for
every agent's decoded text, latent-mas hands its work on as KV cache and decodes only the final answer.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from recursa.core.errors import RecursaError
from recursa.core.trace import Tracer
from recursa.eval.scoring import score_task
from recursa.eval.tasks import load_tasks
from recursa.methods import base as methods
from recursa.methods.base import Task

# (label, method, options): the latent team uses the same roles and prompts as the text team.
DEMO_METHODS: list[tuple[str, str, dict[str, Any]]] = [
    ("single", "single", {}),
    ("text-mas", "text-mas", {"pattern": "sequential"}),
    ("latent-mas", "latent-mas", {"pattern": "sequential", "latent_steps": 4, "realign": "soft"}),
    # different models (SmolLM2-135M planner and critic, this model as solver) joined by trained links
    ("recursive-mas", "recursive-mas", {}),
]


@dataclass
class DemoRow:
    label: str
    spec: str
    answers: list[str | None] = field(default_factory=list)   # extracted answer per problem
    correct: list[bool] = field(default_factory=list)
    decoded_tokens: int = 0
    prompt_tokens: int = 0
    latent_steps: int = 0
    seconds: float = 0.0


def demo_tasks(n: int) -> list[Task]:
    """The n shortest of the 100 GSM8K test problems (short problems keep the demo within a minute or two)."""
    tasks = load_tasks("gsm8k")
    return sorted(tasks, key=lambda t: len(t.question))[:n]


def run_demo(model: Any, tasks: list[Task], max_tokens: int = 256, on_row=None, on_skip=None) -> list[DemoRow]:
    """Each demo method on `tasks` as one batch; a method that cannot run here (e.g. recursive-mas before its links
    are trained) is reported to `on_skip` with the reason and left out."""
    rows = []
    with Tracer.start(run_id=f"demo-{time.strftime('%Y%m%d-%H%M%S')}"):
        for label, name, options in DEMO_METHODS:
            try:
                solver = methods.create(name, model, max_tokens=max_tokens, **options)
            except RecursaError as exc:
                if on_skip is not None:
                    on_skip(label, str(exc))
                continue
            started = time.perf_counter()
            answers = solver.solve_batch(tasks)
            seconds = time.perf_counter() - started
            spec = name + ("[" + ";".join(f"{k}={v}" for k, v in options.items()) + "]" if options else "")
            row = DemoRow(label, spec, seconds=seconds)
            for task, answer in zip(tasks, answers, strict=True):
                score = score_task(answer.text, task.answer, task.meta)
                row.answers.append(score.extracted)
                row.correct.append(score.correct)
                row.decoded_tokens += answer.usage["completion_tokens"]
                row.prompt_tokens += answer.usage["prompt_tokens"]
                row.latent_steps += answer.usage["latent_steps"]
            rows.append(row)
            if on_row is not None:
                on_row(row)
    return rows


@dataclass
class LongContextRow:
    context_chars: int
    question: str
    gold: str
    answer: str
    correct: bool
    iterations: int
    code_blocks: int
    sub_calls: int
    largest_prompt_tokens: int    # the most one model call saw: far below the context, which stays in the REPL
    seconds: float


def run_long_context_demo(model: Any, context_chars: int = 400_000, max_iterations: int = 6) -> LongContextRow:
    """`rlm` on one needle-in-a-haystack task: the context is a REPL variable the model searches with code."""
    from recursa.eval.long_context import s_niah

    task = s_niah(1, context_chars, seed=0)[0]
    solver = methods.create("rlm", model, max_iterations=max_iterations)
    started = time.perf_counter()
    with Tracer.start(run_id=f"demo-rlm-{time.strftime('%Y%m%d-%H%M%S')}") as tracer:
        answer = solver.solve(task)
    seconds = time.perf_counter() - started
    score = score_task(answer.text, task.answer, task.meta)
    calls = [json.loads(line) for line in tracer.path.read_text(encoding="utf-8").splitlines()]
    largest = max((int(e.get("prompt_tokens", 0)) // max(int(e.get("batch_size", 1)), 1) for e in calls
                   if e.get("kind") == "model_call"), default=0)
    return LongContextRow(len(task.context), task.question, task.answer,
                          score.extracted or answer.text.strip()[:40], score.correct,
                          int(answer.meta.get("iterations", 0)), int(answer.meta.get("code_blocks", 0)),
                          int(answer.meta.get("sub_calls", 0)), largest, seconds)
