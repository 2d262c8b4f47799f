"""Structured replies: a pydantic type in, a validated value out, on any backend.

Local models decode under a JSON-schema constraint (models/constraints.py: a grammar-driven token mask, so even a
0.5B model can only produce JSON of the schema); HTTP backends send the schema as the server's `response_format`.
Either way the reply is validated with pydantic, and an invalid one is answered with the error and asked again.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import TypeAdapter, ValidationError

from recursa.core.budget import Budget
from recursa.models.base import ChatModel, Completion, Conversation, Sampling
from recursa.models.constraints import JsonSchemaConstraint

CUT_OFF_TEMPERATURE = 0.8   # a reply after one cut off at the token limit is sampled at least this warm


class SchemaOnly:
    """A constraint an HTTP backend can use: the schema for `response_format`, no local mask."""

    def __init__(self, schema: dict[str, Any]):
        self.json_schema = schema

    def mask(self, generated: list[list[int]], logits: Any) -> Any:
        return logits


def constraint_for(model: ChatModel, schema: dict[str, Any]) -> Any:
    """A local token mask where the model exposes its tokenizer and llguidance is installed, else schema only."""
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is not None:
        try:
            return JsonSchemaConstraint(tokenizer, schema)
        except ImportError:
            pass
    return SchemaOnly(schema)


def closed(schema: Any) -> Any:
    """The schema with every object closed to keys it does not name (`additionalProperties: false`): pydantic
    leaves objects open, and a grammar built from an open schema lets a small model append keys of its own (an
    actor's call grew "code" and "output" keys under a knowledge search), spending tokens on text nobody reads."""
    if isinstance(schema, list):
        return [closed(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: closed(value) for key, value in schema.items()}
    if "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out


@dataclass
class Reply:
    """A structured reply: the value (None when every attempt was invalid), the raw text and what it cost."""

    value: Any
    text: str
    completions: list[Completion] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def tokens(self) -> int:
        return sum(c.prompt_tokens + c.completion_tokens for c in self.completions)


def parse(text: str, adapter: TypeAdapter) -> tuple[Any, str | None]:
    """The value in `text` (the whole reply, or its first {...} object, fences stripped), or the error."""
    candidates = [text.strip()]
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        candidates.append(text[start:end + 1])
    candidates.append(re.sub(r"^```(?:json)?\s*|\s*```$", "", text.strip()))
    error = "no JSON object in the reply"
    for candidate in candidates:
        try:
            return adapter.validate_python(json.loads(candidate)), None
        except json.JSONDecodeError as exc:
            error = f"invalid JSON: {exc}"
        except ValidationError as exc:
            error = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:3])
    return None, error


def ask(model: ChatModel, conversation: Conversation, adapter: TypeAdapter, sampling: Sampling,
        budget: Budget | None = None, retries: int = 2) -> Reply:
    """Generate a reply of type `adapter` under a schema constraint; on an invalid reply, say why and ask again."""
    schema = closed(adapter.json_schema())
    constrained = Sampling(max_tokens=sampling.max_tokens, temperature=sampling.temperature, top_p=sampling.top_p,
                           seed=sampling.seed, constraint=constraint_for(model, schema))
    messages = list(conversation)
    reply = Reply(None, "")
    for _ in range(retries + 1):
        completion = model.generate([messages], constrained)[0]
        reply.completions.append(completion)
        reply.text = completion.text
        if budget is not None:
            budget.charge(tokens=completion.prompt_tokens + completion.completion_tokens, calls=1)
        value, error = parse(completion.text, adapter)
        if error is None:
            reply.value = value
            return reply
        if completion.finish_reason == "length":   # the same prompt would only run out of room again
            error = f"cut off at the limit of {sampling.max_tokens} tokens before it ended"
            # greedy decoding wrote the same unclosed string again on every retry (a long-doc actor spent 40 min on
            # 384-token replies, bench/results/aime.md): the retry is sampled
            constrained = replace(constrained, temperature=max(constrained.temperature, CUT_OFF_TEMPERATURE))
            advice = ("Reply again with a much shorter JSON object: a one-sentence thought and short arguments "
                      "(code of a few lines).")
        else:
            advice = "Reply again with one JSON object that follows the required format, and nothing else."
        reply.errors.append(error)
        messages = [*conversation, {"role": "assistant", "content": completion.text[:2000]},
                    {"role": "user", "content": f"That reply was not valid ({error}). {advice}"}]
    return reply
