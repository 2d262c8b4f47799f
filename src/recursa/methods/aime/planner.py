"""The dynamic planner (paper §3): (goal, board, reports) → (tasks to add, next action), one structured reply.

The planner's only view of the run is the board; its reply is a `PlannerDecision` (pydantic), decoded under the
schema (see structured.py). A reply that names a task that does not exist, or finishes without an answer, is
corrected here rather than trusted (coordinators that assign work to non-existent workers are a known bug class).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, TypeAdapter

from recursa.core.budget import Budget
from recursa.methods.aime.board import BoardTask, ProgressBoard
from recursa.methods.aime.check import check_result, needs_check, record
from recursa.methods.aime.structured import Reply, ask
from recursa.methods.aime.templates import fill, prompts
from recursa.methods.aime.toolkits import TOOLKITS
from recursa.methods.aime.toolkits.workspace import workspace_files
from recursa.models.base import ChatModel, Sampling

ToolkitName = Literal["python", "workspace", "knowledge", "long-context", "latent-team"]
TOOLKIT_DOCS = {
    "python": "python: run Python code (data files of the workspace are in its folder; it can compute and write files)",
    "workspace": "workspace: read, write and list the workspace's files",
    "knowledge": "knowledge: search reference documents and facts given with the goal",
    "long-context": "long-context: ask a question about a very long workspace file",
    "latent-team": "latent-team: hand a hard reasoning question to a team of reasoners",
}
assert tuple(TOOLKIT_DOCS) == TOOLKITS


class PlanTask(BaseModel):
    id: str = Field(max_length=8)
    title: str = Field(max_length=240)
    criteria: str = Field(max_length=160)
    toolkits: list[ToolkitName] = Field(max_length=3)
    role: str = Field(max_length=40)


class PlannerDecision(BaseModel):
    thought: str = Field(max_length=200)
    add: list[PlanTask] = Field(max_length=5)
    action: Literal["dispatch", "finish", "give_up"]
    task_id: str = Field(max_length=8)
    answer: str = Field(max_length=400)


DECISION = TypeAdapter(PlannerDecision)


@dataclass
class Step:
    """What the run does next, after the planner's reply has been checked against the board."""

    action: Literal["dispatch", "finish", "give_up"]
    task: BoardTask | None = None
    answer: str = ""
    added: int = 0
    reply: Reply | None = None
    corrected: str | None = None      # why the planner's own choice was overridden
    check: str | None = None          # the result check's verdict, when this step made one


class Planner:
    def __init__(self, model: ChatModel, toolkits: list[str], sampling: Sampling, retries: int = 2,
                 max_attempts: int = 2, review_goal_result: bool = False, split_first: bool = False,
                 check: bool = True):
        self.model, self.toolkits, self.sampling, self.retries = model, toolkits, sampling, retries
        self.max_attempts, self.review_goal_result, self.split_first = max_attempts, review_goal_result, split_first
        self.check = check
        self.aliases: dict[str, str] = {}   # the planner's wording of a task → the title on the board

    def messages(self, goal: str, board: ProgressBoard, note: str = "") -> list[dict[str, str]]:
        docs = "\n  ".join(f"- {TOOLKIT_DOCS[name]}" for name in self.toolkits)
        reports = board.reports()[-4:]
        lines = [f"- task {r.task_id}: {r.status}" + (f" (stopped: {r.guard})" if r.guard else "")
                 + f": {r.summary[:300]}" for r in reports]
        workspace = board.meta("workspace")
        files = workspace_files(Path(workspace)) if workspace else "none"
        step = fill("planner_step", goal=goal, files=files, board=board.markdown(),
                    reports="\n".join(lines) or "(none yet)", note=note)
        return [{"role": "system", "content": fill("planner", toolkits=docs)},
                {"role": "user", "content": step}]

    def step(self, goal: str, board: ProgressBoard, budget: Budget, note: str = "") -> Step:
        ruled = self._without_planner(goal, board, budget)
        if ruled is not None:
            return ruled
        reply = ask(self.model, self.messages(goal, board, note), DECISION, self.sampling, budget, self.retries)
        decision: PlannerDecision | None = reply.value
        if decision is None:   # every attempt invalid: keep going with the board as it is
            return self._fallback(goal, board, reply, "the planner's reply was not valid")
        copied = [item for item in decision.add if copies_example(item.title, goal)]
        decision.add = [item for item in decision.add if item not in copied]
        whole_goal = bool(decision.add) and not board.tasks() and (len(decision.add) == 1 or not self.split_first)
        closed = _goal_task_done(goal, board)
        added, dropped, readded, refused = self._add_tasks(goal, board, decision, whole_goal, closed)
        if whole_goal and len(decision.add) > 1:
            return Step("dispatch", board.tasks()[0], added=added, reply=reply,
                        corrected="the whole goal is tried as one task before it is split")
        if decision.action != "dispatch" and not board.tasks():   # an answer from nothing: try the goal first
            return self._fallback(goal, board, reply, f"{decision.action} before any task was planned")
        if decision.action == "finish":
            answer = decision.answer.strip() or _last_result(board)
            pending = board.next_pending()
            if pending is not None:   # the board still lists work the planner itself asked for: do it first
                why = "finish with new tasks" if added else f"finish with task {pending.id} pending"
                return Step("dispatch", pending, added=added, reply=reply, corrected=why)
            return Step("finish", answer=answer, added=added, reply=reply)
        if decision.action == "give_up":
            return Step("give_up", answer=decision.answer.strip() or "the planner gave up", added=added, reply=reply)
        task = board.task(decision.task_id.strip()) or readded.get(decision.task_id.strip())
        if closed is not None and dropped and task is None:
            return Step("finish", answer=closed.result, reply=reply,
                        corrected="the goal's own task is done: tasks added after it are dropped")
        if task is not None and task.status == "done" and self._may_redo(board, task):
            return Step("dispatch", _requeue(board, task), added=added, reply=reply,
                        corrected=f"task {task.id} sent back: its result was judged wrong")
        if task is not None and task.status == "failed":   # dispatching a failed task again is a retry
            return Step("dispatch", _requeue(board, task), added=added, reply=reply)
        if task is not None and task.status == "pending":
            unresolved = _unresolved_failure(board, task) if not added else None
            if unresolved is not None:   # later tasks build on the failed one: retry it before moving on
                return Step("dispatch", _requeue(board, unresolved), reply=reply,
                            corrected=f"task {unresolved.id} failed and nothing replaces it")
            return Step("dispatch", task, added=added, reply=reply)
        why = "its tasks copied the prompt's example" if copied else f"task {decision.task_id!r} is not pending"
        if refused and not added:
            why = f"{refused[0]!r} failed {_failed_tries(board, refused[0])} times and was not planned again"
        fallback = self._fallback(goal, board, reply, why)
        fallback.added = added
        return fallback

    def _add_tasks(self, goal: str, board: ProgressBoard, decision: PlannerDecision, whole_goal: bool,
                   closed: BoardTask | None) -> tuple[int, int, dict[str, BoardTask], list[str]]:
        """Put the reply's new tasks on the board: (tasks added, tasks dropped, id of a re-added task → the done
        task of the same title, titles refused for failing too often)."""
        if whole_goal:   # a first plan is the goal, given to the single actor as it is (see goal_task)
            first = decision.add[0]
            if len(decision.add) == 1:   # its later resends name the goal; a split's tasks stay for later
                self.aliases[_key(clean_title(first.title))] = goal
            board.add_task(goal_task(goal, self.toolkits, first.id.strip() or "1"))
            return 1, 0, {}, []
        added = dropped = 0
        readded: dict[str, BoardTask] = {}
        refused: list[str] = []
        for item in decision.add:
            title = clean_title(item.title)
            title = self.aliases.get(_key(title), title)     # the plan resent in the planner's words
            if already_planned(board, title):   # small planners resend their whole plan at every step
                same = _same_title(board, title)
                if same is not None and same.status == "done":
                    readded[item.id.strip()] = same
                continue
            if _failed_tries(board, title) > self.max_attempts:   # the attempt cap evaded under new ids
                refused.append(title)
                continue
            if closed is not None:   # new work after the goal's own task is done redoes it in weaker words
                dropped += 1
                continue
            toolkits = [name for name in item.toolkits if name in self.toolkits] or ["python", "workspace"]
            board.add_task(BoardTask(item.id.strip() or "", title, item.criteria, None, toolkits,
                                     item.role or "a careful assistant"))
            added += 1
        return added, dropped, readded, refused

    def _without_planner(self, goal: str, board: ProgressBoard, budget: Budget) -> Step | None:
        """The next step when the board alone decides it, with no planner call (its reply would be overridden)."""
        failed_goal = _goal_task_failed(goal, board, self.max_attempts)
        if failed_goal is not None:
            return Step("dispatch", _requeue(board, failed_goal),
                        corrected="the goal's own task failed: it is retried as it is before any narrower task")
        finished_goal = None if self.review_goal_result else _goal_task_done(goal, board)
        if finished_goal is not None and self.check and needs_check(board, finished_goal):
            return self._check(goal, board, finished_goal, budget)
        if finished_goal is not None:   # the same model would judge its own checked result again
            return Step("finish", answer=finished_goal.result,
                        corrected="the goal's own task is done: its result stands")
        return None

    def _check(self, goal: str, board: ProgressBoard, task: BoardTask, budget: Budget) -> Step:
        """The result check (check.py) on the done goal task: it stands, or goes back once with what it lacks."""
        done = [report for report in board.reports(task.id) if report.status == "done"]
        missing, reply = check_result(self.model, goal, task, done[-1].log if done else [],
                                      Path(board.meta("workspace", ".")), self.sampling, budget, self.retries)
        record(board, task, missing)
        if not missing:
            return Step("finish", answer=task.result, reply=reply, check="complete",
                        corrected="the goal's own task is done and checked: its result stands")
        return Step("dispatch", _requeue(board, task), reply=reply, check="incomplete",
                    corrected="the result check sent it back: it does not show " + "; ".join(missing))

    def _may_redo(self, board: ProgressBoard, task: BoardTask) -> bool:
        """Dispatching a done task once all planned work is done sends it back: the planner judged its result
        wrong (a small model's "done" is not always right). Only while it has tries left, so a result is never
        lost to the attempt cap; with work still pending, the dispatch is taken as a slip."""
        return board.next_pending() is None and task.attempts < self.max_attempts

    def _fallback(self, goal: str, board: ProgressBoard, reply: Reply, why: str) -> Step:
        if not board.tasks():   # nothing planned yet: the whole goal is the one task, as the single actor has it
            return Step("dispatch", board.add_task(goal_task(goal, self.toolkits)), reply=reply, corrected=why)
        pending = board.next_pending()
        if pending is not None:
            return Step("dispatch", pending, reply=reply, corrected=why)
        tasks = board.tasks()
        settled = all(t.status in ("done", "blocked") for t in tasks) and any(t.status == "done" for t in tasks)
        if settled or tasks[-1].status == "done":
            # the last task (a failure's workaround comes after it) or every task is done: its result stands
            return Step("finish", answer=_last_result(board), reply=reply, corrected=why)
        return Step("give_up", answer=f"no task to run ({why})", reply=reply, corrected=why)


def goal_task(goal: str, toolkits: list[str], task_id: str = "1") -> BoardTask:
    """The whole goal as one task, exactly as the single actor (`planner=none`) gets it: the goal's own words (small
    planners paraphrased its numbers away), every toolkit, no narrower persona or criteria. A one-task plan's first
    attempt is then the single actor's, and the planner adds what comes after a failure: a retry, then other tasks.
    (With the planner's "data clerk" and only `python`, the 1.5B's first attempts at the CSV goals looped on reading
    the file in 3 of 3 traces where the single actor's succeeded.)"""
    return BoardTask(task_id, goal, "the goal is met", None, list(toolkits), "a capable assistant")


def _goal_task_done(goal: str, board: ProgressBoard) -> BoardTask | None:
    """The task that is the whole goal (a one-task plan), when it is done and nothing is pending. Its result stands:
    on the 1.5B, tasks added after it were the goal again in other words, one overwrote a right answer with a wrong
    one (bench/results/aime.md, eighth session), and the planner's three send-backs were all of right results, one
    then lost (ninth session). With `review_goal_result` the planner may still send it back."""
    if board.next_pending() is not None:
        return None
    return next((t for t in board.tasks() if t.status == "done" and _key(t.title) == _key(goal)), None)


def _goal_task_failed(goal: str, board: ProgressBoard, max_attempts: int) -> BoardTask | None:
    """The task that is the whole goal, when it has just failed and has tries left. Its actor runs again, told why
    the last attempt failed, before the planner replaces it: on the 1.5B the planner's replacements were narrower
    rewordings that lost part of the goal (the multiplication, the local module: "use a web scraping tool to get
    the exchange rates") (bench/results/aime.md, ninth session), as its paraphrased plans did before `goal_task`."""
    task = _latest_failed(board)
    if task is None or _key(task.title) != _key(goal) or task.attempts >= max_attempts:
        return None
    return task


def _latest_failed(board: ProgressBoard) -> BoardTask | None:
    """The task of the latest report, when that task has failed (a failed redo keeps its task done)."""
    reports = board.reports()
    task = board.task(reports[-1].task_id) if reports else None
    return task if task is not None and task.status == "failed" else None


def _unresolved_failure(board: ProgressBoard, chosen: BoardTask) -> BoardTask | None:
    """The task of the latest report, when it failed and comes before `chosen`: the planner moved past a failure
    without adding a task to work around it, but tasks run in order and later ones build on earlier results."""
    failed = _latest_failed(board)
    if failed is None:
        return None
    order = {t.id: i for i, t in enumerate(board.tasks())}
    return None if order[failed.id] > order[chosen.id] else failed


def _requeue(board: ProgressBoard, task: BoardTask) -> BoardTask:
    """A failed task set back to pending, for a retry (the run's attempt cap still counts its tries)."""
    board.set_status(task.id, "pending")
    task.status = "pending"
    return task


def copies_example(title: str, goal: str) -> bool:
    """Whether a task's title is the planner prompt's example task (another domain) and not part of the goal: the
    0.5B planner added it, word for word, as a new task after its goal task failed."""
    key = _key(clean_title(title))
    return len(key) >= 20 and key in _key(prompts()["planner"]) and key not in _key(goal)


def _key(title: str) -> str:
    return " ".join(title.lower().split())


def _same_title(board: ProgressBoard, title: str) -> BoardTask | None:
    return next((t for t in board.tasks() if _key(t.title) == _key(title) and t.status != "failed"), None)


def _failed_tries(board: ProgressBoard, title: str) -> int:
    """Attempts spent on tasks of this title that failed or were blocked. A failed task may come back as a new one
    (a retry); on the 1.5B, titles re-added a third to eighth time never succeeded (4 of 4 goal runs) and kept lost
    goals running to the round cap (bench/results/aime.md, eighteenth session)."""
    return sum(t.attempts for t in board.tasks() if _key(t.title) == _key(title) and t.status in ("failed", "blocked"))


def already_planned(board: ProgressBoard, title: str) -> bool:
    """A task with this title is on the board and has not failed: adding it again would only repeat work (a
    failed task may come back as a new one, a retry)."""
    return _same_title(board, title) is not None


def clean_title(title: str) -> str:
    """A new task's title without what the board's Markdown appends to a line (criteria, result, files): small
    planners re-adding a failed task copy its whole rendered line, guard message included."""
    for marker in (" (done when:", " -> ", " ["):
        cut = title.find(marker)
        if cut > 0:
            title = title[:cut]
    return title.strip()


def _last_result(board: ProgressBoard) -> str:
    done = [t for t in board.tasks() if t.status == "done" and t.result]
    return done[-1].result if done else ""
