"""The result check: a done whole-goal result stands only once a check finds it covers the goal (scripted model)."""

from __future__ import annotations

import json

from fakes import ScriptedModel
from test_aime import aime, call, finish, plan

from recursa.methods.aime.actor import call_line
from recursa.methods.aime.board import BoardTask, ProgressBoard, Report
from recursa.methods.aime.check import GoalStep, files_shown, needs_check, not_done, step_missing

GOAL = "Find the rye price and write twice it to price.txt"


def verdict(missing: list[str]) -> str:
    steps = [{"step": step, "done_by": "none" if step in missing else "run_python: price * 2"}
             for step in ("find the rye price", "twice the price", "write price.txt")]
    return json.dumps({"steps": steps})


def test_a_result_the_check_finds_incomplete_is_redone_once_and_its_actor_told_what_is_missing(tmp_path):
    model = ScriptedModel([plan(("1", GOAL)),
                           call("write_file", path="price.txt", content="4"), finish(summary="rye costs 4"),
                           verdict(["twice the price"]),
                           call("write_file", path="price.txt", content="8"), finish(summary="twice is 8"),
                           verdict([])])                                       # the redo, checked in turn
    answer = aime(model, tmp_path, check_numbers=False, check_result=True).run(GOAL)
    check_prompt = model.root_prompts[3][-1]["content"]
    assert "Its result: rye costs 4" in check_prompt and "- price.txt: '4'" in check_prompt
    assert "- write_file(path='price.txt', content='4') -> " in check_prompt   # the calls the check judges
    redo_prompt = model.root_prompts[4][-1]["content"]
    assert "A check sent the task back: the result does not show: twice the price." in redo_prompt
    assert redo_prompt.startswith(f"Your task: twice the price (the step left out of: {GOAL})")
    assert "do not look them up again" in redo_prompt and "- write_file(path='price.txt'" in redo_prompt
    # the first attempt is shown the prompt's example; the sampled redo, its earlier attempt's calls instead
    assert "Example (another domain)" in model.root_prompts[1][0]["content"]
    assert "Example (another domain)" not in model.root_prompts[4][0]["content"]
    assert {s.temperature for s in model.samplings} == {0.0}     # a redo is greedy: only a failed task's retry samples
    board = ProgressBoard(answer.meta["board"])
    assert [(t.status, t.attempts, t.result) for t in board.tasks()] == [("done", 2, "twice is 8")]
    assert answer.text == "twice is 8" and (tmp_path / "ws" / "price.txt").read_text() == "8"
    assert answer.meta["checks"] == {"complete": 1, "incomplete": 1}
    assert "Its result: twice is 8" in model.root_prompts[6][-1]["content"]
    assert len(model.root_prompts) == 7          # the check sends a task back once: a redo it passes stands
    assert ProgressBoard(answer.meta["board"]).messages("1")[-1] == ("checked", "the redo covers the goal")


def test_a_redo_the_check_also_finds_incomplete_is_kept_out_with_its_files(tmp_path):
    model = ScriptedModel([plan(("1", GOAL)),
                           call("write_file", path="price.txt", content="8"), finish(summary="twice is 8"),
                           verdict(["twice the price"]),                        # a wrong send-back
                           call("write_file", path="price.txt", content="10 km"), finish(summary="it is 10 km"),
                           verdict(["twice the price"])])
    answer = aime(model, tmp_path, check_numbers=False, check_result=True).run(GOAL)
    assert answer.text == "twice is 8" and (tmp_path / "ws" / "price.txt").read_text() == "8"
    task = ProgressBoard(answer.meta["board"]).task("1")
    assert (task.status, task.result, task.attempts) == ("done", "twice is 8", 2)
    assert ProgressBoard(answer.meta["board"]).messages("1")[-1] == (
        "redo kept out", "the redo does not show: twice the price; the earlier result stands")
    assert answer.meta["checks"] == {"complete": 0, "incomplete": 2} and len(model.root_prompts) == 7


def test_a_retried_goal_task_with_a_step_left_out_gets_one_more_try_past_the_attempt_cap(tmp_path):
    model = ScriptedModel([plan(("1", GOAL)),
                           finish("failed", "gave up"),                                   # try 1
                           call("write_file", path="price.txt", content="4"), finish(summary="rye costs 4"),
                           verdict(["twice the price"]),
                           call("write_file", path="price.txt", content="8"), finish(summary="twice is 8")])
    answer = aime(model, tmp_path, check_numbers=False, check_result=True).run(GOAL)
    task = ProgressBoard(answer.meta["board"]).task("1")
    assert (task.status, task.attempts, task.result) == ("done", 3, "twice is 8") and answer.text == "twice is 8"


def test_a_result_the_check_finds_complete_stands_with_no_further_call(tmp_path):
    model = ScriptedModel([plan(("1", GOAL)),
                           call("write_file", path="price.txt", content="8"), finish(summary="twice is 8"),
                           verdict([])])
    answer = aime(model, tmp_path, check_numbers=False, check_result=True).run(GOAL)
    assert answer.text == "twice is 8" and answer.meta["checks"] == {"complete": 1, "incomplete": 0}
    assert len(model.root_prompts) == 4
    assert ProgressBoard(answer.meta["board"]).messages("1")[-1] == ("checked", "the result covers the goal")


def test_an_unanswerable_check_or_an_empty_gap_list_never_throws_a_result_away(tmp_path):
    for reply in ("not json at all", json.dumps({"steps": [{"step": " ", "done_by": "none"},
                                                             {"step": "write", "done_by": "write_file"}]})):
        model = ScriptedModel([plan(("1", GOAL)), call("write_file", path="price.txt", content="8"),
                               finish(summary="twice is 8"), reply, reply, reply])
        answer = aime(model, tmp_path / reply[:3], check_numbers=False, check_result=True).run(GOAL)
        assert answer.text == "twice is 8" and answer.meta["state"] == "finished"
        assert ProgressBoard(answer.meta["board"]).task("1").attempts == 1


def test_a_failed_redo_keeps_the_checked_result(tmp_path):
    model = ScriptedModel([plan(("1", GOAL)),
                           call("write_file", path="price.txt", content="4"), finish(summary="rye costs 4"),
                           verdict(["twice the price"]), finish("failed", "could not double it")])
    answer = aime(model, tmp_path, check_numbers=False, check_result=True).run(GOAL)
    assert answer.text == "rye costs 4" and answer.meta["state"] == "finished"


def test_the_check_can_be_turned_off_and_runs_once_per_done_result(tmp_path):
    model = ScriptedModel([plan(("1", GOAL)), call("write_file", path="price.txt", content="8"),
                           finish(summary="twice is 8")])
    answer = aime(model, tmp_path, check_numbers=False, check_result=False).run(GOAL)
    assert answer.text == "twice is 8" and len(model.root_prompts) == 3
    board = ProgressBoard(tmp_path / "b.sqlite")
    board.add_task(BoardTask("1", GOAL, attempts=1, status="done"))
    board.add_report(Report("1", "done", "x"))
    assert needs_check(board, board.task("1"))
    board.progress("1", "checked", "the result covers the goal")
    assert not needs_check(board, board.task("1"))


def test_the_check_sees_the_files_a_result_points_at_and_nothing_outside_the_workspace(tmp_path):
    (tmp_path / "a.txt").write_text("x" * 500)
    shown = files_shown(tmp_path, ["a.txt", "gone.txt", "../secret"])
    assert f"- a.txt: '{'x' * 300}'" in shown and "- gone.txt: '(does not exist)'" in shown
    assert "- ../secret: '(not readable as text)'" in shown


def test_a_step_counts_as_missing_only_when_no_call_is_named_for_it():
    assert not_done("none") and not_done(" None.") and not_done("") and not_done("n/a")
    assert not not_done("run_python: print(4 * 2)") and not not_done("none of the rows: run_python")


def test_the_checks_verdict_is_held_against_the_calls_it_quotes():
    log = [call_line("run_python", {"code": "import requests\nrate = requests.get(URL)\nprint(round(125 * rate, 2))"},
                     "Error: there is no network here"),
           call_line("run_python", {"code": "from ledger import fetch_rates\nprint(fetch_rates())"}, "{'A': 0.64}"),
           call_line("write_file", {"path": "total.txt", "content": "0.64"}, "wrote 4 characters to total.txt")]
    # a step "done" only by a call that failed is missing; one done by a call that worked is not
    assert step_missing(GoalStep(step="multiply 125 by the rate", done_by="run_python: round(125 * rate, 2)"), log)
    assert not step_missing(GoalStep(step="get the rates", done_by="run_python: fetch_rates()"), log)
    assert not step_missing(GoalStep(step="write total.txt", done_by="write_file: path='total.txt'"), log)
    # a step with no call named is done when a call that worked holds its every word
    assert not step_missing(GoalStep(step="import ledger", done_by="none"), log)
    assert not step_missing(GoalStep(step="write the file total.txt", done_by="none"), log)
    assert step_missing(GoalStep(step="multiply 125 by the rate", done_by="none"), log)
    assert step_missing(GoalStep(step="import requests", done_by="none"), log)        # only in a failed call
    # a citation no call matches is taken as the check gave it
    assert not step_missing(GoalStep(step="sum the rows", done_by="python: sum of column b"), log)


def test_reports_keep_the_actors_calls_and_old_boards_open_with_an_empty_log(tmp_path):
    import sqlite3

    old = tmp_path / "old.sqlite"
    with sqlite3.connect(old) as db:   # a board from before reports had a log
        db.execute("CREATE TABLE reports (id INTEGER PRIMARY KEY AUTOINCREMENT, task_id TEXT NOT NULL, status TEXT "
                   "NOT NULL, summary TEXT NOT NULL, pointers TEXT NOT NULL, steps INTEGER NOT NULL, guard TEXT, "
                   "created REAL NOT NULL)")
        db.execute("INSERT INTO reports(task_id, status, summary, pointers, steps, created) "
                   "VALUES ('1', 'done', 's', '[]', 1, 0)")
    board = ProgressBoard(old)
    board.add_report(Report("1", "done", "t", log=["run_python(code='print(1)') -> 1"]))
    assert [r.log for r in board.reports("1")] == [[], ["run_python(code='print(1)') -> 1"]]


def test_a_call_log_with_a_placeholder_name_in_its_code_reaches_the_check_as_written(tmp_path):
    code = "r = 8\nprint(f'{result}')"        # an f-string naming one of the check prompt's own placeholders
    model = ScriptedModel([plan(("1", GOAL)), call("run_python", code=code),
                           call("write_file", path="price.txt", content="8"), finish(summary="twice is 8"),
                           verdict([])])
    aime(model, tmp_path, check_numbers=False, check_result=True).run(GOAL)
    check_prompt = model.root_prompts[4][-1]["content"]
    assert "print(f'{result}')" in check_prompt and "Its result: twice is 8" in check_prompt
