"""Training data for RecursiveMAS links: GSM-Symbolic split by template, and role targets from `text-mas`.

reasoning-gym's `gsm_symbolic` draws each problem from one of 85 templates (`task_indices`). Training and
evaluation never share a template: templates whose index % 4 == 3 are held out for evaluation, the rest train.
Problems of one template differ only in names and numbers, so a split by problem would leak the solution path.

Role targets (plan, refined plan, answer) come from the project itself: `text-mas` (sequential: planner → critic
→ refiner → judger) runs on training problems, and only trajectories whose final answer is correct are kept
(`collect_trajectories`, resumable JSONL).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from recursa.methods.base import Task

HELD_OUT_MOD = 4   # template % HELD_OUT_MOD == HELD_OUT_MOD - 1 → evaluation


def template_split(template: int) -> str:
    return "eval" if template % HELD_OUT_MOD == HELD_OUT_MOD - 1 else "train"


def gsm_symbolic_split(part: str, limit: int, seed: int = 0) -> list[Task]:
    """`limit` GSM-Symbolic problems whose template belongs to `part` ("train" | "eval"), in generation order."""
    import reasoning_gym

    if part not in ("train", "eval"):
        raise ValueError(f"part must be train or eval, got {part!r}")
    size = limit * 6 + 40       # ~1/4 of templates are held out: oversample, then filter
    dataset = reasoning_gym.create_dataset("gsm_symbolic", size=size, seed=seed)
    tasks = []
    for i in range(size):
        template = dataset.task_indices[i]
        if template_split(template) != part:
            continue
        entry = dataset[i]
        answer = str(entry["answer"]).strip()
        numeric = re.fullmatch(r"-?\d+(?:\.\d+)?(?:/\d+)?", answer) is not None
        tasks.append(Task(id=f"gsm_symbolic-{part}-s{seed}-{i}", question=entry["question"], answer=answer,
                          meta={"scorer": "math" if numeric else "exact", "answer_format": "math" if numeric
                                else "text", "template": template, "split": part,
                                "source": "reasoning-gym/gsm_symbolic"}))
        if len(tasks) == limit:
            break
    return tasks


def write_tasks(tasks: list[Task], path: Path) -> None:
    """Tasks as a `recursa bench` JSONL file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"id": t.id, "question": t.question, "answer": t.answer,
                                        "scorer": t.meta["scorer"], "answer_format": t.meta["answer_format"],
                                        "meta": t.meta}) + "\n" for t in tasks), encoding="utf-8")


def read_trajectories(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def collect_trajectories(model: Any, tasks: list[Task], path: Path, *, max_tokens: int = 256,
                         batch_size: int = 8, on_batch: Any = None) -> list[dict[str, Any]]:
    """Run `text-mas` (sequential) on `tasks` and append one record per problem to `path` (resumes: problems
    already in the file are skipped). Returns the correct trajectories: question, plan, refined_plan, answer."""
    from recursa.eval.scoring import score_task
    from recursa.methods.text_mas import TextMAS

    done = {r["id"] for r in read_trajectories(path)}
    todo = [t for t in tasks if t.id not in done]
    method = TextMAS(model, pattern="sequential", max_tokens=max_tokens)
    path.parent.mkdir(parents=True, exist_ok=True)
    for start in range(0, len(todo), batch_size):
        batch = todo[start:start + batch_size]
        answers = method.solve_batch(batch)
        with path.open("a", encoding="utf-8") as out:
            for task, answer in zip(batch, answers, strict=True):
                texts = {a.role: a.text for a in answer.agents}
                correct = score_task(answer.text, task.answer, task.meta).correct
                out.write(json.dumps({"id": task.id, "question": task.question, "gold": task.answer,
                                      "template": task.meta.get("template"), "correct": correct,
                                      "plan": texts.get("planner", ""), "feedback": texts.get("critic", ""),
                                      "refined_plan": texts.get("refiner", ""), "answer": texts.get("judger", ""),
                                      "answer_format": task.meta.get("answer_format", "math")}) + "\n")
        if on_batch is not None:
            on_batch(len(done) + start + len(batch), len(tasks))
    return [r for r in read_trajectories(path) if r["correct"]]
