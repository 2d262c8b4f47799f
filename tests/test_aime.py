"""Aime's orchestration with a scripted model (tests/fakes.py): board, planner, guards, resume, parsing, workspace.

The scripted model only drives the control flow; whether Aime solves anything is tested with the embedded model
in test_aime_model.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fakes import ScriptedModel

from recursa.core.trace import Tracer
from recursa.methods.aime.board import BoardTask, ProgressBoard, Report
from recursa.methods.aime.toolkits import ToolFailure
from recursa.methods.aime.toolkits.workspace import resolve
from recursa.methods.base import create


def plan(*tasks: tuple[str, str], action: str = "dispatch", task_id: str = "1", answer: str = "") -> str:
    add = [{"id": i, "title": t, "criteria": "done", "toolkits": ["workspace"], "role": "clerk"} for i, t in tasks]
    return json.dumps({"thought": "t", "add": add, "action": action, "task_id": task_id, "answer": answer})


def call(tool: str, **args) -> str:
    return json.dumps({"thought": "t", "tool": tool, **args})


def finish(status: str = "done", summary: str = "ok", pointers: list[str] | None = None) -> str:
    return call("finish", status=status, summary=summary, pointers=pointers or [])


def aime(model, tmp_path: Path, **options):
    options.setdefault("check_result", False)    # its own model call would shift these scripts (test_aime_check)
    return create("aime", model, workspace=str(tmp_path / "ws"), board_dir=str(tmp_path / "boards"), **options)


def test_board_persists_renders_and_traces_every_change(tmp_path):
    with Tracer.start(runs_dir=tmp_path) as tracer:
        board = ProgressBoard(tmp_path / "b.sqlite")
        board.set_meta("goal", "bake")
        board.add_task(BoardTask("1", "mix", "dough is smooth"))
        board.add_task(BoardTask("1", "knead", parent="1"))           # a reused id gets a suffix
        board.set_status("1", "running")
        board.progress("1", "milestone", "flour in")
        board.add_report(Report("1", "done", "mixed", ["dough.txt"], 3))
        board.set_status("1", "done", result="mixed", pointers=["dough.txt"])
        board.close()
    again = ProgressBoard(tmp_path / "b.sqlite")
    assert [t.id for t in again.tasks()] == ["1", "1.2"]
    assert again.markdown().splitlines()[1:] == ["- [x] 1. mix (done when: dough is smooth) -> mixed [dough.txt]",
                                                 "  - [ ] 1.2. knead"]
    assert again.reports()[0].pointers == ["dough.txt"] and again.messages("1") == [("milestone", "flour in")]
    events = [json.loads(line) for line in tracer.path.read_text().splitlines()]
    assert [e["name"] for e in events if e["kind"] == "board"] == ["meta", "add_task", "add_task", "status",
                                                                   "progress", "report", "status"]
    again.set_status("1.2", "running")
    assert again.recover() == ["1.2"] and again.task("1.2").status == "pending"


def test_replans_after_a_failed_subtask(tmp_path):
    model = ScriptedModel([
        plan(("1", "Read data.txt")),
        call("read_file", path="data.txt"),
        finish("failed", "data.txt does not exist"),
        plan(("2", "Write data.txt with 42"), task_id="2"),
        call("write_file", path="data.txt", content="42"),
        finish("done", "wrote 42", ["data.txt"]),
        plan(action="finish", answer="42"),
    ])
    answer = aime(model, tmp_path, max_attempts=1).run("Put 42 in data.txt")   # no retry of the goal's own task
    board = ProgressBoard(answer.meta["board"])
    assert [(t.id, t.status) for t in board.tasks()] == [("1", "failed"), ("2", "done")]
    assert answer.text == "42" and answer.meta["replans"] == 1 and answer.meta["state"] == "finished"
    assert (tmp_path / "ws" / "data.txt").read_text() == "42"
    assert board.task("2").pointers == ["data.txt"]
    assert "no file 'data.txt'" in model.root_prompts[2][-1]["content"]   # the actor saw the tool's error


def test_a_replanned_task_does_not_carry_the_boards_rendering_in_its_title(tmp_path):
    copied = "Read data.txt (done when: done) -> stopped by the repeat guard after 3 steps [data.txt]"
    model = ScriptedModel([plan(("1", "Read data.txt")), finish("failed", "no luck"),
                           plan(("2", copied), task_id="2"), finish("failed", "again"),
                           plan(action="give_up", answer="cannot")])
    answer = aime(model, tmp_path, max_attempts=1).run("Read data.txt")
    assert ProgressBoard(answer.meta["board"]).task("2").title == "Read data.txt"


@pytest.mark.parametrize("guard, script", [
    ("step_cap", [call("write_file", path=f"f{i}.txt", content="x") for i in range(3)]),
    ("repeat", [call("list_files")] * 3),
    ("repeat", [call("update_progress", status="milestone", message="read it")] * 3),   # a note on a loop
    ("no_progress", [call("update_progress", status="blocked", message=f"stuck {i}") for i in range(2)]),
])
def test_each_guard_stops_the_actor_and_the_planner_decides(tmp_path, guard, script):
    model = ScriptedModel([plan(("1", "work")), *script, plan(action="give_up", answer="stuck")])
    answer = aime(model, tmp_path, max_steps=3, stall_steps=2, max_attempts=1).run("goal")
    board = ProgressBoard(answer.meta["board"])
    report = board.reports()[0]
    assert report.guard == guard and report.status == "failed" and board.task("1").status == "failed"
    assert answer.meta["guards"][guard] == 1 and answer.meta["state"] == "gave_up" and answer.text == "stuck"
    if guard == "step_cap":
        assert report.pointers == ["f0.txt", "f1.txt", "f2.txt"]       # it returns what it has


def test_a_worked_around_failure_ends_with_the_workarounds_result_when_the_planner_points_nowhere(tmp_path):
    model = ScriptedModel([plan(("1", "Read data.txt")), finish("failed", "no file"),
                           plan(("2", "Ask the clerk"), task_id="2"), call("list_files"), finish("done", "42"),
                           plan(task_id="7")])                             # a task that is not on the board
    answer = aime(model, tmp_path, max_attempts=1).run("Read data.txt")
    assert answer.meta["state"] == "finished" and answer.text.startswith("42")


def test_a_failed_goal_task_is_retried_as_it_is_before_the_planner_replaces_it(tmp_path):
    model = ScriptedModel([plan(("1", "Read the data")), finish("failed", "no file yet"),   # the goal's own task
                           call("write_file", path="data.txt", content="42"), finish("done", "42", ["data.txt"])])
    answer = aime(model, tmp_path).run("Put 42 in data.txt", runs_dir=tmp_path / "runs")
    board = ProgressBoard(answer.meta["board"])
    assert [(t.id, t.status, t.attempts) for t in board.tasks()] == [("1", "done", 2)]
    retry = model.root_prompts[2]            # asked right after the failure: the actor again, not the planner
    assert "An earlier attempt at this task failed: no file yet" in retry[1]["content"]
    assert answer.text == "42" and answer.meta["planner_corrections"] == 2
    events = [json.loads(line) for line in Path(answer.trace_path).read_text().splitlines()]
    steps = [(e["reply"] is None, e["corrected"]) for e in events if (e["kind"], e["name"]) == ("planner", "step")]
    retried = "the goal's own task failed: it is retried as it is before any narrower task"
    stands = "the goal's own task is done: its result stands"
    assert steps == [(False, None), (True, retried), (True, stands)]   # both traced, with no planner reply


def test_a_first_plan_of_several_tasks_runs_the_whole_goal_first_and_splits_it_after_a_failure(tmp_path):
    goal = "Write a.txt and b.txt"
    split = (("1", "Write a.txt"), ("2", "Write b.txt"))
    model = ScriptedModel([plan(*split), finish("failed", "lost"), finish("failed", "lost again"),
                           plan(("2", "Write a.txt"), ("3", "Write b.txt"), task_id="2"),   # the split, now taken
                           call("write_file", path="a.txt", content="a"), finish(summary="a", pointers=["a.txt"]),
                           plan(task_id="3"),
                           call("write_file", path="b.txt", content="b"), finish(summary="b", pointers=["b.txt"]),
                           plan(action="finish", answer="both")])
    answer = aime(model, tmp_path).run(goal)
    tasks = ProgressBoard(answer.meta["board"]).tasks()
    assert [(t.title, t.status) for t in tasks] == [(goal, "failed"), ("Write a.txt", "done"), ("Write b.txt", "done")]
    assert answer.text == "both" and model.root_prompts[1][-1]["content"].startswith(f"Your task: {goal}")


def test_a_goal_task_that_fails_twice_goes_to_the_planner(tmp_path):
    model = ScriptedModel([plan(("1", "Read the data")), finish("failed", "no file"), finish("failed", "still none"),
                           plan(action="give_up", answer="no data")])
    answer = aime(model, tmp_path).run("Read data.txt")
    assert answer.meta["state"] == "gave_up" and answer.text == "no data"
    assert ProgressBoard(answer.meta["board"]).task("1").attempts == 2


def test_a_new_error_is_progress_and_a_stopped_actor_reports_its_last_one(tmp_path):
    errors = [call("read_file", path=f"missing{i}.txt") for i in range(3)]      # three different errors
    stuck = [call("update_progress", status="blocked", message=f"stuck {i}") for i in range(2)]
    model = ScriptedModel([plan(("1", "work")), *errors, *stuck, plan(action="give_up", answer="stuck")])
    answer = aime(model, tmp_path, max_steps=8, stall_steps=2).run("goal")
    report = ProgressBoard(answer.meta["board"]).reports()[0]
    assert report.guard == "no_progress" and report.steps == 5       # not at step 2: each error was a new one
    assert report.summary.endswith("Its last error: Error: no file 'missing2.txt'; files: none")


def test_a_failed_call_runs_once_more_before_the_repeat_guard_refuses_it(tmp_path):
    again = call("read_file", path="data.txt")
    model = ScriptedModel([plan(("1", "Read data.txt")), again, again, again, again,
                           plan(action="give_up", answer="stuck")])
    answer = aime(model, tmp_path).run("Read data.txt")
    observations = [prompt[-1]["content"] for prompt in model.root_prompts[2:5]]
    assert "no file 'data.txt'" in observations[0] and "no file 'data.txt'" in observations[1]   # retried
    assert "already made this exact call" in observations[2]
    assert ProgressBoard(answer.meta["board"]).reports()[0].guard == "repeat"


def test_malformed_replies_are_answered_and_recovered(tmp_path):
    model = ScriptedModel([
        "Sure! First we should read the file.",                       # planner: no JSON at all
        "```json\n" + plan(("1", "Write a.txt")) + "\n```",           # fenced: recovered by the parser
        '{"thought": "t", "tool": "write_file", "path": "a.txt"}',   # missing argument
        call("write_file", path="a.txt", content="hi"),
        finish(pointers=["a.txt"]),
    ])
    answer = aime(model, tmp_path).run("Write hi to a.txt")
    assert answer.meta["state"] == "finished" and answer.meta["invalid_replies"] == 2
    assert "not valid" in model.root_prompts[1][-1]["content"]
    assert (tmp_path / "ws" / "a.txt").read_text() == "hi"


def test_a_reply_cut_off_by_the_token_limit_is_asked_again_shorter():
    from pydantic import BaseModel, TypeAdapter

    from recursa.methods.aime.structured import ask
    from recursa.models.base import Completion, Sampling

    class Note(BaseModel):
        text: str

    class CutOnce:
        name = "cut-once"

        def __init__(self):
            self.replies = [Completion('{"text": "aaaaaaaa', "length", 10, 384),
                            Completion('{"text": "ok"}', "stop", 10, 5)]
            self.prompts, self.temperatures = [], []

        def generate(self, batch, sampling):
            self.prompts.append(batch[0])
            self.temperatures.append(sampling.temperature)
            return [self.replies.pop(0)]

    model = CutOnce()
    reply = ask(model, [{"role": "user", "content": "note"}], TypeAdapter(Note), Sampling(max_tokens=384))
    assert reply.value.text == "ok" and reply.errors == ["cut off at the limit of 384 tokens before it ended"]
    assert "much shorter" in model.prompts[1][-1]["content"]
    assert model.temperatures == [0.0, 0.8]     # greedy decoding would write the same unclosed string again


def test_every_tool_reply_fits_the_actor_token_default_when_its_strings_run_to_their_caps():
    from recursa.methods.aime.factory import THOUGHT_CHARS
    from recursa.methods.aime.method import AimeConfig
    from recursa.methods.aime.toolkits import python, workspace

    tokens = AimeConfig().max_tokens
    for args in (python.PythonArgs, workspace.WriteArgs):
        chars = THOUGHT_CHARS + sum(f.metadata[0].max_length for f in args.model_fields.values() if f.metadata)
        assert chars / 3.5 + 30 < tokens, args   # ~3.5 characters a token in code and prose, ~30 for the JSON


def test_a_task_that_copies_the_planner_prompts_example_is_not_added(tmp_path):
    example = "Count rows of orders.csv whose bread is rye and write the count to rye.txt"   # prompts.yaml
    model = ScriptedModel([plan(("1", "Read the data")), finish("failed", "no file"), finish("failed", "still none"),
                           plan(("2", example), task_id="2")])
    answer = aime(model, tmp_path).run("Read data.txt")
    assert answer.meta["state"] == "gave_up" and "copied the prompt's example" in answer.text
    assert [t.id for t in ProgressBoard(answer.meta["board"]).tasks()] == ["1"]


def test_planner_mistakes_are_corrected_against_the_board(tmp_path):
    model = ScriptedModel([plan(("1", "Write a.txt"), task_id="9"), call("write_file", path="a.txt", content="x"),
                           finish(), plan(action="dispatch", task_id="1"),      # 1 is done: sent back (a redo)
                           call("write_file", path="a.txt", content="y"), finish(),
                           plan(action="dispatch", task_id="1")])     # 1 has no tries left: nothing left -> finish
    answer = aime(model, tmp_path, review_goal_result=True).run("goal")
    assert answer.meta["planner_corrections"] == 3 and answer.meta["state"] == "finished"


def test_workspace_refuses_escapes(tmp_path):
    ws = tmp_path / "ws"
    (ws / "sub").mkdir(parents=True)
    (tmp_path / "secret.txt").write_text("s")
    (ws / "link").symlink_to(tmp_path)
    (ws / "sub" / "file.txt").symlink_to(tmp_path / "secret.txt")
    for bad in ("../secret.txt", "/etc/passwd", "sub/../../secret.txt", "link/secret.txt", "sub/file.txt", ""):
        with pytest.raises(ToolFailure):
            resolve(ws, bad)
    assert resolve(ws, "sub/new.txt") == ws.resolve() / "sub" / "new.txt"
    model = ScriptedModel([plan(("1", "escape")), call("write_file", path="../evil.txt", content="x"),
                           call("write_file", path="link/evil.txt", content="x"), finish("failed", "refused"),
                           plan(action="give_up", answer="refused")])
    aime(model, tmp_path).run("goal")
    assert not (tmp_path / "evil.txt").exists()
    assert "refused" in model.root_prompts[2][-1]["content"] and "refused" in model.root_prompts[3][-1]["content"]


def test_a_path_too_long_for_the_file_system_is_refused_not_a_crash(tmp_path):
    prose = "]} This is a simple function that writes the result to a file. " * 6     # a fresh goal's pointer
    with pytest.raises(ToolFailure, match="not a usable path"):
        resolve(tmp_path, prose)
    model = ScriptedModel([plan(("1", "Write a.txt")), call("write_file", path="a.txt", content="a"),
                           finish(summary="a", pointers=[prose, "a.txt"])])
    answer = aime(model, tmp_path).run("Write a.txt")
    assert answer.meta["state"] == "finished" and answer.text.startswith("a")


_CRASHING_RUN = """
import json, sys, time
sys.path.insert(0, {tests!r})
from fakes import ScriptedModel
from recursa.methods.base import create

def call(tool, **a):
    return json.dumps({{"thought": "t", "tool": tool, **a}})

class Hangs(ScriptedModel):
    def generate(self, batch, sampling):
        if not self.replies:
            print("hanging", flush=True)
            time.sleep(600)
        return super().generate(batch, sampling)

add = [{{"id": i, "title": t, "criteria": "c", "toolkits": ["workspace"], "role": "r"}}
       for i, t in (("1", "a"), ("2", "b"))]
model = Hangs([json.dumps({{"thought": "t", "add": add, "action": "dispatch", "task_id": "1", "answer": ""}}),
               call("write_file", path="a.txt", content="A"),
               call("finish", status="done", summary="wrote A", pointers=["a.txt"]),
               json.dumps({{"thought": "t", "add": [], "action": "dispatch", "task_id": "2", "answer": ""}}),
               call("write_file", path="b_partial.txt", content="half")])
create("aime", model, workspace={ws!r}, board_dir={boards!r}, split_first=True).run("write a then b")
"""


def test_resume_after_kill_9_mid_task_redoes_nothing_finished(tmp_path):
    ws, boards = tmp_path / "ws", tmp_path / "boards"
    script = _CRASHING_RUN.format(tests=str(Path(__file__).parent), ws=str(ws), boards=str(boards))
    env = {**os.environ, "RECURSA_RUNS_DIR": str(tmp_path / "runs")}
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().strip() == "hanging"      # task 2's actor is waiting for its next reply
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    run_id = next(boards.iterdir()).name
    board = ProgressBoard(boards / run_id / "board.sqlite")
    assert [t.status for t in board.tasks()] == ["done", "running"]
    board.close()
    model = ScriptedModel([plan(task_id="2"), call("write_file", path="b.txt", content="B"), finish(pointers=["b.txt"]),
                           plan(action="finish", answer="A and B")])
    answer = create("aime", model, board_dir=str(boards), resume=run_id).run("ignored: the board has the goal")
    board = ProgressBoard(answer.meta["board"])
    assert answer.text == "A and B" and [t.status for t in board.tasks()] == ["done", "done"]
    assert [r.task_id for r in board.reports()] == ["1", "2"]           # task 1's report survived, not redone
    assert "interrupted" in [status for status, _ in board.messages("2")]
    assert "write a then b" in model.root_prompts[0][1]["content"]     # the goal came from the board
    assert "wrote A" in model.root_prompts[1][1]["content"]            # task 2's actor sees task 1's result
    assert (ws / "a.txt").read_text() == "A" and (ws / "b_partial.txt").exists() and (ws / "b.txt").exists()
    again = create("aime", ScriptedModel([]), board_dir=str(boards), resume=run_id).run("x")
    assert again.text == "A and B"                                      # a finished run just answers


def test_single_actor_baseline_and_budget(tmp_path):
    from recursa.core.budget import Budget

    model = ScriptedModel([call("write_file", path="x.txt", content="1"), finish(summary="x is 1")])
    answer = aime(model, tmp_path, planner="none").run("write x")
    assert answer.text == "x is 1" and answer.meta["state"] == "finished"
    model = ScriptedModel([plan(("1", "a"))] + [call("write_file", path=f"{i}", content="x") for i in range(9)])
    method = create("aime", model, workspace=str(tmp_path / "w2"), board_dir=str(tmp_path / "b2"),
                    budget=Budget(max_calls=3))
    answer = method.run("goal")
    assert answer.stopped and "model_calls" in answer.stopped
    started = time.monotonic()
    assert ProgressBoard(answer.meta["board"]).meta("stopped") and time.monotonic() - started < 5


def test_done_without_evidence_is_refused_once(tmp_path):
    model = ScriptedModel([plan(("1", "Count")), finish(summary="7"), call("list_files"), finish(summary="0 files"),
                           plan(action="finish", answer="0")])
    answer = aime(model, tmp_path).run("count files")
    assert "No tool call has succeeded" in model.root_prompts[2][-1]["content"]
    assert ProgressBoard(answer.meta["board"]).task("1").result.startswith("0 files")


def test_done_pointing_at_a_file_never_written_is_refused_once(tmp_path):
    model = ScriptedModel([plan(("1", "Write report.md")), call("list_files"),
                           finish(summary="total 5", pointers=["report.md"]),          # report.md was never written
                           call("write_file", path="report.md", content="total: 5"),
                           finish(summary="total 5", pointers=["report.md"]), plan(action="finish", answer="5")])
    answer = aime(model, tmp_path).run("write the total to report.md")
    assert "report.md does not exist" in model.root_prompts[3][-1]["content"]
    assert (tmp_path / "ws" / "report.md").read_text() == "total: 5"
    assert ProgressBoard(answer.meta["board"]).task("1").status == "done"


def test_a_resent_plan_adds_no_duplicate_but_a_failed_task_can_come_back(tmp_path):
    model = ScriptedModel([plan(("1", "Write a.txt"), ("2", "Write b.txt")),
                           call("write_file", path="a.txt", content="a"), finish(summary="a written"),
                           plan(("1", "Write a.txt"), ("2", "Write b.txt"), task_id="2"),   # the whole plan again
                           finish("failed", "no b"),
                           plan(("1", "Write a.txt"), ("2", "write  B.txt"), task_id="2.2"),  # retry of the failed one
                           call("write_file", path="b.txt", content="b"), finish(summary="b written"),
                           plan(action="finish", answer="both")])
    answer = aime(model, tmp_path, split_first=True).run("write a.txt and b.txt")
    board = ProgressBoard(answer.meta["board"])
    assert [(t.id, t.status) for t in board.tasks()] == [("1", "done"), ("2", "failed"), ("2.2", "done")]
    assert answer.text == "both"


def test_a_title_whose_copies_failed_more_often_than_the_attempt_cap_is_not_planned_again(tmp_path):
    model = ScriptedModel([plan(("1", "Fetch the rates"), ("2", "Total them")), finish("failed", "offline"),
                           plan(("3", "Fetch the rates"), task_id="3"), finish("failed", "offline"),
                           plan(("4", "fetch the  rates"), task_id="4"), finish("failed", "offline"),
                           plan(("5", "Fetch the rates"), task_id="5"),     # a fourth copy: refused
                           finish("failed", "no rates"),                   # so the pending task runs instead
                           plan(action="give_up", answer="no rates")])
    answer = aime(model, tmp_path, split_first=True).run("fetch the rates and total them")
    board = ProgressBoard(answer.meta["board"])
    assert [(t.id, t.status) for t in board.tasks()] == [("1", "failed"), ("2", "failed"), ("3", "failed"),
                                                         ("4", "failed")]
    assert "Total them" in model.root_prompts[-2][-1]["content"] and model.replies == []
    assert answer.meta["planner_corrections"] == 1 and answer.meta["state"] == "gave_up"


def test_the_planner_is_told_the_workers_environment(tmp_path):
    (tmp_path / "ws").mkdir()
    (tmp_path / "ws" / "ledger.py").write_text("RATES = {}")
    model = ScriptedModel([plan(("1", "Sum the ledger")), call("read_file", path="ledger.py"), finish()])
    aime(model, tmp_path).run("sum the ledger")
    assert "Workers' environment: workspace files: ledger.py; no internet." in model.root_prompts[0][-1]["content"]


def test_finishing_with_a_task_still_pending_dispatches_it_first(tmp_path):
    model = ScriptedModel([plan(("1", "Write a.txt"), ("2", "Write b.txt")),
                           call("write_file", path="a.txt", content="a"), finish(summary="a written"),
                           plan(action="finish", answer="a"),                  # task 2 is still pending
                           call("write_file", path="b.txt", content="b"), finish(summary="b written"),
                           plan(action="finish", answer="both")])
    answer = aime(model, tmp_path, split_first=True).run("write a.txt and b.txt")
    board = ProgressBoard(answer.meta["board"])
    assert [(t.id, t.status) for t in board.tasks()] == [("1", "done"), ("2", "done")]
    assert answer.text == "both" and answer.meta["planner_corrections"] == 1
    assert (tmp_path / "ws" / "b.txt").read_text() == "b"


def test_a_done_report_carries_the_last_result_its_summary_left_out(tmp_path):
    model = ScriptedModel([plan(("1", "Total the crates")),
                           call("write_file", path="sums.txt", content="total 568, largest 83"),
                           call("read_file", path="sums.txt"),
                           finish(summary="The total and the largest value have been computed."),
                           plan(action="finish")])                            # no answer: the board's result
    answer = aime(model, tmp_path).run("total the crates")
    result = ProgressBoard(answer.meta["board"]).task("1").result
    assert result.startswith("The total and the largest value") and "total 568, largest 83" in result
    assert "568" in answer.text
    # a summary that already quotes its result, or a write confirmation, gets nothing appended
    model = ScriptedModel([call("write_file", path="x.txt", content="1"), call("read_file", path="x.txt"),
                           finish(summary="x.txt holds 1")])
    assert aime(model, tmp_path / "solo", planner="none").run("write x").text == "x.txt holds 1"


def test_a_failed_task_is_retried_before_a_later_one_and_the_retry_sees_why_it_failed(tmp_path):
    model = ScriptedModel([plan(("1", "Write data.txt"), ("2", "Write summary.txt")),
                           finish("failed", "data.txt is locked"),
                           plan(task_id="2"),                                  # skips past the failure
                           call("write_file", path="data.txt", content="7"), finish(summary="wrote 7"),
                           plan(task_id="2"),
                           call("write_file", path="summary.txt", content="7"), finish(summary="summary written"),
                           plan(action="finish", answer="7")])
    answer = aime(model, tmp_path, split_first=True).run("write data.txt, then summary.txt")
    board = ProgressBoard(answer.meta["board"])
    assert [(t.id, t.status, t.attempts) for t in board.tasks()] == [("1", "done", 2), ("2", "done", 1)]
    assert answer.meta["planner_corrections"] == 1
    retry_prompt = model.root_prompts[3][-1]["content"]
    assert "An earlier attempt at this task failed: data.txt is locked" in retry_prompt
    assert "An earlier attempt" not in model.root_prompts[1][-1]["content"]


def test_the_planner_may_dispatch_a_failed_task_again_until_its_attempts_run_out(tmp_path):
    model = ScriptedModel([plan(("1", "Write data.txt")), finish("failed", "locked"),
                           plan(task_id="1"), finish("failed", "still locked"),
                           plan(task_id="1"),                                  # a third try is refused
                           plan(action="give_up", answer="locked")])
    answer = aime(model, tmp_path).run("write data.txt")
    task = ProgressBoard(answer.meta["board"]).task("1")
    assert (task.status, task.attempts) == ("blocked", 2) and answer.meta["state"] == "gave_up"


@pytest.mark.parametrize("first_reply", [plan(action="finish", answer="25"), plan(action="give_up", answer="no"),
                                         "not json at all"])
def test_a_planner_that_ends_before_planning_anything_gets_the_whole_goal_as_one_task(tmp_path, first_reply):
    replies = [first_reply] * (3 if first_reply.startswith("not") else 1)   # an invalid reply is asked again twice
    model = ScriptedModel([*replies, call("write_file", path="a.txt", content="25"),
                           finish(summary="a.txt holds 25", pointers=["a.txt"])])
    answer = aime(model, tmp_path).run("write 25 to a.txt")
    board = ProgressBoard(answer.meta["board"])
    assert [(t.title, t.status) for t in board.tasks()] == [("write 25 to a.txt", "done")]
    assert (tmp_path / "ws" / "a.txt").read_text() == "25" and answer.meta["planner_corrections"] == 2


def test_the_trace_keeps_every_planner_and_actor_reply_as_written(tmp_path):
    script = [plan(("1", "Write a.txt")), call("write_file", path="a.txt", content="a"), finish(summary="a written")]
    answer = aime(ScriptedModel(list(script)), tmp_path).run("write a.txt", runs_dir=tmp_path / "runs")
    events = [json.loads(line) for line in Path(answer.trace_path).read_text().splitlines()]
    replies = [e["text"] for e in events if (e["kind"], e["name"]) == ("actor", "reply")]
    planned = [e["reply"] for e in events if (e["kind"], e["name"]) == ("planner", "step")]
    assert replies == script[1:3] and planned == [script[0], None]   # the done goal task's result stands
