"""`recursa view`'s JSON API on real run folders (tests/view_data.py): runs list, trace tree, answers, Aime board,
bench folders, bad input (torn and corrupt traces, path traversal), the viewer file and `recursa run`'s link."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import view_data
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from recursa.core.errors import ConfigError
from recursa.methods.aime.board import BoardTask, ProgressBoard
from recursa.view import links
from recursa.view.server import create_app


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("runs")
    return root, view_data.build_runs(root)


@pytest.fixture(scope="module")
def client(runs) -> TestClient:
    return TestClient(create_app(runs[0]))


def walk(nodes):
    for node in nodes:
        yield node
        yield from walk(node["children"])


def test_runs_list_newest_first_with_what_each_run_did(client, runs):
    _, keys = runs
    rows = client.get("/api/runs").json()
    assert [r["key"] for r in rows if r["key"] != keys["torn"]] == [keys["aime"], keys["text_mas"], keys["rlm"]]
    rlm = next(r for r in rows if r["key"] == keys["rlm"])
    assert (rlm["method"], rlm["model"], rlm["question"], rlm["extracted"], rlm["status"]) == \
        ("rlm", "scripted", view_data.RLM_QUESTION, "5138149", "done")
    assert rlm["tokens"] > 0 and rlm["seconds"] > 0 and rlm["problems"] == 0
    aime = next(r for r in rows if r["key"] == keys["aime"])
    assert aime["method"] == "aime" and aime["question"] == "Write a.txt"     # the goal, from the board's events
    assert next(r for r in rows if r["key"] == keys["text_mas"])["extracted"] == "7"


def test_runs_search_matches_every_word(client, runs):
    _, keys = runs
    assert [r["key"] for r in client.get("/api/runs", params={"q": "accra"}).json()] == [keys["rlm"]]
    assert [r["key"] for r in client.get("/api/runs", params={"q": "text-mas 7"}).json()] == [keys["text_mas"]]
    assert client.get("/api/runs", params={"q": "accra text-mas"}).json() == []


def test_rlm_trace_tree_nests_iterations_blocks_and_sub_calls_with_costs(client, runs):
    detail = client.get("/api/run", params={"key": runs[1]["rlm"]}).json()
    assert detail["errors"] == [] and detail["board"] is False
    [run] = detail["tree"]
    [rlm] = run["children"]
    iterations = [n for n in rlm["children"] if n["kind"] == "rlm_iteration"]
    assert [n["name"] for n in iterations] == ["iteration 1", "iteration 2"]
    block = next(n for n in iterations[0]["children"] if n["kind"] == "repl_block")
    assert "5138149" in block["attrs"]["output"] and "grep(r'Accra')" in block["attrs"]["code"]
    [sub] = [n for n in block["children"] if n["kind"] == "sub_call"]
    assert sub["name"] == "llm_query_batched" and sub["attrs"]["prompts"] == 2 and sub["attrs"]["depth"] == 1
    # a node's tokens: its own figures where it records them, else its children's sum; the run adds up to the list
    assert sub["tokens"] == sub["attrs"]["prompt_tokens"] + sub["attrs"]["completion_tokens"]
    model_calls = [n for n in walk(detail["tree"]) if n["kind"] == "model_call"]
    assert iterations[0]["tokens"] == sum(n["tokens"] for n in walk([iterations[0]]) if n["kind"] == "model_call")
    assert run["tokens"] == sum(n["tokens"] for n in model_calls) == detail["summary"]["tokens"]
    assert detail["answer"]["text"] == "5138149" and detail["answer"]["question"] == view_data.RLM_QUESTION


def test_text_mas_messages_come_from_the_saved_answer(client, runs):
    detail = client.get("/api/run", params={"key": runs[1]["text_mas"]}).json()
    agents = detail["answer"]["agents"]
    assert [a["role"] for a in agents] == ["planner", "critic", "refiner", "judger"]
    assert "What is 3 + 4?" in agents[0]["extra"]["prompt"] and "boxed{7}" in agents[-1]["text"]
    assert [n["name"] for n in detail["tree"][0]["children"][0]["children"]] == ["planner", "critic", "refiner",
                                                                                   "judger"]


def test_torn_and_corrupt_lines_are_reported_and_the_rest_loads(client, runs):
    detail = client.get("/api/run", params={"key": runs[1]["torn"]}).json()
    assert detail["errors"][0].startswith("line 2 is not valid JSON")
    assert "is incomplete" in detail["errors"][-1]
    names = [n["name"] for n in walk(detail["tree"])]
    assert "iteration 2" in names and "run" in names           # everything else is there
    row = next(r for r in client.get("/api/runs").json() if r["key"] == runs[1]["torn"])
    assert row["problems"] == 2


def test_a_run_still_going_shows_its_finished_spans_under_open_parents(runs):
    root, keys = runs
    lines = (root / f"{keys['rlm']}.jsonl").read_text().splitlines(keepends=True)
    live = root / "live"
    (live / "traces").mkdir(parents=True)
    done = next(i for i, line in enumerate(lines) if '"iteration 1"' in line) + 1
    (live / "traces" / "now.jsonl").write_text("".join(lines[:done]))   # iteration 1 done; rlm and run still open
    detail = TestClient(create_app(live)).get("/api/run", params={"key": "traces/now"}).json()
    assert detail["summary"]["status"] == "running" and detail["errors"] == []
    assert "iteration 1" in [n["name"] for n in detail["tree"]]


def test_odd_files_give_messages_not_failures(tmp_path):
    (tmp_path / "traces").mkdir()
    (tmp_path / "traces" / "odd.jsonl").write_bytes(b'[1, 2]\n\xff\xfe not json\n{"kind": "run", "seconds": "x"}\n')
    (tmp_path / "traces" / "odd.answer.json").write_text("{broken")
    client = TestClient(create_app(tmp_path))
    detail = client.get("/api/run", params={"key": "traces/odd"}).json()
    assert detail["errors"][:2] == ["line 1 is a JSON list, not an event object",
                                    "line 2 is not valid JSON (Expecting value, column 1)"]
    assert "odd.answer.json could not be read" in detail["errors"][2]
    assert detail["tree"][0]["seconds"] == 0.0 and detail["summary"]["status"] == "done"
    missing = client.get("/api/run", params={"key": "traces/gone"})
    assert missing.status_code == 404 and "no trace 'traces/gone.jsonl'" in missing.json()["detail"]


@pytest.mark.parametrize("key", ["../../etc/passwd", "/etc/passwd", "traces/../../outside", "..", "a/./../..",
                                 "traces\\..\\x", "x%2F..%2F..%2Fetc"])
def test_names_leading_outside_the_runs_folder_are_refused(client, key):
    for path in ("/api/run", "/api/board", "/api/bench", "/api/bench/plot"):
        response = client.get(path, params={"key": key})
        assert response.status_code == 403, (path, key, response.text)
        assert "refused" in response.json()["detail"]


def test_symlinks_and_static_paths_cannot_leave_the_folder(tmp_path):
    outside = tmp_path / "outside"
    (outside / "traces").mkdir(parents=True)
    (outside / "traces" / "secret.jsonl").write_text('{"kind": "run", "secret": "s3cret"}\n')
    root = tmp_path / "runs"
    root.mkdir()
    (root / "escape").symlink_to(outside, target_is_directory=True)
    client = TestClient(create_app(root))
    assert client.get("/api/run", params={"key": "escape/traces/secret"}).status_code == 403
    assert "s3cret" not in client.get("/api/runs").text            # not listed either
    for path in ("/static/..%2F..%2Fserver.py", "/static/%2e%2e/server.py", "/static/../server.py"):
        response = client.get(path)
        assert response.status_code == 404 and "RunsFolder" not in response.text


def test_a_board_outside_the_runs_folder_is_not_opened(tmp_path):
    board = ProgressBoard(tmp_path / "elsewhere" / "board.sqlite")
    board.set_meta("goal", "secret goal")
    board.close()
    root = tmp_path / "runs"
    (root / "traces").mkdir(parents=True)
    (root / "traces" / "r.jsonl").write_text(json.dumps({"kind": "board", "name": "meta", "span_id": "a",
                                                         "board": str(tmp_path / "elsewhere" / "board.sqlite")}) + "\n")
    client = TestClient(create_app(root))
    detail = client.get("/api/run", params={"key": "traces/r"}).json()
    assert detail["board"] is False and "outside the runs folder" in detail["board_note"]
    assert client.get("/api/board", params={"key": "traces/r"}).status_code == 404


def test_aime_board_snapshot_and_change_detection(client, runs):
    root, keys = runs
    snapshot = client.get("/api/board", params={"key": keys["aime"]}).json()
    assert (snapshot["goal"], snapshot["state"]) == ("Write a.txt", "finished")
    assert snapshot["answer"].startswith("wrote a.txt")      # the one task's result stands as the answer
    [task] = snapshot["tasks"]
    assert (task["title"], task["status"], task["criteria"]) == ("Write a.txt", "done", "the goal is met")
    assert task["reports"][0]["summary"] == "wrote a.txt" and task["reports"][0]["pointers"] == ["a.txt"]
    same = client.get("/api/board", params={"key": keys["aime"], "version": snapshot["version"]}).json()
    assert same == {"unchanged": True, "version": snapshot["version"]}
    board_path = next(root.glob("aime/*/board.sqlite"))
    board = ProgressBoard(board_path)                  # the run goes on: a new task lands on the board
    board.add_task(BoardTask("2", "Check a.txt"))
    board.close()
    changed = client.get("/api/board", params={"key": keys["aime"], "version": snapshot["version"]}).json()
    assert [t["title"] for t in changed["tasks"]] == ["Write a.txt", "Check a.txt"]


def test_bench_summary_and_problems_side_by_side(client, runs):
    assert [b["key"] for b in client.get("/api/benches").json()] == ["bench-toy"]
    bench = client.get("/api/bench", params={"key": "bench-toy"}).json()
    assert bench["errors"] == [] and bench["methods"] == ["single", "text-mas"]
    assert {r["method"]: r["accuracy"] for r in bench["summary"]["methods"]} == {"single": 0.6, "text-mas": 0.8}
    problems = {p["id"]: p for p in bench["problems"]}
    assert [i for i, p in problems.items() if p["disagree"]] == ["p3"]
    assert [i for i, p in problems.items() if p["all_fail"]] == ["p1"]
    assert problems["p3"]["answers"]["text-mas"]["extracted"] == "3" and problems["p3"]["gold"] == "3"
    assert client.get("/api/bench/plot", params={"key": "bench-toy"}).headers["content-type"] == "image/png"
    assert client.get("/api/bench", params={"key": "traces"}).status_code == 404


def test_bench_with_a_corrupt_record_still_loads(tmp_path):
    view_data.bench_folder(tmp_path)
    results = tmp_path / "bench-toy" / "results.jsonl"
    lines = results.read_text().splitlines()
    results.write_text("\n".join([lines[0], "{not json", '{"method": "single"}', *lines[1:]]) + "\n")
    bench = TestClient(create_app(tmp_path)).get("/api/bench", params={"key": "bench-toy"}).json()
    assert bench["errors"] == ["results.jsonl: line 2 is not valid JSON (Expecting property name enclosed in double "
                               "quotes, column 2)", "results.jsonl: 1 records have no method or id"]
    assert len(bench["problems"]) == 5


def test_missing_runs_folder_is_one_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        create_app(tmp_path / "nope")


def test_recursa_run_prints_the_link_while_a_viewer_serves_the_folder(tmp_path, monkeypatch):
    from recursa import cli

    monkeypatch.setattr(cli, "load_chat_model", lambda *a, **k: view_data.TracedScriptedModel(
        respond=lambda text: "\\boxed{9}"))
    args = ["run", "What is 4 + 5?", "--runs-dir", str(tmp_path)]
    assert "view:" not in CliRunner().invoke(cli.app, args).output                   # no viewer: no link
    before = set((tmp_path / "traces").glob("*.jsonl"))
    links.write_viewer_file(tmp_path.resolve(), "127.0.0.1", 8999)
    result = CliRunner().invoke(cli.app, args)
    [trace] = set((tmp_path / "traces").glob("*.jsonl")) - before
    assert f"view: http://127.0.0.1:8999/#/run/traces/{trace.stem}" in result.output
    saved = json.loads((tmp_path / "traces" / f"{trace.stem}.answer.json").read_text())
    assert saved["question"] == "What is 4 + 5?" and saved["extracted"] == "9"
    links.remove_viewer_file(tmp_path.resolve())
    assert not (tmp_path / links.VIEWER_FILE).exists()


def test_a_dead_viewers_file_gives_no_link(tmp_path):
    (tmp_path / links.VIEWER_FILE).write_text(json.dumps({"pid": 2**22 + 12345, "host": "127.0.0.1", "port": 1}))
    assert links.viewer_url(tmp_path) is None
    (tmp_path / links.VIEWER_FILE).write_text("garbage")
    assert links.viewer_url(tmp_path) is None


def test_recursa_view_serves_on_loopback_and_cleans_up(runs):
    root, keys = runs
    proc = subprocess.Popen([sys.executable, "-c", "from recursa.cli import app; app()", "view", str(root),
                             "--port", "0"], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 30
        while not (root / links.VIEWER_FILE).exists() and time.time() < deadline:
            time.sleep(0.1)
        info = json.loads((root / links.VIEWER_FILE).read_text())
        assert info["host"] == "127.0.0.1" and info["pid"] == proc.pid
        url = links.viewer_url(root)
        rows = httpx.get(f"{url}/api/runs", timeout=10).json()
        assert keys["rlm"] in [r["key"] for r in rows]
        assert "<title>recursa view</title>" in httpx.get(url + "/", timeout=10).text
        assert links.run_link(root / f"{keys['rlm']}.jsonl") == f"{url}/#/run/{keys['rlm']}"
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    assert not (root / links.VIEWER_FILE).exists()
