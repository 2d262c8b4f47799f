"""The sandbox: isolation, limits, the persistent REPL worker and its callback channel."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest

from recursa.core import config, sandbox
from recursa.core.errors import SandboxError
from recursa.core.sandbox import PythonWorker, run_python

needs_bwrap = pytest.mark.skipif(not sandbox.bubblewrap_works(), reason="bubblewrap not usable here")


def test_run_python_captures_output_and_exit_code():
    result = run_python("import sys\nprint('out')\nprint('err', file=sys.stderr)\nsys.exit(3)")
    assert (result.stdout, result.stderr, result.returncode, result.timed_out) == ("out\n", "err\n", 3, False)
    assert result.isolation in ("bubblewrap", "none")


@contextmanager
def loopback_listener():
    """A TCP listener on the host's loopback; yields its port."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    try:
        yield server.getsockname()[1]
    finally:
        server.close()


@needs_bwrap
def test_no_network_inside_even_to_loopback():
    with loopback_listener() as port:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass  # reachable from the host
        code = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)\nprint('connected')"
        result = run_python(code)
    assert result.isolation == "bubblewrap"
    assert "connected" not in result.stdout
    assert result.returncode != 0 and ("ConnectionRefused" in result.stderr or "unreachable" in result.stderr)


@needs_bwrap
def test_what_is_visible_is_read_only_and_workdir_is_writable(tmp_path):
    victim = tmp_path / "host.txt"
    victim.write_text("safe")
    code = (f"open('mine.txt', 'w').write('ok')\nprint(open('data/in.txt').read())\n"
            f"for path in ({str(victim)!r}, {sys.base_prefix + '/pwned.txt'!r}, '/usr/pwned.txt'):\n"
            "    try:\n        open(path, 'w').write('pwned')\n    except OSError as exc:\n        print(exc)\n")
    result = run_python(code, files={"data/in.txt": "given"})
    assert result.ok and "given" in result.stdout
    # the host's /tmp is replaced by a private one; the interpreter and /usr are there, read-only
    assert "No such file" in result.stdout and result.stdout.count("Read-only file system") == 2
    assert victim.read_text() == "safe"
    assert not Path(sys.base_prefix, "pwned.txt").exists()


@needs_bwrap
def test_code_has_no_capabilities_to_undo_the_read_only_binds():
    code = ("import subprocess\nprint([l.split()[1] for l in open('/proc/self/status') if l.startswith('CapEff')])\n"
            "r = subprocess.run(['mount', '-o', 'remount,rw,bind', '/usr'], capture_output=True, text=True)\n"
            "print(r.returncode != 0)\nopen('/usr/pwned.txt', 'w')")
    result = run_python(code)
    assert result.stdout == "['0000000000000000']\nTrue\n"
    assert "Read-only file system" in result.stderr and not Path("/usr/pwned.txt").exists()


@contextmanager
def planted(directory: Path):
    """A secret file in a host directory outside /tmp, removed afterwards."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"recursa-sandbox-secret-{uuid.uuid4().hex}.txt"
    path.write_text("SECRET")
    try:
        yield path
    finally:
        path.unlink()


@needs_bwrap
def test_sandbox_sees_no_home_no_recursa_home_and_no_checkout():
    checkout = Path(sandbox.__file__).resolve().parents[3]
    with planted(Path.home()) as in_home, planted(config.settings().home) as in_recursa_home:
        targets = [in_home, in_recursa_home, checkout / "pyproject.toml", Path(sandbox.__file__).resolve(),
                   Path(sys.prefix) / "pyvenv.cfg"]
        code = (f"import os\nfor path in {[str(t) for t in targets]!r}:\n"
                "    print(os.path.exists(path) and open(path).read()[:20])\n"
                f"print(sorted(os.listdir({str(Path.home())!r})) if os.path.isdir({str(Path.home())!r}) else [])")
        result = run_python(code)
    assert result.ok, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:-1] == ["False"] * len(targets)
    # At most the way to the interpreter's own prefix (e.g. ~/.pyenv) shows in the home directory.
    prefix = Path(sys.base_prefix).resolve()
    allowed = [prefix.relative_to(Path.home()).parts[0]] if prefix.is_relative_to(Path.home()) else []
    assert eval(lines[-1]) == allowed


@needs_bwrap
def test_worker_has_the_stdlib_it_promises():
    code = ("import collections, csv, datetime, hashlib, itertools, json, math, re, sqlite3, statistics, "
            "subprocess, textwrap, zlib\nprint(hashlib.sha256(b'x').hexdigest()[:8], json.dumps({'a': 1}))\n"
            "print(subprocess.run(['echo', 'hi'], capture_output=True, text=True).stdout.strip())")
    with PythonWorker(timeout=10.0) as w:
        result = w.execute(code)
    assert result.ok, result.stderr
    assert result.stdout == "2d711642 {\"a\": 1}\nhi\n"


@needs_bwrap
def test_sandbox_works_when_interpreter_worker_and_workdir_live_under_tmp():
    """A clone under /tmp: its venv's python, the worker script and the work directory all sit under /tmp."""
    with tempfile.TemporaryDirectory(dir="/tmp", prefix="recursa-clone-") as clone:
        root = Path(clone)
        base = getattr(sys, "_base_executable", sys.executable)
        subprocess.run([base, "-m", "venv", "--without-pip", str(root / ".venv")], check=True, timeout=120)
        src = root / "src"
        shutil.copytree(Path(sandbox.__file__).resolve().parents[1], src / "recursa")
        probe = ("from recursa.core import sandbox\nprint(sandbox.WORKER_SCRIPT)\n"
                 "print(sandbox.run_python('print(6 * 7)').stdout.strip())\n"
                 "with sandbox.PythonWorker(timeout=10.0) as w:\n"
                 "    print(w.workdir, w.execute('6 * 9').stdout.strip())")
        env = {"PATH": os.environ["PATH"], "HOME": str(Path.home()), "TMPDIR": clone,
               "PYTHONPATH": os.pathsep.join([str(src), sysconfig.get_paths()["purelib"]])}
        out = subprocess.run([str(root / ".venv/bin/python"), "-c", probe], env=env, capture_output=True,
                             text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    worker_script, one_shot, repl = out.stdout.splitlines()
    assert worker_script.startswith(clone) and one_shot == "42"
    assert repl.startswith(clone) and repl.endswith(" 54")


def test_wall_clock_timeout_kills_the_process():
    started = time.monotonic()
    result = run_python("import time\ntime.sleep(60)", timeout=1.0)
    assert result.timed_out and result.returncode != 0
    assert time.monotonic() - started < 10


def test_cpu_limit_stops_a_busy_loop_before_the_wall_timeout():
    started = time.monotonic()
    with PythonWorker(timeout=30.0, cpu_seconds=1) as w:
        result = w.execute("while True:\n    pass")
    assert result.crashed and not result.timed_out
    assert time.monotonic() - started < 15


def test_memory_limit():
    result = run_python("x = bytearray(1500 * 1024 * 1024)\nprint('allocated')", memory_mb=256)
    assert "allocated" not in result.stdout
    assert "MemoryError" in result.stderr


def test_refuses_without_isolation_unless_allowed(monkeypatch):
    monkeypatch.setattr(sandbox, "bubblewrap_works", lambda: False)
    monkeypatch.delenv("RECURSA_ALLOW_UNSANDBOXED", raising=False)
    config.settings.cache_clear()
    with pytest.raises(SandboxError, match="RECURSA_ALLOW_UNSANDBOXED=1"):
        run_python("print(1)")
    monkeypatch.setenv("RECURSA_ALLOW_UNSANDBOXED", "1")
    config.settings.cache_clear()
    result = run_python("print(1)")
    assert (result.stdout, result.isolation) == ("1\n", "none")


@pytest.fixture
def worker():
    calls: list[tuple] = []

    def shout(text: str, times: int = 1) -> str:
        calls.append((text, times))
        return text.upper() * times

    def broken() -> None:
        raise ValueError("model unavailable")

    with PythonWorker(timeout=3.0, max_output_chars=200, files={"ctx.txt": "the haystack"},
                      setup_code="context = open('ctx.txt').read()",
                      callbacks={"shout": shout, "broken": broken}) as w:
        w.calls = calls
        yield w


def test_worker_keeps_state_and_shows_trailing_expression(worker):
    assert worker.execute("x = 20\nprint('set')").stdout == "set\n"
    assert worker.execute("x + 1").stdout == "21\n"
    assert worker.execute("len(context)").stdout == "12\n"


def test_code_imports_a_module_from_its_work_directory(worker):
    assert worker.execute("open('helper.py', 'w').write('def twice(x):\\n    return 2 * x\\n')").ok
    assert worker.execute("import helper\nprint(helper.twice(21))").stdout == "42\n"


def test_worker_reports_errors_with_traceback_and_keeps_going(worker):
    worker.execute("y = 5")
    result = worker.execute("def f(:\n  pass")
    assert result.error.startswith("SyntaxError") and "line 1" in result.stderr
    result = worker.execute("y / 0")
    assert result.error == "ZeroDivisionError: division by zero" and "<block" in result.stderr
    assert worker.execute("y").stdout == "5\n"


def test_an_error_shows_the_values_its_line_used_but_not_modules_functions_or_targets():
    with PythonWorker(timeout=3.0, callbacks={"shout": str.upper}) as worker:
        _show_failing_values(worker)


def _show_failing_values(worker):
    worker.execute("rates = {'A': 2.5, 'B': 1.0}\ntotal = 3\nimport math")
    result = worker.execute("x = 1\ntotal = math.floor(10 * rates)")
    assert result.error.startswith("TypeError")
    assert result.stderr.endswith("Values on the failing line: rates = {'A': 2.5, 'B': 1.0} (dict)\n")
    result = worker.execute("def pick(table, key):\n    return table[key]\n\nprint(pick(rates, 'C') + total)")
    assert "Values on the failing line: table = {'A': 2.5, 'B': 1.0} (dict); key = 'C' (str)" in result.stderr
    assert "Values on" not in worker.execute("shout(undefined_name)").stderr     # a name that does not exist


def test_worker_timeout_restarts_and_says_state_is_lost(worker):
    worker.execute("keep = 1")
    result = worker.execute("while True:\n    pass", timeout=1.0)
    assert result.timed_out and result.state_lost and "lost" in result.stderr
    after = worker.execute("print(context)\nprint('keep' in globals())")
    assert after.stdout == "the haystack\nFalse\n"
    assert worker.restarts == 1


def test_worker_crash_is_reported_not_raised(worker):
    result = worker.execute("import os\nos._exit(7)")
    assert result.crashed and result.state_lost and "crashed" in result.stderr
    assert worker.execute("print(2 + 2)").stdout == "4\n"


def test_output_is_truncated_with_a_note(worker):
    result = worker.execute("print('a' * 5000)")
    assert result.stdout.startswith("a" * 200)
    assert "4801 more characters not shown" in result.stdout
    assert len(result.stdout) < 400


def test_callback_round_trip_and_errors(worker):
    result = worker.execute("r = shout('hi', times=2)\nprint(r)")
    assert result.stdout == "HIHI\n" and worker.calls == [("hi", 2)]
    result = worker.execute("try:\n    broken()\nexcept RuntimeError as e:\n    print('caught', e)")
    assert result.stdout == "caught ValueError: model unavailable\n"
    # Rebinding a callback name does not break it for later blocks.
    worker.execute("shout = None")
    assert worker.execute("shout('x')").stdout == "'X'\n"


def test_time_in_callbacks_does_not_count_against_the_block_timeout():
    with PythonWorker(timeout=1.0, callbacks={"slow": lambda: time.sleep(1.5) or "done"}) as w:
        result = w.execute("print(slow())")
    assert result.ok and result.stdout == "done\n"


@needs_bwrap
def test_worker_has_no_network():
    with loopback_listener() as port:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass  # the listener is reachable from the host, so a failure inside is the sandbox's doing
        with PythonWorker(timeout=5.0) as w:
            result = w.execute(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)")
    assert result.error is not None
    assert "ConnectionRefused" in result.error or "unreachable" in result.error
