"""Keeping the root conversation inside a token limit: old REPL outputs shrink first, then old turns go."""

from __future__ import annotations

from recursa.models.base import ChatModel, Conversation

OLD_OUTPUT_CHARS = 800


def _tokens(model: ChatModel, messages: Conversation) -> int:
    # +4 per message for the chat template's role markers.
    return sum(model.count_tokens(m["content"]) + 4 for m in messages)


def fit_history(messages: Conversation, model: ChatModel, limit: int) -> Conversation:
    """A copy of `messages` of at most about `limit` tokens.

    Always kept: the system prompt, the first user message (question and context description) and the last
    exchange. Older REPL outputs are cut to their first characters, then the oldest exchanges are dropped.
    """
    if _tokens(model, messages) <= limit or len(messages) <= 3:
        return list(messages)
    head, turns = messages[:2], [dict(m) for m in messages[2:]]
    for index, message in enumerate(turns[:-2]):
        if message["role"] == "user" and len(message["content"]) > OLD_OUTPUT_CHARS:
            turns[index] = {"role": "user", "content": message["content"][:OLD_OUTPUT_CHARS]
                            + "\n... [older output shortened to save space]"}
            if _tokens(model, head + turns) <= limit:
                return head + turns
    while len(turns) > 2 and _tokens(model, head + turns) > limit:
        turns = turns[2:] if turns[0]["role"] == "assistant" else turns[1:]
    if turns and turns[0]["role"] == "user":  # roles must alternate after the first user message
        turns = turns[1:]
    return head + turns
