"""`text-mas`: a team of roles on one model that hands its work on as text (the baseline LatentMAS compares with).

Patterns (prompts in `recursa/prompts/<pattern>.yaml`, shared with latent-mas):
- `sequential`: planner → critic → refiner → judger; each later role reads all earlier roles' text.
- `hierarchical`: math, science and code experts answer independently; a summarizer reads their answers and decides.

Batching: roles that do not read each other's work form one stage, and every stage is ONE batched
`ChatModel.generate` over all tasks of the batch (the three hierarchical experts × N tasks share one call).
"""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import Field

from recursa.core.budget import Budget
from recursa.core.errors import BudgetExceeded
from recursa.core.trace import span
from recursa.methods.base import AgentOutput, Answer, MethodBase, Task, register
from recursa.methods.prompts import Role, Team, answer_format_of, load_team
from recursa.methods.single import SamplingOptions
from recursa.models.base import ChatModel, Conversation

PATTERNS = ("sequential", "hierarchical")
Pattern = Literal["sequential", "hierarchical"]


def stages(team: Team) -> list[list[Role]]:
    """Roles grouped into stages: a run of roles that read no context (independent) is one stage."""
    grouped: list[list[Role]] = []
    for role in team.roles:
        independent = not role.receives_context and not role.final
        if independent and grouped and all(not r.receives_context and not r.final for r in grouped[-1]):
            grouped[-1].append(role)
        else:
            grouped.append([role])
    return grouped


class TextMASConfig(SamplingOptions):
    """`text-mas`: a team of roles on one model that hands its work on as text."""

    pattern: Pattern = "sequential"
    """Team: sequential (planner → critic → refiner → judger) or hierarchical (experts → summarizer)."""
    max_tokens: int = Field(384, ge=1)
    """Most tokens each agent generates."""
    context_chars: int | None = Field(None, ge=1)
    """Cut each earlier agent's text handed on to at most this many characters (None: keep all)."""


@register
class TextMAS(MethodBase):
    """A team of roles on one model that hands its work on as text (the baseline LatentMAS compares with)."""

    name = "text-mas"
    Config = TextMASConfig

    def __init__(self, model: ChatModel, config: TextMASConfig | None = None, *, budget: Budget | None = None,
                 **options: Any):
        super().__init__(model, config, budget=budget, **options)
        self.pattern = self.config.pattern
        self.team = load_team(self.pattern)
        self.sampling = self.config.sampling()
        self.context_chars = self.config.context_chars

    def solve_batch(self, tasks: list[Task]) -> list[Answer]:
        started = time.perf_counter()
        agents: list[list[AgentOutput]] = [[] for _ in tasks]
        handed_on: list[list[tuple[Role, str]]] = [[] for _ in tasks]   # what later roles read, per task
        stopped: str | None = None
        with span("method", self.name, pattern=self.pattern, batch_size=len(tasks)):
            for stage in stages(self.team):
                try:
                    self._run_stage(stage, tasks, agents, handed_on)
                except BudgetExceeded as exc:
                    stopped = str(exc)
                    break
        seconds = (time.perf_counter() - started) / max(1, len(tasks))
        final = self.team.final.name
        answers = []
        for outputs in agents:
            # The final role's text is the answer; a run stopped by its budget returns the latest text it has.
            text = next((a.text for a in outputs if a.role == final), outputs[-1].text if outputs else "")
            answers.append(Answer(text=text, method=self.name, agents=outputs, seconds=seconds, stopped=stopped,
                                  meta={"pattern": self.pattern}))
        return answers

    def _run_stage(self, stage: list[Role], tasks: list[Task], agents: list[list[AgentOutput]],
                   handed_on: list[list[tuple[Role, str]]]) -> None:
        rows: list[tuple[int, Role]] = [(i, role) for role in stage for i in range(len(tasks))]
        convs: list[Conversation] = []
        for i, role in rows:
            context = self.team.text_context(handed_on[i], self.context_chars) if role.receives_context else ""
            convs.append(role.messages(tasks[i].question, answer_format_of(tasks[i].meta), context))
        names = "+".join(r.name for r in stage)
        with span("agent", names, pattern=self.pattern, batch_size=len(convs)):
            began = time.perf_counter()
            completions = self.model.generate(convs, self.sampling)
            per_row = (time.perf_counter() - began) / max(1, len(convs))
        for (i, role), conv, done in zip(rows, convs, completions, strict=True):
            agents[i].append(AgentOutput(role.name, done.text, done.prompt_tokens, done.completion_tokens,
                                         seconds=per_row, extra={"prompt": conv[-1]["content"],
                                                                 "finish_reason": done.finish_reason}))
        for i, role in rows:  # handed on after the whole stage: roles in one stage do not see each other
            handed_on[i].append((role, next(a.text for a in agents[i] if a.role == role.name)))
        if self.budget is not None:
            self.budget.offer(next((a.text for a in reversed(agents[0]) if a.text), None))
            self.budget.charge(tokens=sum(c.prompt_tokens + c.completion_tokens for c in completions),
                               calls=len(completions))

