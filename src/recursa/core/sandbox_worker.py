"""Child side of `recursa.core.sandbox`: runs inside the sandboxed process, standard library only.

Two modes:

- `python -I sandbox_worker.py run CPU_SECONDS MEMORY_MB FSIZE_MB SCRIPT` runs one script under resource limits.
- `python -I sandbox_worker.py repl CPU_SECONDS MEMORY_MB FSIZE_MB` is a persistent REPL. It speaks JSON lines on
  the stdin/stdout it was started with (the control channel); the user code's own stdout/stderr are captured per
  block, and file descriptors 1 and 2 are pointed at a log file so stray writes (C extensions, subprocesses) can
  never corrupt the channel.

Parent -> worker: {"type": "init", "callbacks": [names], "setup": code} once, then {"type": "exec", "code": ...,
"max_chars": N} per block; while a block runs, replies {"type": "result", "value": ...} or {"type": "error",
"message": ...} to the worker's {"type": "call", "name": ..., "args": [...], "kwargs": {...}} requests.
Worker -> parent: {"type": "ready", "error": ...}, {"type": "call", ...}, {"type": "done", "stdout": ...,
"stderr": ..., "error": ..., "stdout_chars": n, "stderr_chars": n}.
"""

from __future__ import annotations

import ast
import io
import json
import keyword
import linecache
import os
import re
import reprlib
import resource
import runpy
import sys
import threading
import traceback
import types
from typing import Any


def apply_limits(cpu_seconds: int, memory_mb: int, fsize_mb: int) -> None:
    """Soft and hard limits alike, so the code cannot raise them again."""
    for limit, value in ((resource.RLIMIT_CPU, cpu_seconds), (resource.RLIMIT_AS, memory_mb * 1024 * 1024),
                         (resource.RLIMIT_FSIZE, fsize_mb * 1024 * 1024)):
        if value > 0:
            resource.setrlimit(limit, (value, value))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


class CappedBuffer(io.TextIOBase):
    """A text sink that keeps the first `cap` characters and counts the rest."""

    def __init__(self, cap: int):
        self.cap = cap
        self.parts: list[str] = []
        self.kept = 0
        self.total = 0

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        text = str(text)
        self.total += len(text)
        if self.kept < self.cap:
            piece = text[: self.cap - self.kept]
            self.parts.append(piece)
            self.kept += len(piece)
        return len(text)

    def getvalue(self) -> str:
        return "".join(self.parts)


class Channel:
    def __init__(self) -> None:
        # Keep private copies of the original stdin/stdout as the channel, then detach fds 0-2 from it.
        self._in = os.fdopen(os.dup(0), "r", encoding="utf-8")
        self._out = os.fdopen(os.dup(1), "w", encoding="utf-8")
        self._lock = threading.Lock()
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        log = os.open("worker.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(log, 1)
        os.dup2(log, 2)

    def send(self, message: dict[str, Any]) -> None:
        self._out.write(json.dumps(message, default=repr) + "\n")
        self._out.flush()

    def recv(self) -> dict[str, Any]:
        line = self._in.readline()
        if not line:
            raise SystemExit(0)  # parent went away
        return json.loads(line)

    def call(self, name: str, args: tuple, kwargs: dict) -> Any:
        with self._lock:  # one request in flight at a time, even if user code uses threads
            self.send({"type": "call", "name": name, "args": list(args), "kwargs": kwargs})
            reply = self.recv()
        if reply.get("type") == "error":
            raise RuntimeError(reply.get("message", "callback failed"))
        return reply.get("value")


class Repl:
    def __init__(self, channel: Channel):
        self.channel = channel
        self.namespace: dict[str, Any] = {"__name__": "__main__", "__builtins__": __builtins__}
        self.protected: dict[str, Any] = {}
        self.blocks = 0

    def install_callbacks(self, names: list[str]) -> None:
        for name in names:
            self.protected[name] = self._proxy(name)
        self.namespace.update(self.protected)

    def _proxy(self, name: str):
        channel = self.channel

        def proxy(*args: Any, **kwargs: Any) -> Any:
            return channel.call(name, args, kwargs)

        proxy.__name__ = name
        return proxy

    def run(self, code: str, max_chars: int) -> dict[str, Any]:
        self.blocks += 1
        filename = f"<block {self.blocks}>"
        linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
        out, err = CappedBuffer(max_chars), CappedBuffer(max_chars)
        error = None
        saved = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = out, err
        try:
            tree = ast.parse(code, filename, "exec")
            last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
            exec(compile(tree, filename, "exec"), self.namespace)
            if last is not None:  # like a notebook: show the value of a trailing expression
                value = eval(compile(ast.Expression(last.value), filename, "eval"), self.namespace)
                if value is not None:
                    print(repr(value))
        except BaseException as exc:  # noqa: BLE001 - everything the code raises is reported, nothing escapes
            if isinstance(exc, SystemExit) and exc.code in (None, 0):
                pass
            else:
                error = f"{type(exc).__name__}: {exc}"
                err.write(self._format(exc, filename))
        finally:
            sys.stdout, sys.stderr = saved
            self.namespace.update(self.protected)  # user code cannot break the callbacks by rebinding them
        return {"type": "done", "stdout": out.getvalue(), "stderr": err.getvalue(), "error": error,
                "stdout_chars": out.total, "stderr_chars": err.total}

    def _format(self, exc: BaseException, filename: str) -> str:
        if isinstance(exc, SyntaxError):
            return "".join(traceback.format_exception_only(type(exc), exc))
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename.startswith("<block")]
        text = "Traceback (most recent call last):\n" if frames else ""
        text += "".join(traceback.format_list(frames))
        text += "".join(traceback.format_exception_only(type(exc), exc))
        values = failing_values(exc, set(self.protected))
        return text + (f"{VALUES_SHOWN}{values}\n" if values else "")


VALUES_SHOWN = "Values on the failing line: "
_NAME = re.compile(r"(?<![\w.])[A-Za-z_]\w*")
_ASSIGNED = re.compile(r"\s*([A-Za-z_][\w\s,]*)=(?!=)")
_SHORT = reprlib.Repr()      # keyword arguments need Python 3.12; the sandbox's interpreter may be older
_SHORT.maxstring = _SHORT.maxother = 80
_SHORT.maxlist = _SHORT.maxtuple = _SHORT.maxdict = _SHORT.maxset = 6
_SHORT.maxlevel = 2


def failing_values(exc: BaseException, hidden: set[str], most: int = 4) -> str:
    """The data the user's failing line named, as short reprs with their types (`rate = {'A': 2.1} (dict)`): a
    TypeError or KeyError says what went wrong, not what the value was, and code written against a guessed shape
    fails again the same way until the value is printed. Modules, functions, classes and callbacks are left out."""
    frame, lineno = None, 0
    for candidate, line_number in traceback.walk_tb(exc.__traceback__):
        if candidate.f_code.co_filename.startswith("<block"):
            frame, lineno = candidate, line_number
    if frame is None:
        return ""
    line = linecache.getline(frame.f_code.co_filename, lineno)
    assigned = _ASSIGNED.match(line)      # a target's value is from before the line: not what the line used
    hidden = hidden | set(_NAME.findall(assigned.group(1))) if assigned else hidden
    shown = []
    for name in dict.fromkeys(_NAME.findall(line)):
        if keyword.iskeyword(name) or name in hidden:
            continue
        scope = frame.f_locals if name in frame.f_locals else frame.f_globals
        if name not in scope:
            continue
        value = scope[name]
        if callable(value) or isinstance(value, types.ModuleType):
            continue
        try:
            shown.append(f"{name} = {_SHORT.repr(value)} ({type(value).__name__})")
        except Exception:  # noqa: BLE001 - a value whose repr fails is left out
            continue
        if len(shown) == most:
            break
    return "; ".join(shown)


def serve_repl() -> None:
    channel = Channel()
    repl = Repl(channel)
    init = channel.recv()
    repl.install_callbacks(init.get("callbacks", []))
    setup_error = None
    if init.get("setup"):
        result = repl.run(init["setup"], 4000)
        setup_error = result["error"] and (result["stderr"] or result["error"])
    channel.send({"type": "ready", "error": setup_error})
    while True:
        message = channel.recv()
        if message.get("type") == "exec":
            channel.send(repl.run(message["code"], int(message.get("max_chars", 20000))))
        elif message.get("type") == "exit":
            return


def main(argv: list[str]) -> None:
    mode, cpu, memory, fsize = argv[0], int(argv[1]), int(argv[2]), int(argv[3])
    apply_limits(cpu, memory, fsize)
    # -I keeps the host's site and environment out, and with them the work directory: put that back, so code can
    # import the modules beside it, as `python script.py` run from that directory can
    sys.path.insert(0, os.getcwd())
    if mode == "run":
        sys.argv = [argv[4]]
        runpy.run_path(argv[4], run_name="__main__")
    elif mode == "repl":
        serve_repl()
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
