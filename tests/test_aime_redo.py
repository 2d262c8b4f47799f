"""Aime sends back a "done" result it judges wrong; actors see what they already found, which files are too long,
that there is no network, and the knowledge given with the goal."""

from __future__ import annotations

from fakes import ScriptedModel
from test_aime import aime, call, finish, plan

from recursa.methods.aime.actor import error_line
from recursa.methods.aime.board import BoardTask, ProgressBoard
from recursa.methods.aime.factory import names_file, toolkits_for
from recursa.methods.aime.toolkits import ToolEnv, ToolFailure, build
from recursa.methods.aime.toolkits.workspace import LONG_FILE_BYTES


def test_a_done_task_dispatched_again_is_redone_and_its_actor_told_the_result_was_sent_back(tmp_path):
    model = ScriptedModel([plan(("1", "Find the vault code")),
                           call("write_file", path="code.txt", content="78"), finish(summary="78"),
                           plan(("2", "Find the vault code"), task_id="2"),   # re-added under a new id: a redo
                           call("write_file", path="code.txt", content="3244"), finish(summary="3244"),
                           plan(action="finish", answer="3244")])
    answer = aime(model, tmp_path, check_numbers=False, review_goal_result=True).run("find the vault code")
    board = ProgressBoard(answer.meta["board"])
    assert [(t.id, t.status, t.attempts, t.result) for t in board.tasks()] == [("1", "done", 2, "3244")]
    redo_prompt = model.root_prompts[4][-1]["content"]
    assert "An earlier attempt reported this as done: 78" in redo_prompt and "sent the task back" in redo_prompt
    assert "Files it left:\n- code.txt: '78'\nWrite them again with your result." in redo_prompt
    assert "Its last calls (a call made again returns the same):\n- write_file(path='code.txt', content='78')" \
        in redo_prompt
    assert answer.text == "3244" and answer.meta["planner_corrections"] == 1


def test_a_failed_redo_keeps_the_result_and_the_attempt_cap_ends_the_redos(tmp_path):
    model = ScriptedModel([plan(("1", "Find the vault code")),
                           call("write_file", path="code.txt", content="78"), finish(summary="78"),
                           plan(task_id="1"),                                  # sent back
                           finish("failed", "nothing better found"),
                           plan(task_id="1"),                                  # no tries left: taken as finished
                           ])
    answer = aime(model, tmp_path, check_numbers=False, review_goal_result=True).run("find the vault code")
    task = ProgressBoard(answer.meta["board"]).task("1")
    assert (task.status, task.attempts, task.result) == ("done", 2, "78")
    assert answer.meta["state"] == "finished" and answer.text == "78"


def test_a_done_task_dispatched_while_work_is_pending_is_a_slip_not_a_redo(tmp_path):
    model = ScriptedModel([plan(("1", "Write a.txt"), ("2", "Write b.txt")),
                           call("write_file", path="a.txt", content="a"), finish(summary="a written"),
                           plan(task_id="1"),                                  # task 2 still pending
                           call("write_file", path="b.txt", content="b"), finish(summary="b written"),
                           plan(action="finish", answer="both")])
    answer = aime(model, tmp_path, check_numbers=False, split_first=True).run("write a.txt and b.txt")
    board = ProgressBoard(answer.meta["board"])
    assert [(t.id, t.status, t.attempts) for t in board.tasks()] == [("1", "done", 1), ("2", "done", 1)]


def test_a_repeated_call_is_answered_with_what_it_returned_before(tmp_path):
    again = call("list_files")
    model = ScriptedModel([plan(("1", "List the files")), call("write_file", path="river.txt", content="Fendor"),
                           again, again, call("read_file", path="river.txt"), finish(summary="river.txt")])
    aime(model, tmp_path, check_numbers=False).run("list the files")
    refusal = model.root_prompts[4][-1]["content"]
    assert "already made this exact call" in refusal and "It returned: river.txt" in refusal
    temperatures = [sampling.temperature for sampling in model.samplings]
    assert temperatures[3:] == [0.0, 0.8, 0.0]   # sampled right after a refusal, greedy again after that


def test_a_long_file_is_announced_before_its_beginning_and_brings_the_long_context_toolkit(tmp_path):
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "archive.log").write_text("line of the log\n" * (LONG_FILE_BYTES // 10))
    (workspace / "notes.txt").write_text("short")
    env = ToolEnv(workspace, model=None, budget=None)
    read = next(t for kit in build(["workspace"], env) for t in kit.tools if t.name == "read_file")
    shown = read.run(read.args(path="archive.log"))
    assert shown.startswith("[archive.log has ") and "only its beginning is shown" in shown
    assert read.run(read.args(path="notes.txt")) == "short"
    offered = ["python", "workspace", "long-context"]
    long_task = BoardTask("1", "Find the code in archive.log", "code.txt holds it", None, ["python"], "clerk")
    short_task = BoardTask("2", "Count the words of notes.txt", "done", None, ["python"], "clerk")
    assert toolkits_for(long_task, env, offered) == ["python", "workspace", "long-context"]
    assert toolkits_for(short_task, env, offered) == ["python", "workspace"]
    assert toolkits_for(long_task, env, ["python", "workspace"]) == ["python", "workspace"]   # not offered
    assert toolkits_for(short_task, env, [*offered, "knowledge"]) == ["python", "workspace", "knowledge"]


def test_a_file_is_named_only_by_its_whole_name():
    assert names_file("Find the code in archive.log.", "archive.log")
    assert names_file("read ./archive.log, then", "archive.log")
    assert not names_file("Sum the rows of data.md", "a.md")
    assert not names_file("Open archive.logs", "archive.log")


def _python_kit(tmp_path, files: dict[str, str]):
    """A python toolkit over a fresh workspace holding `files` (the caller closes the kit)."""
    workspace = tmp_path / "ws"
    workspace.mkdir()
    for name, text in files.items():
        (workspace / name).write_text(text)
    env = ToolEnv(workspace, model=None, budget=None)
    return env, build(["python"], env)[0]


def test_a_network_failure_in_python_says_first_that_there_is_no_network(tmp_path):
    env, kit = _python_kit(tmp_path, {"ledger.py": "def rates():\n    return {'A': 2}\n"})
    try:
        run = kit.tools[0]
        message = ""
        try:
            run.run(run.args(code="raise ConnectionError('Max retries exceeded with url: /v6/latest')\n"))
        except ToolFailure as failure:
            message = str(failure)
        assert message.startswith("there is no network here") and "ledger.py" in message
        for local_failure in ("1/0\n", "raise ConnectionError('the ledger is warming up')\n"):
            try:
                run.run(run.args(code=local_failure))
            except ToolFailure as failure:
                assert "network" not in str(failure)
        assert run.run(run.args(code="import ledger\nprint(ledger.rates()['A'])\n")).strip() == "2"
    finally:
        kit.close()


def test_code_can_call_the_workspace_tools_by_name(tmp_path):
    env, kit = _python_kit(tmp_path, {"notes.txt": "seven"})
    workspace = env.workspace
    try:
        run = kit.tools[0]
        shown = run.run(run.args(code="print(read_file('notes.txt'))\nprint(write_file('out.txt', 3166))\n"))
        assert shown.startswith("seven\nwrote 4 characters to out.txt") and "(files written: out.txt)" in shown
        assert (workspace / "out.txt").read_text() == "3166" and env.written == ["out.txt"]
    finally:
        kit.close()


def test_done_is_refused_once_while_a_file_the_task_names_does_not_exist(tmp_path):
    model = ScriptedModel([plan(("1", "Add 23 to 3143 and write the sum to code.txt")),
                           call("list_files"), finish(summary="The sum is 3166."),      # the file never written
                           call("write_file", path="code.txt", content="3166"), finish(summary="3166")])
    answer = aime(model, tmp_path, check_numbers=False).run("write the sum to code.txt")
    assert "the task names code.txt, which does not exist" in model.root_prompts[3][-1]["content"]
    assert (tmp_path / "ws" / "code.txt").read_text() == "3166" and answer.text.startswith("3166")


def test_a_redo_that_leaves_the_sent_back_attempts_file_as_it_was_is_refused_once(tmp_path):
    model = ScriptedModel([plan(("1", "Total the crates into report.md")),
                           call("write_file", path="report.md", content="total: 241"), finish(summary="241"),
                           plan(task_id="1"),                                  # sent back
                           call("list_files"), finish(summary="707"),          # right value, stale file
                           call("write_file", path="report.md", content="total: 707"), finish(summary="707"),
                           plan(action="finish", answer="707")])
    aime(model, tmp_path, check_numbers=False, review_goal_result=True).run("total the crates into report.md")
    assert "report.md still holds the sent-back attempt's result" in model.root_prompts[6][-1]["content"]
    assert (tmp_path / "ws" / "report.md").read_text() == "total: 707"


def test_a_plan_of_one_task_runs_the_goal_in_its_own_words_and_its_result_stands(tmp_path):
    goal = "Find the rate of TUIX with the ledger's fetch_rates(), multiply 392 by it and write it to total.txt"
    model = ScriptedModel([plan(("1", "Fetch the rate and write total.txt")),       # numbers and names dropped
                           call("write_file", path="total.txt", content="101.92"), finish(summary="101.92"),
                           plan(("1", "Fetch the rate and write total.txt"), ("2", "Find the TUIX rate"),
                                task_id="2")])    # the plan resent in its words, and the goal again in other words
    answer = aime(model, tmp_path, check_numbers=False).run(goal)
    tasks = ProgressBoard(answer.meta["board"]).tasks()
    assert [t.title for t in tasks] == [goal]
    assert (tasks[0].role, tasks[0].criteria) == ("a capable assistant", "the goal is met")   # the single actor's
    assert "python" in tasks[0].toolkits                        # every toolkit, not the planner's ["workspace"]
    assert answer.meta["state"] == "finished" and answer.text.startswith("101.92")
    assert answer.meta["planner_corrections"] == 1
    first_actor = model.root_prompts[1][-1]["content"]
    assert first_actor.startswith(f"Your task: {goal}") and f"goal (for context): {goal}" in first_actor


def test_the_goals_own_task_done_stands_without_asking_the_planner_again(tmp_path):
    goal = "Write the sum of 2 and 3 to sum.txt"
    model = ScriptedModel([plan(("1", "Sum")), call("write_file", path="sum.txt", content="5"), finish(summary="5"),
                           plan(task_id="1")])                     # a send-back the planner is never asked for
    answer = aime(model, tmp_path, check_numbers=False).run(goal)
    assert len(model.root_prompts) == 3 and answer.meta["state"] == "finished" and answer.text == "5"
    assert ProgressBoard(answer.meta["board"]).task("1").attempts == 1


def test_the_goals_own_task_done_can_still_be_sent_back(tmp_path):
    goal = "Write the sum of 2 and 3 to sum.txt"
    model = ScriptedModel([plan(("1", "Sum")), call("write_file", path="sum.txt", content="6"), finish(summary="6"),
                           plan(("2", "Add 2 and 3"), task_id="1"),        # task 1 again: a redo, nothing added
                           call("write_file", path="sum.txt", content="5"), finish(summary="5"),
                           plan(action="finish", answer="5")])
    answer = aime(model, tmp_path, check_numbers=False, review_goal_result=True).run(goal)
    board = ProgressBoard(answer.meta["board"])
    assert [t.title for t in board.tasks()] == [goal] and board.task("1").result.startswith("5")
    assert answer.text == "5" and (tmp_path / "ws" / "sum.txt").read_text() == "5"


def test_done_is_refused_once_while_typed_numbers_appear_in_no_tool_output(tmp_path):
    model = ScriptedModel([plan(("1", "Total the crates into report.md")),
                           call("list_files"),
                           call("write_file", path="report.md", content="total: 1234\nlargest: 5678"),
                           finish(summary="written"),                          # placeholders, never computed
                           call("read_file", path="report.md"), finish(summary="total 1234")])
    aime(model, tmp_path).run("total the crates into report.md")
    refusal = model.root_prompts[4][-1]["content"]
    assert "report.md holds 1234, 5678, which no tool output has shown" in refusal
    assert len(model.root_prompts) == 6                  # refused once; the finish after the read was taken


def test_typed_numbers_are_grounded_by_tool_output_rounding_or_the_prompt(tmp_path):
    from recursa.methods.aime.actor import _track_typed, ungrounded_numbers
    from recursa.methods.aime.toolkits import ToolEnv

    evidence = "goal: multiply 392 by the rate\nrate 0.26\n101.91999999 \nrows: 12 and 7"
    assert ungrounded_numbers({"t.txt": "392 * 0.26 = 101.92, 7 rows"}, evidence) == {}
    assert ungrounded_numbers({"t.txt": "total: 568"}, evidence) == {"t.txt": ["568"]}
    typed = {"report.md": "total: 1"}
    env = ToolEnv(tmp_path, None, None, code_wrote=["report.md", "b.txt"])
    _track_typed(typed, "run_python", {"code": "..."}, True, env)
    assert typed == {} and env.code_wrote == []          # code's output is computed, not typed


def test_a_retry_starts_from_the_failed_attempts_calls_and_files_and_is_sampled(tmp_path):
    model = ScriptedModel([plan(("1", "Put twice the rye price in price.txt")),
                           call("search_knowledge", query="rye price"),
                           call("write_file", path="price.txt", content="4 km"), finish("failed", "lost"),
                           call("run_python", code="print(4 * 2)"), finish("done", "8")])
    kb = tmp_path / "kb"
    kb.mkdir()
    for name, text in (("rye", "Rye costs 4 coins."), ("oat", "Oats cost 3 coins."), ("salt", "Salt is cheap.")):
        (kb / f"{name}.md").write_text(text)
    aime(model, tmp_path, check_numbers=False, knowledge=str(kb), retry_temperature=0.7).run(
        "Put twice the rye price in price.txt")
    retry = model.root_prompts[4][-1]["content"]
    assert "An earlier attempt at this task failed: lost\nIts last calls" in retry
    assert "- search_knowledge(query='rye price') -> " in retry and "Rye costs 4 coins." in retry
    assert "Files it left:\n- price.txt: '4 km'" in retry and "Write them again" not in retry
    temperatures = [s.temperature for s in model.samplings]
    assert temperatures[:4] == [0.0] * 4 and temperatures[4:] == [0.7, 0.7]   # planner + first attempt greedy


def test_a_failed_redo_puts_back_the_files_of_the_result_it_keeps(tmp_path):
    model = ScriptedModel([plan(("1", "Find the vault code")),
                           call("write_file", path="code.txt", content="78"), finish(summary="78"),
                           plan(task_id="1"),                                  # sent back
                           call("write_file", path="code.txt", content="oops"),
                           call("write_file", path="extra.txt", content="x"), finish("failed", "lost it")])
    answer = aime(model, tmp_path, check_numbers=False, review_goal_result=True, max_rounds=2).run("find the code")
    assert ProgressBoard(answer.meta["board"]).task("1").result == "78"
    assert (tmp_path / "ws" / "code.txt").read_text() == "78"        # the kept result's file, as it was
    assert (tmp_path / "ws" / "extra.txt").read_text() == "x"        # what the redo added alone stays


def test_the_error_a_guard_reports_keeps_the_values_its_line_used():
    failed = ("Error: Traceback (most recent call last):\n  File \"<block 2>\", line 1, in <module>\n"
              "TypeError: unsupported operand type(s) for *: 'int' and 'dict'\n"
              "Values on the failing line: rate = {'A': 2.5} (dict)\n")
    assert error_line(failed) == ("TypeError: unsupported operand type(s) for *: 'int' and 'dict' "
                                  "(values on the failing line: rate = {'A': 2.5} (dict))")
    assert error_line("Error: no such file: a.csv") == "Error: no such file: a.csv"
