"""How `recursa run` finds a running viewer: the viewer leaves a small file in the runs folder it serves.

`recursa view RUNS_DIR` writes `RUNS_DIR/.recursa-view.json` (its process id, host and port) and removes it when it
stops. After a run, `note_run` returns the link to the run's page if a live viewer serves a folder that holds its
trace (`MethodBase.run` keeps the answer record beside the trace).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

VIEWER_FILE = ".recursa-view.json"


def write_viewer_file(root: Path, host: str, port: int) -> Path:
    path = root / VIEWER_FILE
    path.write_text(json.dumps({"pid": os.getpid(), "host": host, "port": port}), encoding="utf-8")
    return path


def remove_viewer_file(root: Path) -> None:
    path = root / VIEWER_FILE
    try:
        if json.loads(path.read_text(encoding="utf-8")).get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError, AttributeError):
        pass                             # gone already, or another viewer's file: leave it


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True                      # exists, owned by someone else
    return True


def viewer_url(root: Path) -> str | None:
    """The base URL of the live viewer serving `root`, if one is running."""
    try:
        info = json.loads((root / VIEWER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict) or not _alive(info.get("pid")) or not isinstance(info.get("port"), int):
        return None
    host = info.get("host") or "127.0.0.1"
    host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host    # a wildcard bind is reached on loopback
    return f"http://{f'[{host}]' if ':' in host else host}:{info['port']}"


def run_link(trace: Path) -> str | None:
    """The viewer page of the run whose trace is `trace`: from the nearest folder above it with a live viewer."""
    trace = trace.resolve()
    for folder in trace.parents:
        url = viewer_url(folder)
        if url:
            key = trace.relative_to(folder).with_suffix("").as_posix()
            return f"{url}/#/run/{key}"
    return None


def note_run(answer: Any) -> str | None:
    """After `recursa run`: the viewer's link to the run (whose answer record `MethodBase.run` kept beside its
    trace), if a viewer is running."""
    trace_path = getattr(answer, "trace_path", None)
    return run_link(Path(trace_path)) if trace_path else None
