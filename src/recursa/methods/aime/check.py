"""The result check: before a done whole-goal result stands, one structured question asks whether the worker's
calls carried out every step of the goal.

The planner's own send-backs judged a result "wrong" from the board alone and sent right results back
(bench/results/aime.md, ninth and tenth sessions), so a done goal task's result stands without a planner call.
What still passed unchecked were results that left a step out (a value looked up, the computation on it never
made). The check asks a narrower question than "is this right": list the steps the goal asks for and, for each,
the call in the actor's log that did it, or "none". Asked only whether the result and files *show* each step, the
1.5B listed steps as missing for right results as often as for incomplete ones; against the log of calls it told
them apart (probe on the development goals, bench/results/aime.md); its verdict is then held against the log it
quotes (`step_missing`): a step "done" only by calls that failed is missing. A step with no call sends the task
back once, its actor told what is missing (one more try, even at the attempt cap); a redo replaces the result only
once the check finds no step missing from it either (a sampled redo after a wrong send-back overwrote two right
results, bench/results/aime.md, sixteenth session): a failed or incomplete redo keeps the result it was to replace.
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel, Field, TypeAdapter

from recursa.core.budget import Budget
from recursa.methods.aime.board import BoardTask, ProgressBoard
from recursa.methods.aime.structured import Reply, ask
from recursa.methods.aime.templates import fill
from recursa.methods.aime.toolkits import ToolFailure
from recursa.methods.aime.toolkits.workspace import resolve
from recursa.models.base import ChatModel, Sampling

CHECKED, SENT_BACK = "checked", "sent back"     # the board's record of a check (a progress message's status)
KEPT_OUT = "redo kept out"                      # a redo the check also found incomplete: the earlier result stands
FILE_CHARS = 300
NOT_SHOWN = "the result does not show: "


class GoalStep(BaseModel):
    step: str = Field(max_length=160)
    done_by: str = Field(max_length=160)


class ResultCheck(BaseModel):
    steps: list[GoalStep] = Field(max_length=6)


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


def _checks(board: ProgressBoard, task_id: str) -> list[tuple[str, str]]:
    """The check's records on the task, oldest first: (status, message)."""
    return [(status, message) for status, message in board.messages(task_id) if status in (CHECKED, SENT_BACK)]


def needs_check(board: ProgressBoard, task: BoardTask) -> bool:
    """Whether the task's latest done result is unchecked and the check has not sent this task back before. A
    send-back is one more try even at the attempt cap (a retried goal task's done result is where a step was
    left out, development goal g07), so it is granted once per task."""
    if was_sent_back(board, task.id):
        return False
    done = sum(report.status == "done" for report in board.reports(task.id))
    return len(_checks(board, task.id)) < done


def check_result(model: ChatModel, goal: str, task: BoardTask, log: list[str], workspace: Path,
                 sampling: Sampling, budget: Budget, retries: int = 2) -> tuple[list[str], Reply]:
    """The steps of the goal for which the check named no call of the actor's log ([] when every step has one, or
    when the reply was invalid: a check that cannot answer never throws a result away)."""
    user = fill("check_step", goal=goal, calls="\n".join(f"- {line}" for line in log) or "(none)",
                result=task.result, files=files_shown(workspace, task.pointers))
    reply = ask(model, [{"role": "system", "content": fill("check")}, {"role": "user", "content": user}], CHECK,
                sampling, budget, retries)
    verdict: ResultCheck | None = reply.value
    if verdict is None:
        return [], reply
    return [s.step.strip() for s in verdict.steps if s.step.strip() and step_missing(s, log)], reply


def not_done(done_by: str) -> bool:
    """Whether the check named no call for a step."""
    return done_by.strip().strip(".\"'").lower() in ("", "none", "no call", "n/a", "nothing", "not done")


_FILLER = {"the", "and", "its", "for", "with", "into", "then", "that", "this", "each"}


def _words(text: str) -> set[str]:
    """Names and numbers, lower-cased; short and filler words ("by", "the") say nothing about a call."""
    found = re.findall(r"[A-Za-z_]\w*|\d+(?:\.\d+)?", text.replace("\\n", " "))
    found += [part for word in found if "_" in word for part in word.split("_")]    # read_file: "read"
    return {word.lower() for word in found
            if word[:1].isdigit() or (len(word) > 2 and word.lower() not in _FILLER)}


def step_missing(step: GoalStep, log: list[str], overlap: float = 0.6) -> bool:
    """The check's verdict on one step, held against the log it quotes from: a step it cites a call for is missing
    when every call that matches the citation failed (the 1.5B cited a failed network call as the computation, and
    the typed, uncomputed number stood: bench/results/aime.md, seventeenth session); a step it found no call for is
    done when a call that worked holds every word of it ("import ledger" for `from ledger import ...`, a right
    result sent back, sixteenth session). A citation that matches no call is taken as the check gave it."""
    calls = []
    for line in log:
        call, _, returned = line.partition(" -> ")
        calls.append((_words(call), returned.startswith("Error")))
    if not_done(step.done_by):
        words = _words(step.step)
        return not any(words and words <= called and not failed for called, failed in calls)
    cited = _words(step.done_by.partition(":")[2] or step.done_by)
    matched = [failed for called, failed in calls if cited and len(cited & called) >= overlap * len(cited)]
    return bool(matched) and all(matched)


def record(board: ProgressBoard, task: BoardTask, missing: list[str]) -> None:
    """The check's outcome on the board, where a resumed run and the redo's actor find it."""
    if missing:
        board.progress(task.id, SENT_BACK, NOT_SHOWN + "; ".join(missing))
    else:
        board.progress(task.id, CHECKED, "the result covers the goal")


def was_sent_back(board: ProgressBoard, task_id: str) -> bool:
    """Whether the check has sent this task back (its next done result is a redo, checked before it replaces)."""
    return any(status == SENT_BACK for status, _ in _checks(board, task_id))


def record_redo(board: ProgressBoard, task: BoardTask, missing: list[str]) -> None:
    """The check's outcome on a redo: it replaces the earlier result, or is kept out."""
    if missing:
        board.progress(task.id, KEPT_OUT, "the redo does not show: " + "; ".join(missing)
                       + "; the earlier result stands")
    else:
        board.progress(task.id, CHECKED, "the redo covers the goal")


def missing_note(board: ProgressBoard, task_id: str) -> str:
    """What the last check found missing, when it sent the task back ("" otherwise)."""
    found = _checks(board, task_id)
    return found[-1][1] if found and found[-1][0] == SENT_BACK else ""


def missing_steps(note: str) -> str:
    """The steps a send-back's note (`missing_note`) names."""
    return note.removeprefix(NOT_SHOWN)
