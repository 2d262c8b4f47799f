"""Token constraints for structured decoding (the `TokenConstraint` protocol of models/base.py).

`JsonSchemaConstraint` admits only JSON that matches a schema (llguidance: a grammar-driven token mask), so even a
0.5B model can only write valid JSON. Aime's structured replies use it on the local backend, and `recursa serve`
uses it for a request's `response_format`.
"""

from __future__ import annotations

from typing import Any

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
        error = llguidance.LLMatcher.validate_grammar(self._grammar)
        if error:
            raise ValueError(f"not a usable JSON schema: {error}")
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
