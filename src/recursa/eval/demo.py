"""`recursa demo`: a few GSM8K problems through `single`, `text-mas` and `latent-mas`, side by side.

Every method gets the same problems as one batch on the same model; answers are scored with the harness's scorer,
tokens come from the trace (`Answer.usage`), seconds are the batch's wall time. The point to see: text-mas pays for
every agent's decoded text, latent-mas hands its work on as KV cache and decodes only the final answer.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

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


def run_demo(model: Any, tasks: list[Task], max_tokens: int = 256, on_row=None) -> list[DemoRow]:
    rows = []
    with Tracer.start(run_id=f"demo-{time.strftime('%Y%m%d-%H%M%S')}"):
        for label, name, options in DEMO_METHODS:
            solver = methods.create(name, model, max_tokens=max_tokens, **options)
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
