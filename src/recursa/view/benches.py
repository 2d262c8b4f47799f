"""A `recursa bench` folder read for the viewer: its summary and every problem with each method's answer.

The folder layout is `eval/bench.py`'s: `bench.json` (task, model, methods), `results.jsonl` (one record per
finished sample) and, once the bench has finished, `summary.json/md/png`. The summary is recomputed here from the
records (`eval/report.summarize`), so a bench that is still running is shown as far as it got.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from recursa.eval.bench import MANIFEST, RESULTS
from recursa.eval.report import summarize
from recursa.view.traces import read_jsonl

_ANSWER_FIELDS = ("extracted", "correct", "answer", "error", "stopped", "detail", "seconds", "prompt_tokens",
                  "completion_tokens", "latent_steps", "agents")


def is_bench(folder: Path) -> bool:
    return (folder / RESULTS).is_file() or (folder / MANIFEST).is_file()


def _manifest(folder: Path) -> tuple[dict[str, Any], str | None]:
    path = folder / MANIFEST
    if not path.is_file():
        return {}, None
    try:
        data = json.loads(path.read_text(encoding="utf-8", errors="replace"))
    except json.JSONDecodeError as exc:
        return {}, f"{MANIFEST} is not valid JSON ({exc.msg})"
    return (data, None) if isinstance(data, dict) else ({}, f"{MANIFEST} is not a JSON object")


def bench_row(key: str, folder: Path) -> dict[str, Any]:
    """One line of the benchmarks list."""
    manifest, _ = _manifest(folder)
    results = folder / RESULTS
    stat = (results if results.is_file() else folder).stat()
    return {"key": key, "task": manifest.get("task"), "model": manifest.get("model"),
            "methods": manifest.get("methods") or [], "n_tasks": manifest.get("n_tasks"),
            "modified": stat.st_mtime, "has_plot": (folder / "summary.png").is_file()}


_NUMBERS = ("prompt_tokens", "completion_tokens", "latent_steps", "seconds")


def _number(value: Any) -> float:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else 0


def _clean(record: dict[str, Any]) -> dict[str, Any] | None:
    """A sample record with the fields the summary needs, or None when it names no method or problem."""
    if not isinstance(record.get("method"), str) or record.get("id") is None:
        return None
    clean = dict(record)
    for key in _NUMBERS:
        clean[key] = _number(clean.get(key))
    clean["correct"] = bool(clean.get("correct"))
    agents = clean.get("agents") if isinstance(clean.get("agents"), list) else []
    clean["agents"] = [{**a, "completion_tokens": _number(a.get("completion_tokens"))}
                       for a in agents if isinstance(a, dict) and "role" in a]
    return clean


def _norm(value: Any) -> str:
    return "" if value is None else " ".join(str(value).split()).lower()


def problems(records: list[dict[str, Any]], methods: list[str]) -> list[dict[str, Any]]:
    """Each problem with every method's answer side by side, flagged where the methods' extracted answers differ
    and where every method that answered it got it wrong."""
    by_id: dict[str, dict[str, Any]] = {}
    for r in records:
        problem = by_id.setdefault(str(r["id"]), {"id": str(r["id"]), "question": r.get("question"),
                                                  "gold": r.get("gold"), "answers": {}})
        problem["answers"][r["method"]] = {k: r.get(k) for k in _ANSWER_FIELDS}
    for problem in by_id.values():
        answers = [problem["answers"][m] for m in methods if m in problem["answers"]]
        problem["disagree"] = len({_norm(a["extracted"]) for a in answers}) > 1
        problem["all_fail"] = bool(answers) and not any(a["correct"] for a in answers)
    return list(by_id.values())


def load_bench(key: str, folder: Path) -> dict[str, Any]:
    """Manifest, summary (recomputed from the records), problems, and the lines that could not be read."""
    manifest, manifest_error = _manifest(folder)
    loaded = read_jsonl(folder / RESULTS) if (folder / RESULTS).is_file() else None
    errors = [manifest_error] if manifest_error else []
    if loaded is None:
        errors.append(f"{RESULTS} is missing: the bench has not finished a sample yet")
        records = []
    else:
        errors += [f"{RESULTS}: {e}" for e in loaded.errors]
        records = [c for c in map(_clean, loaded.records) if c is not None]
        if len(records) < len(loaded.records):
            errors.append(f"{RESULTS}: {len(loaded.records) - len(records)} records have no method or id")
    methods = list(dict.fromkeys((manifest.get("methods") or []) + [r["method"] for r in records]))
    methods = [m for m in methods if any(r["method"] == m for r in records)]
    summary = summarize(records, methods)
    return {"key": key, "manifest": manifest, "methods": methods, "summary": summary,
            "problems": problems(records, methods), "errors": errors,
            "has_plot": (folder / "summary.png").is_file()}
