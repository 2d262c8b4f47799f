"""Structured replies: a pydantic type in, a validated value out, on any backend.

Local models decode under a JSON-schema constraint (llguidance: a grammar-driven token mask, so even a 0.5B model
can only produce JSON of the schema); HTTP backends send the schema as the server's `response_format`. Either way
the reply is validated with pydantic, and an invalid one is answered with the error and asked again.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from pydantic import TypeAdapter, ValidationError

from recursa.core.budget import Budget
from recursa.models.base import ChatModel, Completion, Conversation, Sampling

_TOKENIZERS: dict[int, Any] = {}
_MAX_MATCHERS = 512


def _ll_tokenizer(tokenizer: Any) -> Any:
    """llguidance's view of a transformers tokenizer (built once per tokenizer: it scans the vocabulary)."""
    import llguidance.hf

    key = id(tokenizer)
    if key not in _TOKENIZERS:
        _TOKENIZERS[key] = llguidance.hf.from_tokenizer(tokenizer)
    return _TOKENIZERS[key]


class JsonSchemaConstraint:
    """A `TokenConstraint` (models/base.py) that admits only JSON matching `schema`, compactly written.

    One llguidance matcher per generated prefix: a row's mask depends only on its own ids, and rows that finish or
    reorder between steps need no bookkeeping (a prefix it has not seen is replayed from the start).
    """

    def __init__(self, tokenizer: Any, schema: dict[str, Any]):
        import llguidance

        self.json_schema = schema
        self._tokenizer = _ll_tokenizer(tokenizer)
        self._grammar = llguidance.LLMatcher.grammar_from_json_schema(
            schema, defaults={"whitespace_flexible": False})
        self._matchers: dict[tuple[int, ...], Any] = {}

    def _matcher(self, ids: list[int]) -> Any:
        import llguidance

        key = tuple(ids)
        matcher = self._matchers.pop(key[:-1], None) if ids else None
        if matcher is not None:
            matcher.consume_token(ids[-1])
        else:
            matcher = llguidance.LLMatcher(self._tokenizer, self._grammar)
            if ids:
                matcher.consume_tokens(ids)
        if len(self._matchers) >= _MAX_MATCHERS:
            self._matchers.clear()
        self._matchers[key] = matcher
        return matcher

    def mask(self, generated: list[list[int]], logits: Any) -> Any:
        import torch
        from llguidance.torch import allocate_token_bitmask, fill_next_token_bitmask

        vocab = self._tokenizer.vocab_size
        bitmask = allocate_token_bitmask(len(generated), vocab)
        for row, ids in enumerate(generated):
            fill_next_token_bitmask(self._matcher(ids), bitmask, row)
        bits = torch.arange(32, dtype=torch.int32)
        allowed = ((bitmask[:, :, None] >> bits) & 1).bool().reshape(len(generated), -1)[:, :vocab]
        width = min(vocab, logits.shape[-1])
        masked = torch.full_like(logits, float("-inf"))
        masked[:, :width] = logits[:, :width].masked_fill(~allowed[:, :width].to(logits.device), float("-inf"))
        return masked


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
    schema = adapter.json_schema()
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
        reply.errors.append(error)
        messages = [*conversation, {"role": "assistant", "content": completion.text[:2000]},
                    {"role": "user", "content": f"That reply was not valid ({error}). Reply again with one JSON "
                                                "object that follows the required format, and nothing else."}]
    return reply
