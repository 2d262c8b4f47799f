"""`single`: one model call with a chain-of-thought prompt (the baseline every paper compares with).

Its prompt is the `single` pattern in `recursa/prompts/single.yaml`, from the same family as the team roles, and
the answer instructions follow the task kind (`Task.meta["answer_format"]`: math, choice, code, text).
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import Field

from recursa.core.budget import Budget
from recursa.core.trace import span
from recursa.methods.base import AgentOutput, Answer, MethodBase, Task, register
from recursa.methods.config import MethodConfig
from recursa.methods.prompts import answer_format_of, load_team
from recursa.models.base import ChatModel, Sampling


class SamplingOptions(MethodConfig):
    """Decoding options shared by the text methods."""

    max_tokens: int = Field(512, ge=1)
    """Most tokens each decoding agent generates."""
    temperature: float = Field(0.0, ge=0.0)
    """Sampling temperature; 0 is greedy."""
    seed: int | None = None
    """Seed for sampling (temperature > 0)."""

    def sampling(self) -> Sampling:
        return Sampling(max_tokens=self.max_tokens, temperature=self.temperature, seed=self.seed)


class SingleConfig(SamplingOptions):
    """`single`: one model call with a chain-of-thought prompt."""


@register
class Single(MethodBase):
    """One model call with a chain-of-thought prompt (the baseline every paper compares with)."""

    name = "single"
    Config = SingleConfig

    def __init__(self, model: ChatModel, config: SingleConfig | None = None, *, budget: Budget | None = None,
                 **options: Any):
        super().__init__(model, config, budget=budget, **options)
        self.sampling = self.config.sampling()
        self.role = load_team("single").final

    def solve_batch(self, tasks: list[Task]) -> list[Answer]:
        convs = [self.role.messages(t.question, answer_format_of(t.meta)) for t in tasks]
        started = time.perf_counter()
        with span("agent", "single", batch_size=len(tasks)):
            completions = self.model.generate(convs, self.sampling)
        seconds = (time.perf_counter() - started) / max(1, len(tasks))
        if self.budget is not None:
            self.budget.offer(completions[0].text if completions else None)
            self.budget.charge(tokens=sum(c.prompt_tokens + c.completion_tokens for c in completions),
                               calls=len(completions))
        return [Answer(text=c.text, method=self.name, seconds=seconds,
                       agents=[AgentOutput("single", c.text, c.prompt_tokens, c.completion_tokens, seconds=seconds,
                                           extra={"prompt": conv[-1]["content"], "finish_reason": c.finish_reason})])
                for c, conv in zip(completions, convs, strict=True)]

