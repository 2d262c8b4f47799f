"""The actor factory (paper §4): one actor per dispatched subtask, assembled from data.

    actor = (model, toolkits, prompt, memory);  prompt = persona + tool descriptions + knowledge + environment +
    output format

Toolkits are the bundles the planner chose for the task (the workspace always comes along: reports point at files);
knowledge is what BM25 retrieves for the task's title and criteria; the environment is the date, the workspace's
files and the actor's limits.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, TypeAdapter, create_model

from recursa.methods.aime.board import BoardTask, ProgressBoard, Report
from recursa.methods.aime.check import files_shown, missing_note, missing_steps
from recursa.methods.aime.templates import fill
from recursa.methods.aime.toolkits import Tool, ToolEnv, Toolkit, build
from recursa.methods.aime.toolkits.knowledge import shown
from recursa.methods.aime.toolkits.workspace import long_files, workspace_files

THOUGHT_CHARS = 240
FILE_CHARS = 120       # of each file an earlier attempt left, shown to the next one


class ProgressArgs(BaseModel):
    status: Literal["milestone", "blocked"]
    message: str = Field(max_length=300)


class FinishArgs(BaseModel):
    status: Literal["done", "failed"]
    summary: str = Field(max_length=600)
    pointers: list[str] = Field(max_length=5)


@dataclass
class ActorSpec:
    """Everything one actor is made of."""

    task: BoardTask
    system: str
    user: str
    toolkits: list[Toolkit]
    tools: dict[str, Tool]
    adapter: TypeAdapter            # the schema of one reply: a call of one of `tools`
    env: ToolEnv
    stale: list[str] = field(default_factory=list)   # files a sent-back attempt wrote: its result, to be replaced

    def close(self) -> None:
        for kit in self.toolkits:
            kit.close()


def step_adapter(tools: list[Tool]) -> TypeAdapter:
    """One reply = {"thought", "tool": <name>, ...that tool's arguments}: a union discriminated by `tool`."""
    variants = []
    for tool in tools:
        fields: dict[str, Any] = {"thought": (str, Field(max_length=THOUGHT_CHARS)), "tool": (Literal[tool.name], ...)}
        fields.update({name: (info.annotation, info) for name, info in tool.args.model_fields.items()})
        variants.append(create_model(f"Call_{tool.name}", **fields))
    if len(variants) == 1:
        return TypeAdapter(variants[0])
    union = variants[0]
    for variant in variants[1:]:
        union = union | variant
    return TypeAdapter(Annotated[union, Field(discriminator="tool")])


def names_file(wording: str, name: str) -> bool:
    """Whether `name` appears in `wording` as a whole file name (`a.md` is not named by "data.md")."""
    return re.search(rf"(?<![\w.-]){re.escape(name)}(?![\w/-])", wording) is not None


def toolkits_for(task: BoardTask, env: ToolEnv, offered: tuple[str, ...] | list[str],
                 long: list[str] | None = None) -> list[str]:
    """The planner's choice, the workspace (reports point at files), the knowledge given with the goal (a small
    planner replanned "search the knowledge base" with only `python`), and `long-context` where the task names a
    workspace file too long to read whole (small planners give such a task plain `python`), where the run offers
    them. `long` is the workspace's long files, where the caller has listed them already."""
    names = [*task.toolkits, "workspace", *(["knowledge"] if "knowledge" in offered else [])]
    wording = f"{task.title} {task.criteria}"
    long = long_files(env.workspace) if long is None else long
    if "long-context" in offered and any(names_file(wording, name) for name in long):
        names.append("long-context")
    return list(dict.fromkeys(names))


def _environment(env: ToolEnv, max_steps: int, long: list[str]) -> str:
    return (f"date {time.strftime('%Y-%m-%d')}; workspace files: {workspace_files(env.workspace, long)}; at most "
            f"{max_steps} tool calls; no internet.")


def earlier_attempt(report: Report, missing: str = "", files: str = "", calls: int = 4) -> str:
    """What the actor of a task run again is told about the last attempt: why it failed, or that its "done"
    result was sent back, by the result check (`missing`: what it found missing) or by the planner (judged wrong
    or incomplete against the criteria); then its last `calls` tool calls with what they returned, and the files
    it left (`files`), so the new attempt starts from what was found (a retry told only the summary searched and
    failed as the first attempt had, bench/results/aime.md, sixteenth session)."""
    if report.status != "done":
        text = f"An earlier attempt at this task failed: {report.summary[:300]}"
    elif missing:
        text = (f"An earlier attempt got this far: {report.summary[:300]}\nA check sent the task back: {missing}. "
                "Start from that attempt's findings below (do not look them up again), do the missing step with a "
                "tool (a computation with Python), write the outcome where the task asks, and report the whole "
                "result.")
    else:
        text = (f"An earlier attempt reported this as done: {report.summary[:300]}\nThe planner sent the task back: "
                "that result is wrong or incomplete. Check it against the criteria and get it another way.")
    if report.log[-calls:]:
        text += "\nIts last calls (a call made again returns the same):\n" + "\n".join(
            f"- {line[:240]}" for line in report.log[-calls:])
    if files:
        text += f"\nFiles it left:\n{files}"
        if report.status == "done":
            text += "\nWrite them again with your result."
    return text


def build_actor(task: BoardTask, goal: str, board: ProgressBoard, env: ToolEnv, max_steps: int,
                offered: tuple[str, ...] | list[str] = ()) -> ActorSpec:
    long = long_files(env.workspace)
    names = toolkits_for(task, env, offered, long)
    kits = build(names, env)
    tools = [tool for kit in kits for tool in kit.tools]
    builtin = [Tool("update_progress", "", ProgressArgs, lambda a: ""), Tool("finish", "", FinishArgs, lambda a: "")]
    described = "\n".join(f"- {t.name}({', '.join(t.args.model_fields)}): {t.description}" for t in tools)
    knowledge = ""
    if env.knowledge is not None:
        found = env.knowledge.search(f"{task.title} {task.criteria}", k=3)
        if found:
            knowledge = "Knowledge found for this task (not files of the workspace):\n" + shown(found) + "\n"
    last = board.reports(task.id)[-1:]
    # a later attempt is sampled, and at temperature the 1.5B ran the example's code (another domain's file) in 3
    # of 6 redos (bench/results/aime.md, sixteenth session): the earlier attempt's own calls show the format instead
    example = "" if last and last[0].log else fill("actor_example")
    system = fill("actor", role=task.role or "a careful assistant", tools=described, example=example,
                  knowledge=knowledge, environment=_environment(env, max_steps, long))
    earlier = [t for t in board.tasks() if t.status == "done" and t.id != task.id]
    lines = [f"- task {t.id} ({t.title}): {t.result}" + (f" [files: {', '.join(t.pointers)}]" if t.pointers else "")
             for t in earlier]
    if lines:
        lines.insert(0, "Results of earlier tasks:")
    redone = last[0] if last and last[0].status == "done" else None     # a done result sent back
    missing = missing_note(board, task.id) if redone else ""
    lines += [earlier_attempt(report, missing, files_shown(env.workspace, report.pointers, FILE_CHARS)
                              if report.pointers else "") for report in last]
    stale = list(redone.pointers) if redone else []
    # the goal stays even when the task is the goal itself: the 1.5B single actor did worse without the repetition
    # (bench/results/aime.md, seventh session)
    # a redo the check sent back is the step left out, started from the earlier result: told to "do what is
    # missing" under the whole goal's title, the 1.5B searched again until a guard (sixteenth session)
    title = f"{missing_steps(missing)} (the step left out of: {task.title})" if missing else task.title
    user = fill("actor_task", title=title, criteria=task.criteria or "the task is complete",
                goal=goal, earlier="\n".join(lines))
    all_tools = tools + builtin
    return ActorSpec(task, system, user, kits, {t.name: t for t in all_tools}, step_adapter(all_tools), env, stale)
