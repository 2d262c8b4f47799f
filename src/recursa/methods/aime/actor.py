"""The dynamic actor (paper §5): a ReAct loop (thought → one tool call → observation) for one subtask.

Besides its toolkits an actor has `update_progress(status, message)`, which writes to the board while it works,
and `finish(status, summary, pointers)`, its structured report. Guards end the loop early with what it has (the
planner decides what next): a step cap, a repeated identical tool call (the first repeat is refused with a warning,
the next one stops the actor; a call that failed first runs once more as it was), and no progress (no new,
successful observation, and no error not seen before: debugging is progress) for K steps in a row.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace

from recursa.core.budget import Budget
from recursa.core.errors import BudgetExceeded
from recursa.core.sandbox_worker import VALUES_SHOWN
from recursa.core.trace import current_tracer, span
from recursa.methods.aime.board import ProgressBoard, Report
from recursa.methods.aime.factory import ActorSpec
from recursa.methods.aime.structured import Reply, ask
from recursa.methods.aime.toolkits import ToolEnv, ToolFailure
from recursa.methods.aime.toolkits.workspace import list_files, resolve
from recursa.models.base import ChatModel, Completion, Sampling

GUARDS = ("step_cap", "repeat", "no_progress")
FILE_NAME = re.compile(r"\b[\w-]+\.[A-Za-z][A-Za-z0-9]{1,4}\b")    # report.md, total.txt (not e.g., not 2.5)


@dataclass(frozen=True)
class ActorLimits:
    max_steps: int = 8
    max_repeats: int = 2            # identical calls refused before the repeat guard fires
    stall_steps: int = 4            # K: steps in a row without progress
    observation_chars: int = 1500
    history_steps: int = 6          # tool turns kept in the prompt
    retries: int = 2                # invalid (unparseable) replies answered before a step is lost
    unstick_temperature: float = 0.8  # the reply after a refused repeat is sampled: greedy decoding repeats again
    check_numbers: bool = True      # "done" refused once while typed numbers appear in no tool output or prompt
    log_calls: int = 8              # tool calls kept in the report's log


@dataclass
class ActorResult:
    report: Report
    completions: list[Completion] = field(default_factory=list)
    invalid_replies: int = 0


def _trim(messages: list[dict[str, str]], keep_steps: int) -> list[dict[str, str]]:
    head, turns = messages[:2], messages[2:]
    return head + turns[-2 * keep_steps:] if keep_steps else head


def _run_tool(spec: ActorSpec, name: str, args: dict) -> tuple[str, bool]:
    tool = spec.tools[name]
    with span("tool", name, task_id=spec.task.id, args=json.dumps(args)[:300]) as s:
        try:
            text, ok = tool.run(tool.args(**args)), True
        except BudgetExceeded:
            raise
        except ToolFailure as exc:
            text, ok = f"Error: {exc}", False
        except Exception as exc:  # noqa: BLE001 - a broken tool is an observation, never a lost run
            text, ok = f"Error: {type(exc).__name__}: {exc}", False
        if s is not None:
            s.set(ok=ok, observation=text[:300])
    return text, ok


def call_line(name: str, args: dict, observation: str, chars: int = 300) -> str:
    """One tool call as the result check reads it (check.py): the call with its arguments, then what it returned."""
    shown = ", ".join(f"{key}={value!r}"[:chars] for key, value in args.items())
    return f"{name}({shown}) -> {' '.join(observation.split())[:chars // 2]}"


def _trace_reply(task_id: str, step: int, text: str, errors: list[str]) -> None:
    """The actor's reply as the model wrote it, so a failed run can be read back step by step."""
    tracer = current_tracer()
    if tracer is not None:
        tracer.event("actor", "reply", task_id=task_id, step=step, text=text[:1500], invalid=errors[-1:])


def with_evidence(summary: str, observation: str, chars: int = 200) -> str:
    """A "done" summary with the last result the actor saw appended, unless the summary already quotes it: small
    models report "the values have been computed" without the values, and the planner reads only the report."""
    evidence = " ".join(observation.split())[:chars]
    if not evidence or evidence in " ".join(summary.split()):
        return summary
    return f"{summary} [last result: {evidence}]"


def missing_files(spec: ActorSpec, pointers: list[str]) -> list[str]:
    """The pointers that name a workspace file which does not exist (paths outside it are not files to check)."""
    missing = []
    for pointer in pointers:
        try:
            path = resolve(spec.env.workspace, pointer)
        except ToolFailure:
            continue
        if path != spec.env.workspace.resolve() and not path.exists():
            missing.append(pointer)
    return missing


def error_line(observation: str, chars: int = 200) -> str:
    """What a failed call came to: the last line of its error (a traceback's exception, a tool's message), with the
    values its failing line used where the sandbox showed them."""
    lines = [line.strip() for line in observation.strip().splitlines() if line.strip()]
    if len(lines) > 1 and lines[-1].startswith(VALUES_SHOWN):
        return f"{lines[-2]} ({lines[-1][:1].lower()}{lines[-1][1:]})"[:chars]
    return (lines[-1] if lines else observation)[:chars]


def guard_summary(guard: str, steps: int, useful: list[str], errors: list[str]) -> str:
    """The report of an actor a guard stopped: what it found, and the error it was working on (the planner and a
    retry start from there instead of from nothing)."""
    summary = f"stopped by the {guard} guard after {steps} steps. " + (
        "What it found: " + " | ".join(useful[-3:]) if useful else "It found nothing useful.")
    return summary + (f" Its last error: {errors[-1]}" if errors else "")


def repeat_refusal(earlier: str, chars: int = 600) -> str:
    """The answer to a call made again as it was: its earlier result, shown again (small models repeat a search
    whose result named what to look up next), and what to do instead."""
    text = "You already made this exact call. "
    if earlier:
        text += f"It returned: {earlier[:chars]}\n"
    return text + ("If that answers the task, finish with it. If it names something you still need to look up, "
                   "search for that name instead. Otherwise do something different.")


NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?![\w.])")


def _close_to_any(value: float, shown: list[float]) -> bool:
    return any(abs(value - other) <= max(0.006, abs(value) * 1e-3) for other in shown)


def ungrounded_numbers(typed: dict[str, str], evidence: str) -> dict[str, list[str]]:
    """Numbers of two digits or more that the actor typed into files with `write_file` and that appear nowhere in
    `evidence` (its prompt and what its tools returned), not even rounded: small models type placeholders
    (`total: 1234`) or sums made up in the head, then report "done". What code wrote was computed, not typed."""
    shown = [float(n) for n in NUMBER.findall(evidence)]
    found: dict[str, list[str]] = {}
    for name, content in typed.items():
        numbers = [n for n in NUMBER.findall(content) if sum(c.isdigit() for c in n) > 1]
        missing = [n for n in dict.fromkeys(numbers) if n not in evidence and not _close_to_any(float(n), shown)]
        if missing:
            found[name] = missing[:5]
    return found


def _track_typed(typed: dict[str, str], name: str, call: dict, ok: bool, env: ToolEnv) -> None:
    """Keep `typed` (file → content the actor typed with write_file) current: code that rewrites a file
    replaces what was typed into it."""
    if name == "write_file" and ok:
        typed[call["path"]] = call["content"]
    for written in env.take_code_writes():
        typed.pop(written, None)


def _refuse_finish(spec: ActorSpec, call: dict, has_evidence: bool, refusals: set[str],
                   typed: dict[str, str] | None = None, evidence: str = "") -> str | None:
    """Why a "done" report is sent back (once per reason): no tool has succeeded yet, so its result is shown
    nowhere; it points at workspace files that were never written; a redo left the files of the attempt it
    replaces as they were; or its task names a file that does not exist (small models report "done" with the
    result in the summary and the file the task asked for unwritten); or a file it typed holds numbers nothing
    has shown (`ungrounded_numbers`)."""
    if call["status"] != "done":
        return None
    if not has_evidence and "evidence" not in refusals:
        refusals.add("evidence")
        return ("No tool call has succeeded yet, so the result is not shown anywhere. Use a tool to get it first, "
                "then finish.")
    missing = missing_files(spec, call.get("pointers") or [])
    if missing and "missing" not in refusals:
        refusals.add("missing")
        return (f"Not finished: {', '.join(missing)} does not exist in the workspace. Write it with a tool first, "
                "then finish.")
    stale = [name for name in spec.stale if name not in spec.env.written]
    if stale and "stale" not in refusals:
        refusals.add("stale")
        return (f"Not finished: {', '.join(stale)} still holds the sent-back attempt's result. Write it again with "
                "yours, then finish.")
    present = {name.lower() for name in list_files(spec.env.workspace)}
    unwritten = [name for name in missing_files(spec, FILE_NAME.findall(f"{spec.task.title} {spec.task.criteria}"))
                 if name.lower() not in present]        # a name written in another case counts as written
    if unwritten and "unwritten" not in refusals:
        refusals.add("unwritten")
        return (f"Not finished: the task names {', '.join(dict.fromkeys(unwritten))}, which does not exist in the "
                "workspace yet. Write it with a tool first, then finish.")
    ungrounded = ungrounded_numbers(typed or {}, evidence) if "ungrounded" not in refusals else {}
    if ungrounded:
        refusals.add("ungrounded")
        held = "; ".join(f"{name} holds {', '.join(numbers)}" for name, numbers in ungrounded.items())
        return (f"Not finished: {held}, which no tool output has shown. Get those values with a tool (compute and "
                "print them, or read them from the data), write the file again if they differ, then finish.")
    return None


@dataclass
class _Memory:
    """What an actor's loop keeps between steps."""
    calls: dict[str, int] = field(default_factory=dict)      # call → times run (a failed call's one rerun not counted)
    failed: set[str] = field(default_factory=set)            # calls whose last run failed
    retried: set[str] = field(default_factory=set)
    observed: dict[str, str] = field(default_factory=dict)   # call → what it returned, shown again on a repeat
    seen: set[str] = field(default_factory=set)
    useful: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)          # distinct error lines of failed calls, in order
    typed: dict[str, str] = field(default_factory=dict)      # file → what write_file typed into it (not code's output)
    last_result: str = ""            # the last successful observation that was not a write confirmation
    log: list[str] = field(default_factory=list)             # every call a tool ran (what the result check reads)
    refusals: set[str] = field(default_factory=set)          # each refusal of a "done" report is made once


@dataclass
class _Step:
    """What one reply led to: the observation shown next, or the end of the loop (a report or a guard)."""
    observation: str = ""
    progress: bool = False
    refused: bool = False            # a refused repeat: the next reply is sampled to get unstuck
    guard: str | None = None
    report: Report | None = None


def run_actor(model: ChatModel, spec: ActorSpec, board: ProgressBoard, budget: Budget, sampling: Sampling,
              limits: ActorLimits) -> ActorResult:
    result = ActorResult(Report(spec.task.id, "failed", ""))
    messages = [{"role": "system", "content": spec.system}, {"role": "user", "content": spec.user}]
    memory = _Memory()
    stall, guard, step, refused = 0, "step_cap", 0, False
    unstick = replace(sampling, temperature=max(sampling.temperature, limits.unstick_temperature))
    for step in range(1, limits.max_steps + 1):
        budget.check()
        reply = ask(model, _trim(messages, limits.history_steps), spec.adapter, unstick if refused else sampling,
                    budget, limits.retries)
        result.completions += reply.completions
        result.invalid_replies += len(reply.errors)
        _trace_reply(spec.task.id, step, reply.text, reply.errors)
        outcome = _act(spec, board, reply, memory, step, limits)
        if outcome.report is not None:
            result.report = outcome.report
            return result
        if outcome.guard is not None:
            guard = outcome.guard
            break
        refused = outcome.refused
        stall = 0 if outcome.progress else stall + 1
        messages += [{"role": "assistant", "content": reply.text},
                     {"role": "user", "content": "Observation: " + outcome.observation[:limits.observation_chars]}]
        if stall >= limits.stall_steps:
            guard = "no_progress"
            break
    summary = guard_summary(guard, step, memory.useful, memory.errors)
    result.report = Report(spec.task.id, "failed", summary, list(spec.env.written), step, guard,
                           memory.log[-limits.log_calls:])
    return result


def _act(spec: ActorSpec, board: ProgressBoard, reply: Reply, memory: _Memory, step: int, limits: ActorLimits) -> _Step:
    if reply.value is None:
        return _Step(f"Error: your reply was not valid ({reply.errors[-1]}). Reply with one JSON tool call.")
    call = reply.value.model_dump()
    name = call.pop("tool")
    call.pop("thought", None)
    if name == "finish":
        return _finish(spec, call, memory, step, limits)
    return _tool_step(spec, board, name, call, memory, limits)


def _finish(spec: ActorSpec, call: dict, memory: _Memory, step: int, limits: ActorLimits) -> _Step:
    """The actor's report, or the refusal of a "done" that its evidence does not support."""
    checked = memory.typed if limits.check_numbers else {}
    evidence = "\n".join([spec.system, spec.user, *memory.seen]) if checked else ""
    refusal = _refuse_finish(spec, call, bool(memory.useful), memory.refusals, checked, evidence)
    if refusal:
        return _Step(refusal)
    pointers = [p for p in dict.fromkeys([*call["pointers"], *spec.env.written]) if p]
    summary = with_evidence(call["summary"], memory.last_result) if call["status"] == "done" else call["summary"]
    return _Step(report=Report(spec.task.id, call["status"], summary, pointers, step,
                               log=memory.log[-limits.log_calls:]))


def _tool_step(spec: ActorSpec, board: ProgressBoard, name: str, call: dict, memory: _Memory,
               limits: ActorLimits) -> _Step:
    key = name + json.dumps(call, sort_keys=True)
    if key in memory.failed and key not in memory.retried:
        memory.retried.add(key)      # tools fail transiently: a failed call may run once more as it was
    else:
        memory.calls[key] = memory.calls.get(key, 0) + 1
    if memory.calls[key] > limits.max_repeats:
        return _Step(guard="repeat")
    if memory.calls[key] > 1:        # the same note twice is a loop too, not progress
        return _Step(repeat_refusal(memory.observed.get(key, "")), refused=True)
    if name == "update_progress":
        board.progress(spec.task.id, call["status"], call["message"])
        return _Step("noted on the board", progress=call["status"] == "milestone")
    observation, ok = _run_tool(spec, name, call)
    memory.log.append(call_line(name, call, observation))
    _track_typed(memory.typed, name, call, ok, spec.env)
    memory.observed[key] = observation
    (memory.failed.discard if ok else memory.failed.add)(key)
    if ok:   # progress: something not seen before, or a write; debugging (a new error) is progress too
        progress = observation not in memory.seen or spec.tools[name].writes
        memory.useful.append(f"{name}: {observation[:300]}")
        if not spec.tools[name].writes:
            memory.last_result = observation
    else:
        line = error_line(observation)
        progress = line not in memory.errors
        memory.errors += [line] if progress else []
    memory.seen.add(observation)
    return _Step(observation, progress=progress)
