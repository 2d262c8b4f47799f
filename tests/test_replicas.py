"""Client-side balancing over replicas (`recursa bench --base-url A --base-url B`): requests spread over live
replicas, and when one replica dies mid-run (SIGKILL, requests in flight) every request still gets its answer.
The replicas are stand-in OpenAI servers in their own processes: only the HTTP behaviour matters here."""

import json
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
from typer.testing import CliRunner

from recursa.cli import app
from recursa.models.base import Sampling
from recursa.models.openai_compat import OpenAIChatModel
from recursa.models.replicas import ReplicaPool, split_base_urls

# A stand-in replica: answers "... #### <a+b>" for "Add a and b", prints one line per request it received.
REPLICA = r"""
import json, re, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()

class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        question = body["messages"][-1]["content"]
        with LOCK:                                    # one whole line per request, whatever the threads do
            sys.stdout.write("request\n")
            sys.stdout.flush()
        time.sleep(0.15)                              # a request stays in flight a while
        a, b = map(int, re.search(r"Add (\d+) and (\d+)", question).groups())
        reply = {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                 "choices": [{"index": 0, "finish_reason": "stop",
                              "message": {"role": "assistant", "content": f"The sum is #### {a + b}"}}],
                 "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print("port", server.server_address[1], flush=True)
server.serve_forever()
"""


class Replica:
    def __init__(self):
        self.process = subprocess.Popen([sys.executable, "-c", REPLICA], stdout=subprocess.PIPE, text=True)
        self.port = int(self.process.stdout.readline().split()[1])
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.requests = 0
        self.killed_after: int | None = None
        threading.Thread(target=self._count, daemon=True).start()

    def _count(self):
        for line in self.process.stdout:
            if line.startswith("request"):
                self.requests += 1

    def kill_after(self, requests: int) -> None:
        """SIGKILL once it has received `requests` requests (it then holds some in flight)."""
        def watch():
            while self.requests < requests:
                time.sleep(0.01)
            self.process.send_signal(signal.SIGKILL)
            self.killed_after = self.requests
        threading.Thread(target=watch, daemon=True).start()

    def close(self):
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


def settle(replicas):
    """Wait until the replicas' request counts stop changing: their output is read by threads that may lag."""
    last = None
    while last != (counts := [r.requests for r in replicas]):
        last = counts
        time.sleep(0.2)


@pytest.fixture
def replicas():
    started = [Replica(), Replica()]
    yield started
    for replica in started:
        replica.close()


def sum_tasks(path, n):
    path.write_text("".join(json.dumps({"id": f"s{i}", "question": f"Add {i} and {3 * i + 1}.",
                                        "answer": str(4 * i + 1)}) + "\n" for i in range(n)))
    return path


def test_bench_spreads_over_replicas_and_loses_nothing_when_one_dies(replicas, tmp_path):
    first, second = replicas
    second.kill_after(3)
    out = tmp_path / "bench"
    result = CliRunner().invoke(app, ["bench", "--task", str(sum_tasks(tmp_path / "sums.jsonl", 24)),
                                      "--methods", "single", "--backend", "openai", "--model", "m",
                                      "--base-url", first.url, "--base-url", second.url, "--batch-size", "8",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())       # rich wraps long lines
    split = re.search(rf"{first.url} answered (\d+), failed 0; {second.url} answered (\d+), failed [1-9]", said)
    assert split, said
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(records) == 24 and not any(r.get("error") for r in records)
    assert all(r["correct"] for r in records), [r["answer"] for r in records if not r["correct"]]
    assert second.process.poll() == -signal.SIGKILL and second.killed_after >= 3
    settle(replicas)
    by_first, by_second = int(split.group(1)), int(split.group(2))
    assert by_first + by_second == 24 and first.requests == by_first   # the survivor answered all the rest
    assert second.requests > by_second      # requests that were in flight on the dead replica were sent again


def test_requests_spread_evenly_over_healthy_replicas(replicas):
    first, second = replicas
    with OpenAIChatModel("m", base_url=f"{first.url},{second.url}", max_concurrency=4) as model:
        completions = model.generate([[{"role": "user", "content": f"Add {i} and 1."}] for i in range(16)],
                                     Sampling(max_tokens=4))
        stats = model.replica_stats()
    settle(replicas)
    assert [c.text for c in completions] == [f"The sum is #### {i + 1}" for i in range(16)]
    assert [s["served"] for s in stats] == [first.requests, second.requests]
    assert 6 <= first.requests <= 10 and first.requests + second.requests == 16


def test_all_replicas_down_fails_with_a_clear_error(replicas):
    for replica in replicas:
        replica.close()
    urls = [r.url for r in replicas]
    with OpenAIChatModel("m", base_url=urls, max_retries=1, backoff_seconds=0.01) as model, \
            pytest.raises(Exception, match=re.escape("cannot reach")):
        model.generate([[{"role": "user", "content": "Add 1 and 1."}]], Sampling(max_tokens=4))


def test_pool_prefers_idle_replicas_and_skips_failed_ones_until_their_cooldown():
    now = [0.0]
    pool = ReplicaPool.build(["a", "b", "c"], lambda url: url)
    pool.clock = lambda: now[0]
    pool.replicas[0].in_flight, pool.replicas[1].in_flight = 2, 1
    assert pool.pick().base_url == "c"
    pool.failed(pool.replicas[2])
    assert pool.pick().base_url == "b"
    assert pool.pick({1}).base_url == "a"
    now[0] = 1.0                                     # first failure: down for 1 s
    assert pool.pick().base_url == "c"
    pool.failed(pool.replicas[2])                   # a second failure in a row doubles the cool-off
    now[0] = 2.5
    assert pool.pick().base_url == "b"
    now[0] = 3.0
    pool.succeeded(pool.replicas[2])
    assert pool.replicas[2].is_up(now[0]) and pool.replicas[2].failures_in_a_row == 0


def test_split_base_urls():
    assert split_base_urls("http://a/v1, http://b/v1") == ["http://a/v1", "http://b/v1"]
    assert split_base_urls(["http://a/v1", "http://b/v1,http://a/v1"]) == ["http://a/v1", "http://b/v1"]
    assert split_base_urls(None) == [None]
