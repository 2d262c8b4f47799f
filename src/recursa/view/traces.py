"""Reading a run for the viewer: its JSONL trace as a tree of spans, a one-line summary, and its answer record.

A trace (`core/trace.py`) is written span by span as each one *ends*: children come before their parents, and the
`run` span is the last line. So a run that is still going (or was killed) has spans whose parents are not in the
file yet; they hang from the top of the tree. Bad lines never stop a read: each becomes one error with its line
number, and the rest of the trace still loads.

`recursa run` saves the finished `Answer` (question, text, agents' prompts and replies, latent gists) next to the
trace as `<run_id>.answer.json`; the trace itself holds no prompt or reply text for most methods.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recursa.core.trace import answer_path

MAX_TRACE_BYTES = 64 * 1024 * 1024     # a trace larger than this is read up to here (and says so)
RUNNING_WINDOW_S = 600                 # an unfinished trace written to this recently counts as running
_STRUCTURE = {"span_id", "parent_id", "kind", "name", "start", "seconds", "run_id"}
_COST_KINDS = ("model_call", "latent")     # the leaf events the tracer's usage totals count


@dataclass
class Loaded:
    """The complete JSON objects of a JSONL file, and one message per line that could not be read."""

    records: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def read_jsonl(path: Path, max_bytes: int = MAX_TRACE_BYTES) -> Loaded:
    """Every JSON object in `path`; torn, corrupt or non-object lines become errors (line numbers from 1)."""
    loaded = Loaded()
    try:
        with open(path, "rb") as fh:
            data = fh.read(max_bytes + 1)
    except OSError as exc:
        loaded.errors.append(f"cannot read {path.name}: {exc.strerror or exc}")
        return loaded
    if len(data) > max_bytes:
        data = data[:max_bytes]
        loaded.errors.append(f"{path.name} is larger than {max_bytes // 2**20} MiB; only its beginning is shown")
    lines = data.decode("utf-8", errors="replace").split("\n")
    torn = lines[-1].strip() != ""          # no newline after the last line: it was cut mid-write
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if torn and number == len(lines):
            loaded.errors.append(f"line {number} is incomplete (the run is writing it, or it stopped mid-write)")
            break
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            loaded.errors.append(f"line {number} is not valid JSON ({exc.msg}, column {exc.colno})")
            continue
        if not isinstance(record, dict):
            loaded.errors.append(f"line {number} is a JSON {type(record).__name__}, not an event object")
            continue
        loaded.records.append(record)
    return loaded


# ---- the tree ---------------------------------------------------------------------------------------------------
def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


def _node(event: dict[str, Any]) -> dict[str, Any]:
    return {"id": str(event.get("span_id", "")), "kind": str(event.get("kind", "?")),
            "name": str(event.get("name", "")), "start": _number(event.get("start")),
            "seconds": _number(event.get("seconds")),
            "attrs": {k: v for k, v in event.items() if k not in _STRUCTURE}, "children": []}


def _add_costs(node: dict[str, Any]) -> tuple[int, int]:
    """Tokens and latent steps of a node: its own figures where the span records them (a sub-call, a latent
    agent), else the sum of its children's (an iteration is the sum of its model calls)."""
    child_tokens = child_latent = 0
    for child in node["children"]:
        tokens, latent = _add_costs(child)
        child_tokens += tokens
        child_latent += latent
    attrs = node["attrs"]
    own = "prompt_tokens" in attrs or "completion_tokens" in attrs
    node["tokens"] = (int(_number(attrs.get("prompt_tokens")) + _number(attrs.get("completion_tokens")))
                      if own else child_tokens)
    node["latent_steps"] = int(_number(attrs.get("latent_steps"))) if "latent_steps" in attrs else child_latent
    return node["tokens"], node["latent_steps"]


def build_tree(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Spans nested under their parents, children in start order; spans whose parent is not (yet) in the trace
    are roots. Each node gets `tokens` and `latent_steps` (see `_add_costs`)."""
    nodes = [_node(e) for e in events]
    by_id = {n["id"]: n for n in nodes if n["id"]}
    roots = []
    for node, event in zip(nodes, events, strict=True):
        parent = by_id.get(str(event.get("parent_id"))) if event.get("parent_id") else None
        (parent["children"] if parent is not None and parent is not node else roots).append(node)
    for node in nodes:
        node["children"].sort(key=lambda n: n["start"])
    roots.sort(key=lambda n: n["start"])
    for root in roots:
        _add_costs(root)
    return roots


# ---- the summary of one run -------------------------------------------------------------------------------------
def guess_method(events: list[dict[str, Any]]) -> str:
    """The method that wrote a trace, from the spans it leaves (used when no answer record names it)."""
    kinds = {e.get("kind") for e in events}
    if events and str(events[0].get("run_id", "")).startswith("bench-"):
        return "bench"                   # `recursa bench` traces every method of a bench into one file
    if "rlm" in kinds:
        return "rlm"
    for event in events:
        if event.get("kind") == "method" or (event.get("kind") == "agent" and event.get("method")):
            return str(event.get("method") or event.get("name"))
    names = {e.get("name") for e in events if e.get("kind") == "agent"}
    for name in ("aime", "single", "single-truncated"):
        if name in names:
            return name
    return "?"


def _status(events: list[dict[str, Any]], answer: dict[str, Any] | None, mtime: float) -> str:
    run = next((e for e in reversed(events) if e.get("kind") == "run" and not e.get("parent_id")), None)
    if run is None:
        return "running" if time.time() - mtime < RUNNING_WINDOW_S else "unfinished"
    if run.get("error"):
        return "error"
    stopped = (answer or {}).get("stopped") or next((e["stopped"] for e in events if e.get("stopped")), None)
    return "stopped" if stopped else "done"


def summarize_run(key: str, path: Path, loaded: Loaded, answer: dict[str, Any] | None) -> dict[str, Any]:
    """One row of the runs list."""
    events = loaded.records
    costs = [e for e in events if e.get("kind") in _COST_KINDS]
    tokens = sum(int(_number(e.get("prompt_tokens")) + _number(e.get("completion_tokens"))) for e in costs)
    if answer and not costs:             # a backend that records no model calls: the answer's own usage
        usage = answer.get("usage") or {}
        tokens = int(_number(usage.get("prompt_tokens")) + _number(usage.get("completion_tokens")))
    starts = [_number(e.get("start")) for e in events if e.get("start")]
    ends = [_number(e.get("start")) + _number(e.get("seconds")) for e in events if e.get("start")]
    stat = path.stat()
    board = {e.get("key"): e.get("value") for e in events if e.get("kind") == "board" and e.get("name") == "meta"}
    answer = answer or {}
    return {"key": key, "run_id": str(events[0].get("run_id", path.stem)) if events else path.stem,
            "method": answer.get("method") or guess_method(events),
            "model": answer.get("model") or next((e["model"] for e in events if e.get("model")), None),
            "question": answer.get("question") or board.get("goal"),
            "extracted": answer.get("extracted") or board.get("answer"),
            "tokens": tokens, "seconds": round(max(ends) - min(starts), 3) if starts else 0.0,
            "started": min(starts) if starts else stat.st_mtime, "status": _status(events, answer, stat.st_mtime),
            "problems": len(loaded.errors), "events": len(events)}


# ---- the answer record ------------------------------------------------------------------------------------------
def load_answer(trace: Path) -> tuple[dict[str, Any] | None, str | None]:
    """The answer record next to `trace`, if any, or the reason it could not be read."""
    path = answer_path(trace)
    if not path.is_file():
        return None, None
    try:
        record = json.loads(path.read_text(encoding="utf-8", errors="replace"))
    except (OSError, json.JSONDecodeError) as exc:
        return None, f"{path.name} could not be read ({exc})"
    return (record, None) if isinstance(record, dict) else (None, f"{path.name} is not a JSON object")
