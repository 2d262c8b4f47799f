"""Run model-written Python in a separate, limited process: one-shot (`run_python`) or persistent (`PythonWorker`).

Isolation: with bubblewrap (`bwrap`) the process sees a minimal file system: the system directories (/usr and
the /bin, /lib links), the dynamic linker's configuration, the Python interpreter's own prefix and the worker script,
all read-only; a private /tmp; and its own work directory as the only writable place. Nothing else of the host is
there (not the user's home, not `RECURSA_HOME`, not the checkout or its virtual environment). It also gets its own
PID namespace, no capabilities and no network. Without bubblewrap the code runs as a plain subprocess (network
and files open), which is refused unless the user opts in with `RECURSA_ALLOW_UNSANDBOXED=1`. Either way the
child gets CPU-time, address-space and file-size limits (`RLIMIT_CPU`, `RLIMIT_AS`, `RLIMIT_FSIZE`), and the
parent enforces a wall-clock timeout.

The persistent worker talks JSON lines over its stdin/stdout (see `sandbox_worker.py`); code inside it can call
back into the parent (e.g. `llm_query`) through named callbacks, which is how sandboxed code reaches models
without a network.
"""

from __future__ import annotations

import json
import logging
import math
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from recursa.core.errors import SandboxError

log = logging.getLogger("recursa.sandbox")
WORKER_SCRIPT = Path(__file__).with_name("sandbox_worker.py")
DEFAULT_OUTPUT_CHARS = 20_000
_announced: set[str] = set()


@dataclass
class SandboxResult:
    stdout: str
    stderr: str
    returncode: int | None
    timed_out: bool
    isolation: str          # "bubblewrap" or "none"

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out


@lru_cache(maxsize=1)
def bubblewrap_works() -> bool:
    """bwrap is installed and can create namespaces here (containers sometimes forbid that)."""
    bwrap = shutil.which("bwrap")
    if not bwrap:
        return False
    try:
        probe = subprocess.run([bwrap, "--unshare-net", "--unshare-pid", "--die-with-parent", "--cap-drop", "ALL",
                                "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "true"],
                               capture_output=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


def isolation() -> str:
    """The isolation model-written code gets: "bubblewrap", or "none" if the user allowed unsandboxed runs.

    Raises SandboxError when there is no isolation and the user has not opted in.
    """
    from recursa.core.config import settings

    mode = "bubblewrap" if bubblewrap_works() else "none"
    if mode == "none" and not settings().allow_unsandboxed:
        raise SandboxError("bubblewrap (bwrap) is not available, so model-written code would run with full access "
                           "to files and network. Install it (apt-get install -y bubblewrap) or, to run without "
                           "isolation at your own risk, set RECURSA_ALLOW_UNSANDBOXED=1.")
    if mode not in _announced:
        _announced.add(mode)
        if mode == "none":
            log.warning("sandbox isolation: none (RECURSA_ALLOW_UNSANDBOXED=1): code runs with rlimits only")
        else:
            log.info("sandbox isolation: bubblewrap (no network; sees only system libraries, the interpreter, "
                     "a private /tmp and its work dir)")
    return mode


# Host paths the sandbox sees: system directories (top-level links are recreated as links, as on merged-/usr
# systems) and the few /etc files the dynamic linker and `time` read. No certificates: there is no network.
_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_SYSTEM_FILES = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime")


@lru_cache(maxsize=1)
def _interpreter() -> tuple[str, tuple[str, ...]]:
    """The real interpreter to run inside, and the prefixes it needs (read-only).

    A venv's `python` is a link into the base installation (often under the home directory, e.g. pyenv); running
    the base interpreter means the venv and its site-packages stay outside: the worker needs the stdlib only.
    """
    base = os.path.realpath(getattr(sys, "_base_executable", "") or sys.executable)
    if os.path.isfile(base) and os.access(base, os.X_OK):
        roots = {sys.base_prefix, sys.base_exec_prefix, os.path.dirname(base)}
    else:  # no usable base interpreter (e.g. a copied venv whose base moved): run this one, with its venv
        base = os.path.realpath(sys.executable)
        roots = {sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix, os.path.dirname(base)}
    roots |= {os.path.realpath(root) for root in roots}
    outer = [root for root in roots if not _covered(root, [r for r in roots if r != root])]
    return base, tuple(sorted(outer))


def _covered(path: str, by: list[str]) -> bool:
    return any(path == root or path.startswith(root.rstrip("/") + "/") for root in by)


def _mounts(workdir: Path) -> list[str]:
    """bwrap arguments for the minimal view; parents are mounted before what lies inside them."""
    args: list[str] = []
    system = [d for d in _SYSTEM_DIRS if os.path.lexists(d)]
    for path in system:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        else:
            args += ["--ro-bind", path, path]
    for path in _SYSTEM_FILES:
        args += ["--ro-bind-try", path, path]
    args += ["--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]
    # Bound after the private /tmp, so they stay visible wherever they live (a clone under /tmp included).
    real_system = [os.path.realpath(d) for d in system]
    roots = [root for root in _interpreter()[1] if not _covered(root, real_system)]
    binds = [("--ro-bind", root) for root in roots]
    if not _covered(os.path.realpath(WORKER_SCRIPT), real_system + roots):
        binds.append(("--ro-bind", str(WORKER_SCRIPT)))
    binds.append(("--bind", str(workdir)))
    for flag, path in sorted(binds, key=lambda item: item[1].count("/")):
        args += [flag, path, path]
    return args


def _command(mode: str, workdir: Path, worker_args: list[str]) -> list[str]:
    if mode == "none":
        return [sys.executable, "-I", str(WORKER_SCRIPT), *worker_args]
    python = [_interpreter()[0], "-I", str(WORKER_SCRIPT), *worker_args]
    # No capabilities: run as root, the code could otherwise remount the read-only binds writable.
    return [shutil.which("bwrap") or "bwrap", "--unshare-net", "--unshare-pid", "--unshare-ipc", "--die-with-parent",
            "--new-session", "--cap-drop", "ALL", *_mounts(workdir), "--chdir", str(workdir), *python]


def _environment(workdir: Path) -> dict[str, str]:
    """A small, explicit environment: nothing of the parent's (keys, tokens) leaks into the sandbox."""
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(workdir), "TMPDIR": str(workdir),
            "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONIOENCODING": "utf-8"}


def _write_files(workdir: Path, files: dict[str, str] | None) -> None:
    for name, text in (files or {}).items():
        target = (workdir / name).resolve()
        if workdir.resolve() not in target.parents:
            raise SandboxError(f"sandbox file name {name!r} escapes the work directory; use a relative path")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()
    proc.wait()


def run_python(code: str, timeout: float = 10.0, memory_mb: int = 1024, files: dict[str, str] | None = None,
               max_output_bytes: int = 1_000_000) -> SandboxResult:
    """Run `code` as a script in a fresh sandboxed process and its own temporary directory."""
    mode = isolation()
    with tempfile.TemporaryDirectory(prefix="recursa-run-") as tmp:
        workdir = Path(tmp)
        _write_files(workdir, files)
        (workdir / "main.py").write_text(code, encoding="utf-8")
        cpu = max(1, math.ceil(timeout)) + 1
        fsize = max(16, max_output_bytes // 1_000_000 * 4)
        cmd = _command(mode, workdir, ["run", str(cpu), str(memory_mb), str(fsize), "main.py"])
        with open(workdir / ".stdout", "wb") as out, open(workdir / ".stderr", "wb") as err:
            proc = subprocess.Popen(cmd, cwd=workdir, env=_environment(workdir), stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=err, start_new_session=True)
            timed_out = False
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
                _kill(proc)

        def read(name: str) -> str:
            with open(workdir / name, "rb") as handle:
                return handle.read(max_output_bytes).decode("utf-8", errors="replace")

        return SandboxResult(read(".stdout"), read(".stderr"), proc.returncode, timed_out, mode)


def truncate(text: str, max_chars: int, total: int | None = None) -> str:
    """Cut `text` to `max_chars` and say how much was left out (`total` = true length if known)."""
    total = len(text) if total is None else max(total, len(text))
    if total <= max_chars:
        return text
    return (text[:max_chars] + f"\n... [output truncated: {total - max_chars} more characters not shown; "
            "print less, e.g. len(x), x[:500] or a summary]")


@dataclass
class BlockResult:
    """What one code block did inside a `PythonWorker`."""

    stdout: str = ""
    stderr: str = ""
    error: str | None = None        # "ExcType: message" when the code raised
    timed_out: bool = False
    crashed: bool = False           # the worker died (memory, CPU limit, os._exit, ...)
    state_lost: bool = False        # the worker was restarted: variables from earlier blocks are gone
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None and not self.timed_out and not self.crashed

    def text(self) -> str:
        """stdout then stderr, as the model is shown it."""
        parts = [p for p in (self.stdout.rstrip("\n"), self.stderr.rstrip("\n")) if p]
        return "\n".join(parts) if parts else "(no output)"


Callback = Callable[..., Any]


class PythonWorker:
    """A long-lived sandboxed Python process that keeps its variables between code blocks.

    `callbacks` are parent-side functions the code can call by name (arguments and results travel as JSON).
    `setup_code` runs at every (re)start, e.g. to load `context` from one of `files`; so after a crash the data
    is back although the model's own variables are gone.
    """

    def __init__(self, *, timeout: float = 30.0, memory_mb: int = 1024, cpu_seconds: int = 600,
                 max_output_chars: int = DEFAULT_OUTPUT_CHARS, files: dict[str, str] | None = None,
                 setup_code: str = "", callbacks: dict[str, Callback] | None = None):
        self.timeout = timeout
        self.memory_mb = memory_mb
        self.cpu_seconds = cpu_seconds
        self.max_output_chars = max_output_chars
        self.setup_code = setup_code
        self.callbacks = dict(callbacks or {})
        self.mode = isolation()
        self.workdir = Path(tempfile.mkdtemp(prefix="recursa-repl-"))
        _write_files(self.workdir, files)
        self.restarts = 0
        self._proc: subprocess.Popen | None = None
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._state_lost = False

    # ---- lifecycle ---------------------------------------------------------------------------------
    def __enter__(self) -> PythonWorker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        if self.alive:
            return
        cmd = _command(self.mode, self.workdir, ["repl", str(self.cpu_seconds), str(self.memory_mb), "256"])
        self._proc = subprocess.Popen(cmd, cwd=self.workdir, env=_environment(self.workdir), stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, encoding="utf-8",
                                      bufsize=1, start_new_session=True)
        self._lines = queue.Queue()
        threading.Thread(target=self._pump, args=(self._proc, self._lines), daemon=True).start()
        self._send({"type": "init", "callbacks": sorted(self.callbacks), "setup": self.setup_code})
        ready = self._read(max(30.0, self.timeout))
        if ready is None or ready.get("type") != "ready":
            self._stop()
            raise SandboxError(f"the sandboxed Python worker did not start ({self._log_tail() or 'no output'}); "
                               "check that bubblewrap works (bwrap --ro-bind / / true) and memory_mb is large enough")
        if ready.get("error"):
            log.warning("sandbox setup code failed: %s", ready["error"])

    def close(self) -> None:
        self._stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def _stop(self) -> None:
        if self._proc is not None:
            if self._proc.poll() is None:
                _kill(self._proc)
            for stream in (self._proc.stdin, self._proc.stdout):
                if stream:
                    stream.close()
            self._proc = None

    def _restart_later(self) -> None:
        self._stop()
        self.restarts += 1
        self._state_lost = True

    # ---- channel -----------------------------------------------------------------------------------
    @staticmethod
    def _pump(proc: subprocess.Popen, lines: queue.Queue) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    def _send(self, message: dict[str, Any]) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        self._proc.stdin.write(json.dumps(message, default=repr) + "\n")
        self._proc.stdin.flush()

    def _read(self, timeout: float) -> dict[str, Any] | None:
        """The next message; None on timeout; {"type": "eof"} when the worker closed its output (it died)."""
        try:
            line = self._lines.get(timeout=max(0.0, timeout))
        except queue.Empty:
            return None
        return {"type": "eof"} if line is None else json.loads(line)

    def _log_tail(self, chars: int = 600) -> str:
        path = self.workdir / "worker.log"
        return path.read_text(errors="replace")[-chars:].strip() if path.exists() else ""

    # ---- running code ------------------------------------------------------------------------------
    def execute(self, code: str, timeout: float | None = None) -> BlockResult:
        """Run one block. Never raises for what the code does: errors, timeouts and crashes are in the result."""
        timeout = self.timeout if timeout is None else timeout
        started = time.perf_counter()
        state_lost, self._state_lost = self._state_lost, False
        try:
            self.start()
            self._send({"type": "exec", "code": code, "max_chars": self.max_output_chars})
        except (OSError, SandboxError) as exc:
            self._restart_later()
            return BlockResult(stderr=f"The REPL could not run this block: {exc}", error="SandboxError",
                               crashed=True, state_lost=True, seconds=time.perf_counter() - started)
        deadline = time.monotonic() + timeout
        while True:
            message = self._read(deadline - time.monotonic())
            if message is None or message["type"] == "eof":
                # the end of its output means the worker died, even if it is not reaped yet (poll() lags the EOF)
                timed_out = message is None and self.alive
                detail = self._log_tail()
                self._restart_later()
                if timed_out:
                    note = (f"TimeoutError: the block ran longer than {timeout:g} s and was stopped. The REPL was "
                            "restarted: variables from earlier blocks are lost (`context` is loaded again).")
                else:
                    note = ("The REPL process crashed (out of memory, CPU limit or a hard exit) and was restarted: "
                            "variables from earlier blocks are lost (`context` is loaded again)."
                            + (f"\nLast log lines: {detail}" if detail else ""))
                return BlockResult(stderr=note, error="TimeoutError" if timed_out else "WorkerCrashed",
                                   timed_out=timed_out, crashed=not timed_out, state_lost=True,
                                   seconds=time.perf_counter() - started)
            if message["type"] == "call":
                # Time spent in the parent (model calls) does not count against the block's timeout.
                call_started = time.monotonic()
                self._answer_call(message)
                deadline += time.monotonic() - call_started
                continue
            if message["type"] == "done":
                return BlockResult(stdout=truncate(message["stdout"], self.max_output_chars, message["stdout_chars"]),
                                   stderr=truncate(message["stderr"], self.max_output_chars, message["stderr_chars"]),
                                   error=message.get("error"), state_lost=state_lost,
                                   seconds=time.perf_counter() - started)

    def _answer_call(self, message: dict[str, Any]) -> None:
        name = message.get("name", "")
        function = self.callbacks.get(name)
        try:
            if function is None:
                raise SandboxError(f"no callback named {name!r}")
            reply = {"type": "result", "value": function(*message.get("args", []), **message.get("kwargs", {}))}
        except Exception as exc:  # noqa: BLE001 - the error goes back to the code that called, as an exception
            reply = {"type": "error", "message": f"{type(exc).__name__}: {exc}"}
        self._send(reply)
