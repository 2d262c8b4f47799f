"""`single`: one model call with a chain-of-thought prompt (the baseline every paper compares with).

Its prompt is the `single` pattern in `recursa/prompts/single.yaml`, from the same family as the team roles, and
the answer instructions follow the task kind (`Task.meta["answer_format"]`: math, choice, code, text).
"""

from __future__ import annotations

import time
from typing import Any

from recursa.core.budget import Budget
from recursa.core.trace import span
from recursa.methods.base import AgentOutput, Answer, Task, register
from recursa.methods.prompts import answer_format_of, load_team
from recursa.models.base import ChatModel, Sampling


class SingleModel:
    name = "single"

    def __init__(self, model: ChatModel, max_tokens: int = 512, temperature: float = 0.0,
                 budget: Budget | None = None, seed: int | None = None, **_: Any):
        self.model = model
        self.sampling = Sampling(max_tokens=max_tokens, temperature=temperature, seed=seed)
        self.role = load_team("single").final
        self.budget = budget

    def solve(self, task: Task) -> Answer:
        return self.solve_batch([task])[0]

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


@register("single")
def _make(model: ChatModel, **options: Any) -> SingleModel:
    return SingleModel(model, **options)
