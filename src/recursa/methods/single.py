"""`single`: one model call with a chain-of-thought prompt (the baseline every paper compares with)."""

from __future__ import annotations

import time
from typing import Any

from recursa.core.trace import span
from recursa.methods.base import AgentOutput, Answer, Task, register
from recursa.models.base import ChatModel, Sampling

SYSTEM = "You are a helpful assistant."
INSTRUCTION = ("{question}\n\nThink step by step, then give the final answer on the last line in the form "
               "\\boxed{{ANSWER}}.")


class SingleModel:
    name = "single"

    def __init__(self, model: ChatModel, max_tokens: int = 512, temperature: float = 0.0, **_: Any):
        self.model = model
        self.sampling = Sampling(max_tokens=max_tokens, temperature=temperature)

    def solve(self, task: Task) -> Answer:
        return self.solve_batch([task])[0]

    def solve_batch(self, tasks: list[Task]) -> list[Answer]:
        convs = [[{"role": "system", "content": SYSTEM},
                  {"role": "user", "content": INSTRUCTION.format(question=t.question)}] for t in tasks]
        started = time.perf_counter()
        with span("agent", "single", batch_size=len(tasks)):
            completions = self.model.generate(convs, self.sampling)
        seconds = (time.perf_counter() - started) / max(1, len(tasks))
        return [Answer(text=c.text, method=self.name, seconds=seconds,
                       agents=[AgentOutput("single", c.text, c.prompt_tokens, c.completion_tokens, seconds=seconds)])
                for c in completions]


@register("single")
def _make(model: ChatModel, **options: Any) -> SingleModel:
    return SingleModel(model, **options)
