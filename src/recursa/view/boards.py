"""An Aime progress board (`methods/aime/board.py`: SQLite in WAL mode) read for the viewer, without writing.

The board is opened read-only each time, so the viewer never holds a lock a running Aime process would wait on.
`board_version` is cheap (file sizes and times of the database and its WAL), so the page can ask every second or
two whether anything changed and fetch the board only then.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any


def board_version(path: Path) -> str:
    """Changes whenever a transaction lands in the board (database or write-ahead log)."""
    parts = []
    for file in (path, path.with_name(path.name + "-wal")):
        try:
            stat = file.stat()
        except OSError:
            continue
        parts.append(f"{stat.st_size}:{stat.st_mtime_ns}")
    return "/".join(parts)


def _json(value: str, default: Any) -> Any:
    try:
        return json.loads(value)
    except (TypeError, json.JSONDecodeError):
        return default


def read_board(path: Path) -> dict[str, Any]:
    """Goal, state and answer, the task tree with each task's progress messages and reports."""
    uri = f"{path.resolve().as_uri()}?mode=ro"
    db = sqlite3.connect(uri, uri=True, timeout=2.0)
    try:
        meta = {k: _json(v, v) for k, v in db.execute("SELECT key, value FROM meta")}
        tasks = [{"id": r[0], "parent": r[1], "title": r[2], "criteria": r[3], "toolkits": _json(r[4], []),
                  "role": r[5], "status": r[6], "result": r[7], "pointers": _json(r[8], []), "attempts": r[9],
                  "progress": [], "reports": []}
                 for r in db.execute("SELECT id, parent, title, criteria, toolkits, role, status, result, pointers, "
                                     "attempts FROM tasks ORDER BY ord")]
        by_id = {t["id"]: t for t in tasks}
        for task_id, status, message in db.execute("SELECT task_id, status, message FROM progress ORDER BY id"):
            if task_id in by_id:
                by_id[task_id]["progress"].append({"status": status, "message": message})
        for task_id, status, summary, pointers, steps, guard in db.execute(
                "SELECT task_id, status, summary, pointers, steps, guard FROM reports ORDER BY id"):
            if task_id in by_id:
                by_id[task_id]["reports"].append({"status": status, "summary": summary,
                                                  "pointers": _json(pointers, []), "steps": steps, "guard": guard})
    finally:
        db.close()
    return {"goal": meta.get("goal"), "state": meta.get("state"), "answer": meta.get("answer"),
            "tasks": tasks, "version": board_version(path)}


def board_snapshot(path: Path) -> dict[str, Any]:
    """`read_board`, or the reason the file could not be read as a board (the page shows it)."""
    try:
        return read_board(path)
    except sqlite3.Error as exc:
        return {"error": f"the board {path.name} could not be read ({exc})", "version": board_version(path)}
