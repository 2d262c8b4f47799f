"""`single-truncated`: the long-context baseline. One model call with as much of the context as fits the window."""

from __future__ import annotations

import time
from typing import Any

from pydantic import Field

from recursa.core.budget import Budget
from recursa.core.trace import span
from recursa.methods.base import AgentOutput, Answer, MethodBase, Task, register
from recursa.methods.rlm.prompting import context_text
from recursa.methods.single import SamplingOptions
from recursa.models.base import ChatModel

SYSTEM = "You are a helpful assistant. Answer the question using the document."
TEMPLATE = "Document:\n\"\"\"\n{context}\n\"\"\"\n\nQuestion: {question}\nReply with the answer only."
TRUNCATION_NOTE = "\n[... document truncated: it does not fit the context window ...]"


class TruncatedConfig(SamplingOptions):
    """`single-truncated`: one call with the head of the context that fits the window."""

    max_tokens: int = Field(128, ge=1)
    """Most tokens of the answer."""
    max_context_tokens: int | None = Field(None, ge=64)
    """Treat the window as this many tokens (default: the model's own)."""


@register
class TruncatedSingle(MethodBase):
    """The long-context baseline: one model call with as much of the context as fits the window."""

    name = "single-truncated"
    Config = TruncatedConfig

    def __init__(self, model: ChatModel, config: TruncatedConfig | None = None, *, budget: Budget | None = None,
                 **options: Any):
        super().__init__(model, config, budget=budget, **options)
        self.sampling = self.config.sampling()
        max_context_tokens = self.config.max_context_tokens
        window = model.context_window if max_context_tokens is None else min(max_context_tokens,
                                                                              model.context_window)
        self.prompt_tokens = window - self.sampling.max_tokens - 32   # chat template markers

    def fit(self, question: str, context: Any) -> tuple[str, bool]:
        """The user prompt with the head of the context cut so that it fits; and whether it was cut."""
        text = context_text(context) if context is not None else ""
        prompt = TEMPLATE.format(context=text, question=question)
        overhead = self.model.count_tokens(TEMPLATE.format(context="", question=question) + SYSTEM)
        room = self.prompt_tokens - overhead
        sample = text[:8000]
        ratio = len(sample) / max(1, self.model.count_tokens(sample)) if sample else 4.0
        if len(text) <= room * ratio * 0.8 and self.model.count_tokens(text) <= room:
            return prompt, False
        chars = int(room * ratio)
        while chars > 0:
            cut = text[:chars] + TRUNCATION_NOTE
            if self.model.count_tokens(cut) <= room:
                return TEMPLATE.format(context=cut, question=question), True
            chars = int(chars * 0.93)
        return TEMPLATE.format(context=TRUNCATION_NOTE, question=question), True

    def solve(self, task: Task) -> Answer:
        return self.solve_batch([task])[0]

    def solve_batch(self, tasks: list[Task]) -> list[Answer]:
        answers = []
        for task in tasks:  # one by one: long prompts of different lengths gain nothing from batching on CPU
            started = time.perf_counter()
            prompt, truncated = self.fit(task.question, task.context)
            with span("agent", "single-truncated", truncated=truncated, prompt_chars=len(prompt)):
                completion = self.model.generate([[{"role": "system", "content": SYSTEM},
                                                   {"role": "user", "content": prompt}]], self.sampling)[0]
            seconds = time.perf_counter() - started
            answers.append(Answer(text=completion.text, method=self.name, seconds=seconds,
                                  meta={"truncated": truncated, "prompt_chars": len(prompt)},
                                  agents=[AgentOutput("single", completion.text, completion.prompt_tokens,
                                                      completion.completion_tokens, seconds=seconds)]))
        return answers
