"""`aime`: a dynamic planner dispatches subtasks to actors built on demand, around a durable progress board.

    plan (planner) ─▶ dispatch task ─▶ factory builds an actor (persona, toolkits, knowledge, environment, format)
         ▲                                         │ ReAct loop; update_progress → board
         └──────── report (status, summary, pointers) on the board ◀┘

Each run has a folder `<runs>/aime/<run_id>/` with `board.sqlite` and (unless --workspace is given) `workspace/`.
`resume=RUN_ID` reopens it: done tasks and reports stay, a task left running goes back to pending.
`planner="none"` is the baseline: one actor with every toolkit works on the whole goal.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from recursa.core.budget import Budget
from recursa.core.errors import BudgetExceeded, ConfigError
from recursa.core.trace import current_tracer, span
from recursa.methods.aime.actor import GUARDS, ActorLimits, run_actor
from recursa.methods.aime.board import BoardTask, ProgressBoard, Report
from recursa.methods.aime.check import check_result, record_redo, was_sent_back
from recursa.methods.aime.factory import build_actor
from recursa.methods.aime.planner import Planner, goal_task
from recursa.methods.aime.toolkits import ToolEnv, ToolFailure, available
from recursa.methods.aime.toolkits.workspace import resolve
from recursa.methods.base import AgentOutput, Answer, MethodBase, Task, register
from recursa.methods.config import MethodConfig
from recursa.models.base import ChatModel, Completion, Sampling


class AimeConfig(MethodConfig):
    """`aime`: dynamic planner, actor factory, ReAct actors and a durable progress board."""

    workspace: str | None = None
    """Folder the actors read and write (default: a fresh folder in the run's directory)."""
    knowledge: str | None = None
    """Folder of reference files (.txt, .md, .json) for the knowledge toolkit (BM25 search)."""
    resume: str | None = None
    """Run id of an interrupted run to continue (its board keeps finished tasks and reports)."""
    board_dir: str | None = None
    """Where run folders go (default: <runs dir>/aime)."""
    planner: Literal["dynamic", "none"] = "dynamic"
    """dynamic: the planner loop; none: one actor with every toolkit on the whole goal (baseline)."""
    max_rounds: int = Field(10, ge=1)
    """Planner steps before the run gives up with what it has."""
    max_attempts: int = Field(2, ge=1)
    """Times one task may be dispatched."""
    review_goal_result: bool = False
    """Let the planner send a done one-task plan (the whole goal) back for a redo; off: its result stands."""
    check_result: bool = True
    """Before a done whole-goal result stands, one structured call names, for each step of the goal, the actor's
    logged call that did it; a step with none sends the task back once (one more try, even at max_attempts), its
    actor told what is missing; the redo replaces the result only if the check finds it complete too."""
    split_first: bool = False
    """Run the planner's first plan as it is; off: a first plan of several tasks becomes the whole goal as one
    task (as the single actor runs it), and the planner splits the goal only after that task has failed."""
    max_steps: int = Field(8, ge=1)
    """Step cap: tool calls per actor."""
    max_repeats: int = Field(2, ge=1)
    """Identical tool calls an actor may repeat (refused with a warning) before the repeat guard stops it."""
    stall_steps: int = Field(4, ge=1)
    """K: actor steps in a row without a new successful observation before the no-progress guard stops it."""
    check_numbers: bool = True
    """Refuse "done" once while a file the actor typed holds numbers no tool output or prompt has shown."""
    retries: int = Field(2, ge=0)
    """Invalid structured replies answered with the error and asked again."""
    max_tokens: int = Field(384, ge=16)
    """Most tokens per planner or actor reply."""
    temperature: float = Field(0.0, ge=0.0)
    """Sampling temperature; 0 is greedy."""
    retry_temperature: float = Field(0.7, ge=0.0)
    """Sampling temperature of a failed task's second and later attempts (at least `temperature`): at temperature 0
    a retry took the failed attempt's path again. A done result sent back is redone at `temperature`: its prompt
    leads with the missing step, and sampled redos wrote prose into their code."""
    block_timeout: float = Field(20.0, gt=0)
    """Wall seconds one Python block may run."""
    rlm_iterations: int = Field(6, ge=1)
    """Root turns of the RLM behind the long-context toolkit."""


@register
class Aime(MethodBase):
    """Dynamic planner + actor factory + ReAct actors over a durable SQLite progress board."""

    name = "aime"
    Config = AimeConfig

    def __init__(self, model: ChatModel, config: AimeConfig | None = None, *, budget: Budget | None = None,
                 display: Any = None, **options: Any):
        super().__init__(model, config, budget=budget, **options)
        cfg = self.config
        self.display = display          # e.g. live.LiveBoard: update(board) on every change, close(board) at the end
        self.sampling = Sampling(max_tokens=cfg.max_tokens, temperature=cfg.temperature)
        self.limits = ActorLimits(cfg.max_steps, cfg.max_repeats, cfg.stall_steps, retries=cfg.retries,
                                  check_numbers=cfg.check_numbers)
        self.knowledge_base = None
        if cfg.knowledge:
            from recursa.methods.aime.toolkits.knowledge import KnowledgeBase

            if not Path(cfg.knowledge).is_dir():
                raise ConfigError(f"aime: --knowledge {cfg.knowledge}: no such folder")
            self.knowledge_base = KnowledgeBase(cfg.knowledge)

    def solve_batch(self, tasks: list[Task]) -> list[Answer]:
        return [self._solve(task) for task in tasks]

    # ---- the run folder ---------------------------------------------------------------------------------
    def _base_dir(self) -> Path:
        if self.config.board_dir:
            return Path(self.config.board_dir)
        tracer = current_tracer()
        if tracer is not None and tracer.path is not None:
            return tracer.path.parent.parent / "aime"
        from recursa.core.config import settings

        return settings().runs_dir / "aime"

    def _open(self, task: Task) -> tuple[str, ProgressBoard, Path]:
        cfg, base = self.config, self._base_dir()
        on_change = self.display.update if self.display is not None else None
        if cfg.resume:
            path = base / cfg.resume / "board.sqlite"
            if not path.is_file():
                raise ConfigError(f"aime: no run {cfg.resume!r} to resume under {base} (no {path})")
            board = ProgressBoard(path, on_change)
            board.recover()
            return cfg.resume, board, Path(board.meta("workspace"))
        tracer = current_tracer()
        run_id = tracer.run_id if tracer is not None else time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        while (base / run_id).exists():
            run_id += "-" + uuid.uuid4().hex[:4]
        workspace = Path(cfg.workspace) if cfg.workspace else base / run_id / "workspace"
        workspace.mkdir(parents=True, exist_ok=True)
        board = ProgressBoard(base / run_id / "board.sqlite", on_change)
        board.set_meta("goal", task.question)
        board.set_meta("workspace", str(workspace.resolve()))
        board.set_meta("state", "running")
        return run_id, board, workspace

    # ---- one goal -----------------------------------------------------------------------------------------
    def _solve(self, task: Task) -> Answer:
        budget = self.budget or Budget()
        started = time.perf_counter()
        run_id, board, workspace = self._open(task)
        stats = _Stats()
        text, stopped = board.meta("answer") or "", None
        try:
            with span("agent", "aime", aime_run=run_id, planner=self.config.planner):
                if board.meta("state") == "running":
                    text, state = self._loop(board, workspace, budget, stats)
                    board.set_meta("answer", text)
                    board.set_meta("state", state)
        except BudgetExceeded as exc:
            stopped, text = str(exc), text or _best(board)
            board.set_meta("stopped", stopped)
        finally:
            if self.display is not None:
                self.display.close(board)
        meta = {"aime_run": run_id, "board": str(board.path), "workspace": str(workspace),
                "board_markdown": board.markdown(), "state": board.meta("state"), **stats.meta()}
        board.close()
        return Answer(text=text, method=self.name, agents=stats.agents(), stopped=stopped, meta=meta,
                      seconds=time.perf_counter() - started)

    def _env(self, workspace: Path, budget: Budget) -> ToolEnv:
        cfg = self.config
        return ToolEnv(workspace, self.model, budget, self.knowledge_base,
                       options={"block_timeout": cfg.block_timeout, "rlm_iterations": cfg.rlm_iterations})

    def _loop(self, board: ProgressBoard, workspace: Path, budget: Budget, stats: _Stats) -> tuple[str, str]:
        goal = board.meta("goal")
        kits = available(self.model, self.knowledge_base)
        if self.config.planner == "none":
            if not board.tasks():
                board.add_task(goal_task(goal, kits))
            task = board.next_pending()
            if task is not None:
                self._dispatch(task, goal, board, workspace, budget, stats)
            done = board.tasks()[0]
            return done.result, "finished" if done.status == "done" else "gave_up"
        planner = Planner(self.model, kits, self.sampling, self.config.retries, self.config.max_attempts,
                          review_goal_result=self.config.review_goal_result, split_first=self.config.split_first,
                          check=self.config.check_result)
        note = ""
        for _ in range(self.config.max_rounds):
            had_tasks = bool(board.tasks())
            with span("planner", "step", aime_run=board.meta("goal")[:60]) as traced:
                step = planner.step(goal, board, budget, note)
                if traced is not None:   # a step decided without a planner call (goal retry, result stands) too
                    traced.set(reply=step.reply.text[:1500] if step.reply else None, corrected=step.corrected)
            stats.add("planner", step.reply.completions if step.reply else [])
            stats.invalid += len(step.reply.errors) if step.reply else 0
            stats.replans += int(had_tasks and step.added > 0)
            stats.corrections += int(step.corrected is not None)
            if step.check is not None:
                stats.checks[step.check] += 1
            if step.action in ("finish", "give_up"):
                return step.answer, "finished" if step.action == "finish" else "gave_up"
            assert step.task is not None
            if step.task.attempts >= self.config.max_attempts and step.check != "incomplete":
                board.set_status(step.task.id, "blocked", result="dispatched too often")
                note = f"Task {step.task.id} was tried {step.task.attempts} times; add a different task."
                continue
            report = self._dispatch(step.task, goal, board, workspace, budget, stats)
            note = "" if report.status == "done" else f"Task {step.task.id} failed: decide how to work around it."
        return _best(board), "gave_up"

    def _dispatch(self, task: BoardTask, goal: str, board: ProgressBoard, workspace: Path, budget: Budget,
                  stats: _Stats):
        sent_back = next((r for r in reversed(board.reports(task.id)) if r.status == "done"), None)
        kept = snapshot(workspace, sent_back.pointers) if sent_back is not None else {}
        board.set_status(task.id, "running")
        env = self._env(workspace, budget)
        spec = build_actor(task, goal, board, env, self.limits.max_steps,
                           offered=available(self.model, self.knowledge_base))
        sampling = self.sampling
        if board.task(task.id).attempts > 1 and sent_back is None:
            sampling = replace(sampling, temperature=max(sampling.temperature, self.config.retry_temperature))
        try:
            with span("actor", task.id, title=task.title[:80], toolkits=",".join(t.name for t in spec.toolkits)):
                result = run_actor(self.model, spec, board, budget, sampling, self.limits)
        finally:
            spec.close()
        report = result.report
        board.add_report(report)
        stats.add(f"actor {task.id}", result.completions)
        if sent_back is not None and not self._redo_stands(task, report, goal, board, workspace, budget, stats):
            # a failed or incomplete redo keeps the result it was to replace, and that result's files as they were
            restore(kept)
            board.set_status(task.id, "done", result=sent_back.summary, pointers=sent_back.pointers)
        else:
            board.set_status(task.id, "done" if report.status == "done" else "failed", result=report.summary,
                             pointers=report.pointers)
        stats.invalid += result.invalid_replies
        if report.guard:
            stats.guards[report.guard] = stats.guards.get(report.guard, 0) + 1
        return report

    def _redo_stands(self, task: BoardTask, report: Report, goal: str, board: ProgressBoard, workspace: Path,
                     budget: Budget, stats: _Stats) -> bool:
        """Whether a redo's report replaces the done result before it: it must be done, and, where the result check
        sent the task back, the check must find no step missing from the redo either."""
        if report.status != "done":
            return False
        if not (self.config.check_result and was_sent_back(board, task.id)):
            return True
        redone = replace(task, result=report.summary, pointers=report.pointers)
        missing, reply = check_result(self.model, goal, redone, report.log, workspace, self.sampling, budget,
                                      self.config.retries)
        record_redo(board, task, missing)
        stats.add("check", reply.completions)
        stats.checks["incomplete" if missing else "complete"] += 1
        return not missing


def snapshot(workspace: Path, pointers: list[str]) -> dict[Path, bytes | None]:
    """The workspace files `pointers` name, as they are now (None: not there), for `restore`."""
    kept: dict[Path, bytes | None] = {}
    for pointer in pointers:
        try:
            path = resolve(workspace, pointer)
        except ToolFailure:
            continue
        if not path.is_dir():
            kept[path] = path.read_bytes() if path.is_file() else None
    return kept


def restore(kept: dict[Path, bytes | None]) -> None:
    """Put files back as `snapshot` found them (one that was not there is removed)."""
    for path, content in kept.items():
        if content is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
        elif path.is_file():
            path.unlink()


def _best(board: ProgressBoard) -> str:
    done = [t.result for t in board.tasks() if t.status == "done" and t.result]
    return done[-1] if done else ""


class _Stats:
    """Usage per role and the run's counters (replans, guards fired, invalid replies)."""

    def __init__(self) -> None:
        self.usage: dict[str, list[int]] = {}
        self.replans = self.invalid = self.corrections = 0
        self.guards: dict[str, int] = dict.fromkeys(GUARDS, 0)
        self.checks = {"complete": 0, "incomplete": 0}

    def add(self, role: str, completions: list[Completion]) -> None:
        row = self.usage.setdefault(role, [0, 0, 0])
        row[0] += sum(c.prompt_tokens for c in completions)
        row[1] += sum(c.completion_tokens for c in completions)
        row[2] += len(completions)

    def agents(self) -> list[AgentOutput]:
        return [AgentOutput(role, "", p, c, extra={"model_calls": n}) for role, (p, c, n) in self.usage.items()]

    def meta(self) -> dict[str, Any]:
        return {"replans": self.replans, "guards": self.guards, "invalid_replies": self.invalid,
                "planner_corrections": self.corrections, "checks": self.checks}
