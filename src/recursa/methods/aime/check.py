"""The result check: before a done whole-goal result stands, one structured question asks whether it covers every
part of the goal.

The planner's own send-backs judged a result "wrong" from the board alone and sent right results back
(bench/results/aime.md, ninth and tenth sessions), so a done goal task's result now stands without a planner call.
What still passed unchecked were results that left part of the goal out (a value looked up but the computation
on it not made). The check asks a narrower question than "is this right": list what the goal asks for, then what
the result and the files written do not show. It judges only what is shown and does not redo the work; a named
gap sends the task back once, its actor told what is missing, and a failed redo keeps the result it was to
replace.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, TypeAdapter

from recursa.core.budget import Budget
from recursa.methods.aime.board import BoardTask, ProgressBoard
from recursa.methods.aime.structured import Reply, ask
from recursa.methods.aime.toolkits import ToolFailure
from recursa.methods.aime.toolkits.workspace import resolve
from recursa.models.base import ChatModel, Sampling

CHECKED, SENT_BACK = "checked", "sent back"     # the board's record of a check (a progress message's status)
FILE_CHARS = 300


class ResultCheck(BaseModel):
    asked: list[str] = Field(max_length=6)
    missing: list[str] = Field(max_length=6)
    verdict: Literal["complete", "incomplete"]


CHECK = TypeAdapter(ResultCheck)


def files_shown(workspace: Path, pointers: list[str], chars: int = FILE_CHARS) -> str:
    """The text of the files a result points at, as the check sees them (a missing or binary file says so)."""
    lines = []
    for pointer in dict.fromkeys(pointers):
        try:
            path = resolve(workspace, pointer)
            text = path.read_text()[:chars] if path.is_file() else "(does not exist)"
        except (ToolFailure, OSError, UnicodeDecodeError):
            text = "(not readable as text)"
        lines.append(f"- {pointer}: {text!r}")
    return "\n".join(lines) or "(none)"


def needs_check(board: ProgressBoard, task: BoardTask, max_attempts: int) -> bool:
    """Whether the task's latest done result is unchecked and a send-back would still have a try left."""
    if task.attempts >= max_attempts:
        return False
    checks = sum(status in (CHECKED, SENT_BACK) for status, _ in board.messages(task.id))
    done = sum(report.status == "done" for report in board.reports(task.id))
    return checks < done


def check_result(model: ChatModel, goal: str, task: BoardTask, workspace: Path, sampling: Sampling,
                 budget: Budget, retries: int = 2) -> tuple[list[str], Reply]:
    """The parts of the goal the task's result does not show ([] when it covers them, or the reply was invalid:
    a check that cannot answer never throws a result away)."""
    from recursa.methods.aime.planner import fill  # the planner module imports this one

    user = fill("check_step", goal=goal, result=task.result, files=files_shown(workspace, task.pointers))
    reply = ask(model, [{"role": "system", "content": fill("check")}, {"role": "user", "content": user}], CHECK,
                sampling, budget, retries)
    verdict: ResultCheck | None = reply.value
    if verdict is None or verdict.verdict == "complete":
        return [], reply
    return [item.strip() for item in verdict.missing if item.strip()], reply


def record(board: ProgressBoard, task: BoardTask, missing: list[str]) -> None:
    """The check's outcome on the board, where a resumed run and the redo's actor find it."""
    if missing:
        board.progress(task.id, SENT_BACK, "the result does not show: " + "; ".join(missing))
    else:
        board.progress(task.id, CHECKED, "the result covers the goal")


def missing_note(board: ProgressBoard, task_id: str) -> str:
    """What the last check found missing, when it sent the task back ("" otherwise)."""
    found = [(status, message) for status, message in board.messages(task_id) if status in (CHECKED, SENT_BACK)]
    return found[-1][1] if found and found[-1][0] == SENT_BACK else ""
