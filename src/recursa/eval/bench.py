"""`recursa bench`: a method × task matrix, run in batches, one JSON line per finished sample, resumable.

Order: tasks are cut into batches; every method solves a batch before the next batch starts, so a run that is
stopped early still compares all methods on the same problems. Each finished sample is appended and flushed to
`results.jsonl` at once; on restart (even after `kill -9`) finished samples are skipped and a torn last line is
cut off. Method specs may carry their own options: `text-mas[pattern=hierarchical]`,
`latent-mas[latent_steps=16;realign=none]` (the label of a method is its full spec).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from recursa.core.errors import BudgetExceeded, ConfigError, RecursaError
from recursa.core.trace import Tracer
from recursa.eval.scoring import score_task
from recursa.methods import base as methods
from recursa.methods.base import Answer, Task

RESULTS = "results.jsonl"
MANIFEST = "bench.json"


@dataclass
class MethodSpec:
    label: str                       # the spec as written, e.g. "text-mas[pattern=hierarchical]"
    name: str                        # the registered method name
    options: dict[str, Any] = field(default_factory=dict)


def parse_method_specs(text: str) -> list[MethodSpec]:
    """"single,text-mas[pattern=hierarchical;max_tokens=256]" → specs (commas inside [...] do not split)."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    specs, labels = [], set()
    for raw in (p.strip() for p in parts):
        if not raw:
            continue
        match = re.fullmatch(r"([\w\-.]+)(?:\[(.*)\])?", raw)
        if not match:
            raise ConfigError(f"bad method spec '{raw}'; write name or name[key=value;key=value]")
        options: dict[str, Any] = {}
        for item in filter(None, (s.strip() for s in re.split(r"[;,]", match.group(2) or ""))):
            if "=" not in item:
                raise ConfigError(f"bad option '{item}' in method spec '{raw}'; write key=value")
            key, value = (s.strip() for s in item.split("=", 1))
            options[key.replace("-", "_")] = value
        if raw in labels:
            raise ConfigError(f"method spec '{raw}' is listed twice")
        labels.add(raw)
        specs.append(MethodSpec(raw, match.group(1), options))
    if not specs:
        raise ConfigError("no methods given; e.g. --methods single,text-mas")
    known = methods.method_names()
    for spec in specs:
        if spec.name not in known:
            raise ConfigError(f"unknown method '{spec.name}' in '{spec.label}'; available: {', '.join(known)}")
        # validated now, before any model loads: a misspelt option fails here, not after an hour of other methods
        config = methods.config_class(spec.name).build(spec.label, spec.options)
        spec.options = config.model_dump(include=set(spec.options))
    return specs


def shared_options(specs: list[MethodSpec], defaults: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """Options for every method of a bench: `defaults` apply where a method declares them; each `given` option
    must be declared by at least one listed method (a typo is an error) and is validated for each that does."""
    for key, value in given.items():
        takers = [s for s in specs if key in methods.config_class(s.name).model_fields]
        if not takers:
            names = ", ".join(sorted({s.name for s in specs}))
            raise ConfigError(f"--option {key}: none of the methods ({names}) has that option; "
                              f"see `recursa methods`")
        for spec in takers:
            methods.config_class(spec.name).build(spec.label, {key: value})
    return {**defaults, **given}


# ---- results file: append + flush per sample, torn tail tolerated ------------------------------------------------
def read_results(path: Path, repair: bool = False) -> list[dict[str, Any]]:
    """Every complete record. A torn last line (the process died mid-write) is ignored, and cut off if `repair`."""
    if not path.is_file():
        return []
    data = path.read_bytes()
    good_end = data.rfind(b"\n") + 1  # everything after the last newline is a torn write
    records = []
    for lineno, line in enumerate(data[:good_end].decode("utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}:{lineno} is not valid JSON ({exc.msg}); fix or remove that line") from exc
    if repair and good_end < len(data):
        with open(path, "r+b") as fh:
            fh.truncate(good_end)
    return records


class ResultsWriter:
    def __init__(self, path: Path):
        self.path = path
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def write(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record, default=str) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def _check_manifest(out_dir: Path, manifest: dict[str, Any]) -> None:
    """A results folder belongs to one task set and model: resuming with others would mix incomparable runs."""
    path = out_dir / MANIFEST
    if path.is_file():
        old = json.loads(path.read_text(encoding="utf-8"))
        for key in ("task", "model", "seed", "task_options"):
            if old.get(key) != manifest.get(key):
                raise ConfigError(f"{out_dir} holds a run with {key}={old.get(key)!r}, not {manifest.get(key)!r}; "
                                  f"use another --out folder (or delete {path})")
        manifest["methods"] = list(dict.fromkeys(old.get("methods", []) + manifest["methods"]))
    path.write_text(json.dumps(manifest, indent=2), encoding="utf-8")


# ---- the run ---------------------------------------------------------------------------------------------------------
def sample_record(task: Task, spec: MethodSpec, answer: Answer, task_name: str, model_name: str,
                  batch_size: int) -> dict[str, Any]:
    score = score_task(answer.text, task.answer, task.meta)
    usage = answer.usage
    return {"task": task_name, "id": task.id, "method": spec.label, "method_name": spec.name,
            "options": spec.options, "model": model_name, "question": task.question, "gold": task.answer,
            "answer": answer.text, "extracted": score.extracted, "correct": score.correct, "detail": score.detail,
            "prompt_tokens": usage["prompt_tokens"], "completion_tokens": usage["completion_tokens"],
            "latent_steps": usage["latent_steps"], "model_calls": usage["model_calls"],
            "seconds": round(answer.seconds, 3), "batch_size": batch_size, "stopped": answer.stopped,
            "agents": [{"role": a.role, "text": a.text, "prompt": a.extra.get("prompt"),
                        "prompt_tokens": a.prompt_tokens, "completion_tokens": a.completion_tokens,
                        "latent_steps": a.latent_steps, "seconds": round(a.seconds, 3),
                        **{k: v for k, v in a.extra.items() if k != "prompt"}} for a in answer.agents]}


def error_record(task: Task, spec: MethodSpec, error: str, task_name: str, model_name: str,
                 batch_size: int) -> dict[str, Any]:
    return {"task": task_name, "id": task.id, "method": spec.label, "method_name": spec.name, "options": spec.options,
            "model": model_name, "question": task.question, "gold": task.answer, "answer": "", "extracted": None,
            "correct": False, "detail": "", "error": error, "prompt_tokens": 0, "completion_tokens": 0,
            "latent_steps": 0, "model_calls": 0, "seconds": 0.0, "batch_size": batch_size, "stopped": None,
            "agents": []}


def run_bench(model: Any, tasks: list[Task], specs: list[MethodSpec], out_dir: Path, *, task_name: str,
              batch_size: int = 4, base_options: dict[str, Any] | None = None, seed: int = 0,
              task_options: dict[str, Any] | None = None, show_progress: bool = True,
              on_record: Callable[[dict[str, Any]], None] | None = None) -> Path:
    """Run every spec on every task (resuming what `out_dir` already holds); return the results path."""
    if batch_size < 1:
        raise ConfigError(f"batch size must be >= 1, got {batch_size}")
    out_dir.mkdir(parents=True, exist_ok=True)
    model_name = getattr(model, "name", str(model))
    _check_manifest(out_dir, {"task": task_name, "model": model_name, "seed": seed, "task_options": task_options or {},
                              "methods": [s.label for s in specs], "batch_size": batch_size,
                              "options": base_options or {}, "n_tasks": len(tasks)})
    results_path = out_dir / RESULTS
    previous = read_results(results_path, repair=True)
    done = {(r["method"], r["id"]) for r in previous}
    tally = {s.label: [0, 0] for s in specs}  # correct, finished
    for r in previous:
        if r["method"] in tally:
            tally[r["method"]][0] += bool(r["correct"])
            tally[r["method"]][1] += 1
    solvers = {s.label: methods.create(s.name, model, **{**methods.declared(s.name, base_options or {}), **s.options})
               for s in specs}
    total = len(tasks) * len(specs)
    finished = sum(1 for s in specs for t in tasks if (s.label, t.id) in done)
    writer = ResultsWriter(results_path)
    progress = Progress(TextColumn("[bold]{task.fields[name]}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[acc]}"),
                        console=Console(stderr=True), disable=not show_progress)

    def accuracy_text() -> str:
        return "  ".join(f"{escape(label)}: {c}/{n}" + (f" ({c / n:.0%})" if n else "")
                         for label, (c, n) in tally.items())

    try:
        with progress, Tracer.start(runs_dir=out_dir, run_id=f"bench-{time.strftime('%Y%m%d-%H%M%S')}"):
            bar = progress.add_task("bench", total=total, completed=finished, name=task_name, acc=accuracy_text())
            for start in range(0, len(tasks), batch_size):
                batch = tasks[start:start + batch_size]
                for spec in specs:
                    pending = [t for t in batch if (spec.label, t.id) not in done]
                    if not pending:
                        continue
                    records = _solve(solvers[spec.label], pending, spec, task_name, model_name, batch_size)
                    for record in records:
                        writer.write(record)
                        done.add((spec.label, record["id"]))
                        tally[spec.label][0] += bool(record["correct"])
                        tally[spec.label][1] += 1
                        if on_record is not None:
                            on_record(record)
                    progress.update(bar, advance=len(records), acc=accuracy_text())
    finally:
        writer.close()
    return results_path


def _solve(solver: Any, batch: list[Task], spec: MethodSpec, task_name: str, model_name: str,
           batch_size: int) -> list[dict[str, Any]]:
    """One batch through one method; a method error becomes an error record per sample, never a silent skip."""
    try:
        answers = solver.solve_batch(batch)
    except BudgetExceeded as exc:
        answers = [Answer(text=exc.partial_answer or "", method=spec.name, stopped=str(exc)) for _ in batch]
    except RecursaError as exc:
        return [error_record(t, spec, f"{type(exc).__name__}: {exc}", task_name, model_name, batch_size)
                for t in batch]
    return [sample_record(t, spec, a, task_name, model_name, batch_size) for t, a in zip(batch, answers, strict=True)]
