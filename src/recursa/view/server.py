"""`recursa view`: a local web app over one runs folder (traces, answers, Aime boards, bench folders).

The JSON API reads files under the runs folder only: every name a page sends is a path relative to that folder,
and one that leads outside it (`..`, an absolute path, a symbolic link pointing out) is refused with 403. The
front end is static files in `static/` (plain HTML, JavaScript and CSS: nothing to build).
"""

from __future__ import annotations

import re
import signal
import socket
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Query
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from recursa.core.errors import ConfigError
from recursa.view import benches, boards, links
from recursa.view.traces import build_tree, load_answer, read_jsonl, summarize_run

STATIC = Path(__file__).parent / "static"
_KEY = re.compile(r"[A-Za-z0-9._\-/]{1,400}")
_SCAN_DEPTH = 3                          # runs/traces, runs/<bench>/traces, runs/<group>/<bench>/traces


class RunsFolder:
    """The folder a viewer serves, and the one way a name from a page becomes a file in it."""

    def __init__(self, root: Path):
        self.root = root.resolve()
        self._summaries: dict[Path, tuple[tuple, dict[str, Any]]] = {}

    def resolve(self, key: str, suffix: str = "") -> Path:
        """`key` (a relative path, as the list pages give it) inside the folder; 403 if it leads outside."""
        if not _KEY.fullmatch(key) or key.startswith("/") or ".." in key.split("/"):
            raise HTTPException(403, f"refused: '{key}' is not a path inside the runs folder")
        path = (self.root / (key + suffix)).resolve()
        if not path.is_relative_to(self.root):
            raise HTTPException(403, f"refused: '{key}' leads outside the runs folder")
        return path

    def key_of(self, path: Path, suffix: str = "") -> str:
        text = path.relative_to(self.root).as_posix()
        return text[:-len(suffix)] if suffix and text.endswith(suffix) else text

    # ---- runs ---------------------------------------------------------------------------------------------------
    def trace_files(self) -> list[Path]:
        found = []
        for depth in range(_SCAN_DEPTH):
            found += self.root.glob("/".join(["*"] * depth + ["traces", "*.jsonl"]))
        # a bench's own trace (every sample of every method) is linked from its bench page, not listed as a run
        return [p for p in found if p.is_file() and p.resolve().is_relative_to(self.root)
                and not benches.is_bench(p.parent.parent)]

    def run_summary(self, path: Path) -> dict[str, Any]:
        """A cached row of the runs list (read again when the trace or its answer changes)."""
        answer_file = path.with_name(path.stem + ".answer.json")
        stamp = tuple((s.st_mtime_ns, s.st_size) for s in (f.stat() for f in (path, answer_file) if f.exists()))
        cached = self._summaries.get(path)
        if cached and cached[0] == stamp:
            return cached[1]
        answer, _ = load_answer(path)
        row = summarize_run(self.key_of(path, ".jsonl"), path, read_jsonl(path), answer)
        self._summaries[path] = (stamp, row)
        return row

    def run_detail(self, key: str) -> dict[str, Any]:
        path = self.resolve(key, ".jsonl")
        if not path.is_file():
            raise HTTPException(404, f"no trace '{key}.jsonl' in the runs folder (it was moved or deleted)")
        loaded = read_jsonl(path)
        answer, answer_error = load_answer(path)
        errors = loaded.errors + ([answer_error] if answer_error else [])
        board, board_note = self._board_of(path, loaded.records)
        return {"summary": summarize_run(key, path, loaded, answer), "tree": build_tree(loaded.records),
                "errors": errors, "answer": answer, "board": board is not None, "board_note": board_note}

    def _board_of(self, trace: Path, events: list[dict[str, Any]]) -> tuple[Path | None, str | None]:
        """An Aime run's board: where the trace's board events say it is, else `aime/<run id>/` beside the
        trace's folder. A board outside the runs folder is not opened."""
        named = next((e["board"] for e in events if e.get("kind") == "board" and isinstance(e.get("board"), str)),
                     None)
        run_id = str(events[0].get("run_id", trace.stem)) if events else trace.stem
        candidates = [Path(named)] if named else []
        candidates.append(trace.parent.parent / "aime" / run_id / "board.sqlite")
        for candidate in candidates:
            path = candidate.resolve()
            if path.is_file():
                if path.is_relative_to(self.root):
                    return path, None
                return None, f"the board {candidate} is outside the runs folder; it is not shown"
        if named:
            return None, f"the board {named} is missing"
        return None, None

    def board(self, key: str) -> Path:
        path = self.resolve(key, ".jsonl")
        if not path.is_file():
            raise HTTPException(404, f"no trace '{key}.jsonl' in the runs folder")
        board, note = self._board_of(path, read_jsonl(path).records)
        if board is None:
            raise HTTPException(404, note or f"run '{key}' has no Aime board")
        return board

    # ---- benches ------------------------------------------------------------------------------------------------
    def bench_folders(self) -> list[Path]:
        found = []
        for depth in range(1, _SCAN_DEPTH):
            found += [p for p in self.root.glob("/".join(["*"] * depth)) if p.is_dir() and benches.is_bench(p)]
        return [p for p in found if p.resolve().is_relative_to(self.root)]

    def bench_folder(self, key: str) -> Path:
        path = self.resolve(key)
        if not path.is_dir() or not benches.is_bench(path):
            raise HTTPException(404, f"'{key}' is not a bench folder (no results.jsonl or bench.json)")
        return path


def create_app(runs_dir: Path) -> FastAPI:
    """The viewer over `runs_dir` (which must exist)."""
    if not runs_dir.is_dir():
        raise ConfigError(f"runs folder {runs_dir} does not exist; give the folder `recursa run`/`bench` wrote to")
    folder = RunsFolder(runs_dir)
    app = FastAPI(title="recursa view", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.folder = folder

    @app.get("/")
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/api/info")
    def info() -> dict[str, Any]:
        return {"root": str(folder.root)}

    @app.get("/api/runs")
    def runs(q: str = "") -> list[dict[str, Any]]:
        rows = [folder.run_summary(p) for p in folder.trace_files()]
        words = q.lower().split()
        rows = [r for r in rows if all(w in _haystack(r) for w in words)]
        return sorted(rows, key=lambda r: r["started"], reverse=True)

    @app.get("/api/run")
    def run(key: str = Query(...)) -> dict[str, Any]:
        return folder.run_detail(key)

    @app.get("/api/board")
    def board(key: str = Query(...), version: str = "") -> dict[str, Any]:
        path = folder.board(key)
        current = boards.board_version(path)
        if version and version == current:
            return {"unchanged": True, "version": current}
        return boards.board_snapshot(path)

    @app.get("/api/benches")
    def bench_list() -> list[dict[str, Any]]:
        rows = [benches.bench_row(folder.key_of(p), p) for p in folder.bench_folders()]
        return sorted(rows, key=lambda r: r["modified"], reverse=True)

    @app.get("/api/bench")
    def bench(key: str = Query(...)) -> dict[str, Any]:
        path = folder.bench_folder(key)
        traces = sorted(folder.key_of(p, ".jsonl") for p in path.glob("traces/*.jsonl"))
        return {**benches.load_bench(key, path), "traces": traces}

    @app.get("/api/bench/plot")
    def bench_plot(key: str = Query(...)) -> FileResponse:
        path = folder.bench_folder(key) / "summary.png"
        if not path.is_file():
            raise HTTPException(404, "no summary.png yet (`recursa bench` writes it when it finishes)")
        return FileResponse(path, media_type="image/png")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def _haystack(row: dict[str, Any]) -> str:
    return " ".join(str(row.get(k) or "") for k in ("key", "method", "model", "question", "extracted",
                                                    "status")).lower()


def _loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


def _exit_on_signal(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)


def listen(host: str, port: int) -> socket.socket:
    """A socket bound to host:port (port 0: any free port), so a port in use is one clear error."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); pick another --port") from exc
    return sock


def serve(runs_dir: Path, host: str = "127.0.0.1", port: int = 8765) -> None:
    """Serve the viewer until interrupted; leave the viewer file for `recursa run` while it is up."""
    import uvicorn

    from recursa.console import console

    app = create_app(runs_dir)
    root = app.state.folder.root
    sock = listen(host, port)
    port = sock.getsockname()[1]
    if not _loopback(host):
        console.print(f"[yellow]warning:[/] listening on {host}: anyone who can reach this machine can read the "
                      f"traces under {root}")
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}/"
    console.print(f"recursa view: {root} at {url}  (Ctrl-C stops)")
    links.write_viewer_file(root, host, port)
    # uvicorn re-raises SIGTERM once it has shut down; as SystemExit it lets the `finally` remove the viewer file
    signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
    finally:
        links.remove_viewer_file(root)
