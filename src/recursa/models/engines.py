"""Records of the model engines `recursa engine start` left running: one JSON file per port.

Lives in `models/` (not `engine/`) because methods read it too: `latent-mas --decoder vllm` finds the running
engine that serves its model here. Writing and stopping engines is `recursa.engine`'s job.

    RECURSA_HOME/engines/running/<port>.json   {"kind": "vllm", "pid": 1234, "port": 8011, "model": ..., ...}
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from recursa.core.config import settings


@dataclass
class EngineRecord:
    kind: str            # "vllm"
    pid: int             # the server process; its process group holds every engine process
    host: str
    port: int
    model: str           # the name it serves (what a client sends as `model`)
    folder: str          # the weights it loaded
    log: str             # the server's stdout + stderr
    started_at: float    # time.time()
    venv: str = ""

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"


def running_dir() -> Path:
    return settings().home / "engines" / "running"


def save(record: EngineRecord) -> Path:
    path = running_dir() / f"{record.port}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(record), indent=2), encoding="utf-8")
    tmp.replace(path)  # atomic: a reader never sees half a record
    return path


def remove(record: EngineRecord) -> None:
    (running_dir() / f"{record.port}.json").unlink(missing_ok=True)


def records() -> list[EngineRecord]:
    """Every recorded engine, ordered by port (including ones whose process has died: see `is_alive`)."""
    folder = running_dir()
    found = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            found.append(EngineRecord(**json.loads(path.read_text(encoding="utf-8"))))
        except (ValueError, TypeError):
            path.unlink(missing_ok=True)    # a record from another version or a torn write: it names no engine
    return sorted(found, key=lambda r: r.port)


def is_alive(pid: int) -> bool:
    """True while `pid` runs (a zombie, i.e. exited but not yet reaped, counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return True   # no /proc (macOS): kill(0) is all we know
    return fields[0] != "Z"


def find_running(model: str, kind: str = "vllm") -> EngineRecord | None:
    """A live engine of `kind` that serves `model`, if one was started with `recursa engine start`."""
    return next((r for r in records() if r.kind == kind and r.model == model and is_alive(r.pid)), None)
