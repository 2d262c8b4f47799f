"""A `latent-mas` GSM8K batch on each decode path, for bench/speed.py: what the backend's speed is worth to a method.

The same first `size` GSM8K problems go through `latent-mas` (its defaults) as one batch on every path; each path
reports seconds per problem, how many it answered right, and how many answers match the first path's word for word
(the paths are not bitwise equal: they may part at near-ties of the two best tokens).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def latent_batch_per_path(paths: Any, size: int, stage: Callable[[str, Callable[[], Any]], Any]) -> dict[str, Any]:
    from recursa.eval.scoring import score_task
    from recursa.eval.tasks import load_tasks
    from recursa.methods.base import create

    tasks = load_tasks("gsm8k", limit=size)
    measured: dict[str, Any] = {}
    first_texts: list[str] | None = None
    for name in paths.names:
        def solve(n: str = name) -> dict[str, Any]:
            method = create("latent-mas", paths.use(n))
            started = time.perf_counter()
            answers = method.solve_batch(tasks)
            seconds = time.perf_counter() - started
            texts = [a.text for a in answers]
            return {"problems": len(tasks), "seconds_per_problem": seconds / len(tasks), "texts": texts,
                    "correct": sum(score_task(a.text, t.answer, t.meta).correct for a, t in zip(answers, tasks,
                                                                                             strict=True))}
        row = stage(f"{name}: latent-mas, GSM8K batch of {size}", solve)
        first_texts = first_texts if first_texts is not None else row["texts"]
        row["same_text_as_first_path"] = sum(a == b for a, b in zip(row.pop("texts"), first_texts, strict=True))
        measured[name] = row
    paths.use("bf16-fused")
    return measured
