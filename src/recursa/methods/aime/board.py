"""`ProgressBoard`: the single source of truth of one Aime run, in one SQLite file (WAL).

Tables: `tasks` (a hierarchy: id, parent, title, completion criteria, status, short result, pointers to evidence),
`reports` (each actor's final report: status, summary, pointers, steps, the guard that stopped it), `progress`
(the actors' mid-task `update_progress` messages) and `meta` (goal, state, answer, counters). Every write is one
transaction and one trace event (`kind="board"`), so a run killed at any point (kill -9 included) reopens with all
committed reports, and `recover()` turns tasks left running into pending ones.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from recursa.core.trace import current_tracer

Status = Literal["pending", "running", "done", "failed", "blocked"]
STATUSES: tuple[str, ...] = ("pending", "running", "done", "failed", "blocked")
_MARK = {"pending": "[ ]", "running": "[~]", "done": "[x]", "failed": "[!]", "blocked": "[-]"}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tasks (
    id TEXT PRIMARY KEY, parent TEXT, ord INTEGER NOT NULL, title TEXT NOT NULL, criteria TEXT NOT NULL,
    toolkits TEXT NOT NULL, role TEXT NOT NULL, status TEXT NOT NULL, result TEXT NOT NULL DEFAULT '',
    pointers TEXT NOT NULL DEFAULT '[]', attempts INTEGER NOT NULL DEFAULT 0, updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS reports (
    id INTEGER PRIMARY KEY AUTOINCREMENT, task_id TEXT NOT NULL, status TEXT NOT NULL, summary TEXT NOT NULL,
    pointers TEXT NOT NULL, steps INTEGER NOT NULL, guard TEXT, created REAL NOT NULL, log TEXT NOT NULL DEFAULT '[]');
CREATE TABLE IF NOT EXISTS progress (
    id INTEGER PRIMARY KEY AUTOINCREMENT, task_id TEXT NOT NULL, status TEXT NOT NULL, message TEXT NOT NULL,
    created REAL NOT NULL);
"""


@dataclass
class BoardTask:
    id: str
    title: str
    criteria: str = ""
    parent: str | None = None
    toolkits: list[str] = field(default_factory=list)
    role: str = ""
    status: str = "pending"
    result: str = ""
    pointers: list[str] = field(default_factory=list)
    attempts: int = 0


@dataclass
class Report:
    """An actor's structured conclusion (paper §5): status, summary, pointers; plus how it ended."""

    task_id: str
    status: str
    summary: str
    pointers: list[str] = field(default_factory=list)
    steps: int = 0
    guard: str | None = None
    log: list[str] = field(default_factory=list)    # the actor's tool calls, one short line each


class ProgressBoard:
    """Tasks, reports and progress messages of one run; safe to share between threads."""

    def __init__(self, path: Path | str, on_change: Callable[[ProgressBoard], None] | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.on_change = on_change
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")   # WAL + NORMAL: a killed process loses no commit
        self._db.executescript(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(reports)")}
        if "log" not in columns:   # a board written before reports kept the actor's calls
            self._db.execute("ALTER TABLE reports ADD COLUMN log TEXT NOT NULL DEFAULT '[]'")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ---- writing ------------------------------------------------------------------------------------------
    def _write(self, op: str, sql: str, params: tuple = (), **event: Any) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(sql, params)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        tracer = current_tracer()
        if tracer is not None:
            tracer.event("board", op, board=str(self.path), **event)
        if self.on_change is not None:
            self.on_change(self)

    def set_meta(self, key: str, value: Any) -> None:
        self._write("meta", "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET "
                    "value = excluded.value", (key, json.dumps(value)), key=key, value=value)

    def add_task(self, task: BoardTask) -> BoardTask:
        """Add a task; an id already on the board gets a fresh suffix (the planner may reuse one)."""
        existing = {t.id for t in self.tasks()}
        base, n = task.id or str(len(existing) + 1), 1
        task.id = base
        while task.id in existing:
            n += 1
            task.id = f"{base}.{n}"
        if task.parent not in existing:
            task.parent = None
        self._write("add_task", "INSERT INTO tasks(id, parent, ord, title, criteria, toolkits, role, status, "
                    "updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (task.id, task.parent, len(existing), task.title, task.criteria, json.dumps(task.toolkits),
                     task.role, task.status, time.time()), task_id=task.id, title=task.title, parent=task.parent)
        return task

    def set_status(self, task_id: str, status: Status, result: str | None = None,
                   pointers: list[str] | None = None) -> None:
        if status not in STATUSES:
            raise ValueError(f"unknown task status {status!r}; one of {', '.join(STATUSES)}")
        sets, params = ["status = ?", "updated = ?"], [status, time.time()]
        if status == "running":
            sets.append("attempts = attempts + 1")
        if result is not None:
            sets.append("result = ?")
            params.append(result[:500])
        if pointers is not None:
            sets.append("pointers = ?")
            params.append(json.dumps(pointers))
        self._write("status", f"UPDATE tasks SET {', '.join(sets)} WHERE id = ?", (*params, task_id),
                    task_id=task_id, status=status, result=(result or "")[:200])

    def progress(self, task_id: str, status: str, message: str) -> None:
        """An actor's mid-task message (`update_progress`)."""
        self._write("progress", "INSERT INTO progress(task_id, status, message, created) VALUES (?, ?, ?, ?)",
                    (task_id, status, message[:500], time.time()), task_id=task_id, status=status,
                    message=message[:200])

    def add_report(self, report: Report) -> None:
        self._write("report", "INSERT INTO reports(task_id, status, summary, pointers, steps, guard, created, log) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (report.task_id, report.status, report.summary[:2000], json.dumps(report.pointers),
                     report.steps, report.guard, time.time(), json.dumps(report.log)),
                    task_id=report.task_id, status=report.status, guard=report.guard, summary=report.summary[:200])

    def recover(self) -> list[str]:
        """After a crash: tasks left running go back to pending (their reports, if any were written, stay)."""
        stuck = [t.id for t in self.tasks() if t.status == "running"]
        for task_id in stuck:
            self.progress(task_id, "interrupted", "the run stopped while this task was running; it runs again")
            self.set_status(task_id, "pending")
        return stuck

    # ---- reading ------------------------------------------------------------------------------------------
    def _rows(self, sql: str, params: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    def meta(self, key: str, default: Any = None) -> Any:
        rows = self._rows("SELECT value FROM meta WHERE key = ?", (key,))
        return json.loads(rows[0][0]) if rows else default

    def tasks(self) -> list[BoardTask]:
        rows = self._rows("SELECT id, title, criteria, parent, toolkits, role, status, result, pointers, attempts "
                          "FROM tasks ORDER BY ord")
        return [BoardTask(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5], r[6], r[7], json.loads(r[8]), r[9])
                for r in rows]

    def task(self, task_id: str) -> BoardTask | None:
        return next((t for t in self.tasks() if t.id == task_id), None)

    def reports(self, task_id: str | None = None) -> list[Report]:
        where, params = ("WHERE task_id = ?", (task_id,)) if task_id else ("", ())
        rows = self._rows(f"SELECT task_id, status, summary, pointers, steps, guard, log FROM reports {where} "
                          "ORDER BY id", params)
        return [Report(r[0], r[1], r[2], json.loads(r[3]), r[4], r[5], json.loads(r[6])) for r in rows]

    def messages(self, task_id: str) -> list[tuple[str, str]]:
        return [(r[0], r[1]) for r in self._rows("SELECT status, message FROM progress WHERE task_id = ? ORDER BY id",
                                                 (task_id,))]

    def next_pending(self) -> BoardTask | None:
        """The first pending task whose parent (if any) is not failed or blocked."""
        tasks = self.tasks()
        status = {t.id: t.status for t in tasks}
        return next((t for t in tasks if t.status == "pending" and status.get(t.parent or "") not in
                     ("failed", "blocked")), None)

    def markdown(self, results: bool = True) -> str:
        """The board as a Markdown checklist: nesting is the hierarchy, each item with criteria and result."""
        tasks = self.tasks()
        depth: dict[str, int] = {}
        lines = [f"Goal: {self.meta('goal', '')}"]
        for t in tasks:
            depth[t.id] = depth.get(t.parent or "", -1) + 1 if t.parent else 0
            line = f"{'  ' * depth[t.id]}- {_MARK.get(t.status, '[?]')} {t.id}. {t.title}"
            if t.criteria:
                line += f" (done when: {t.criteria})"
            if results and t.result:
                line += f" -> {t.result}"
            if results and t.pointers:
                line += f" [{', '.join(t.pointers)}]"
            lines.append(line)
        return "\n".join(lines)
