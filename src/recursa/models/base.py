"""The two protocols every method codes against: `ChatModel` (text) and `LatentModel` (white-box)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch

    from recursa.models.state import SequenceState

Message = dict[str, str]          # {"role": "system" | "user" | "assistant", "content": "..."}
Conversation = list[Message]


@dataclass(frozen=True)
class Sampling:
    """Decoding settings. temperature 0 means greedy."""

    max_tokens: int = 512
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    ignore_eos: bool = False        # decode exactly max_tokens (speed benchmarks)
    constraint: TokenConstraint | None = None   # restrict the next tokens (e.g. to a JSON schema); see below

    def __post_init__(self) -> None:
        from recursa.core.errors import ConfigError

        if self.max_tokens < 1:
            raise ConfigError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if self.temperature < 0:
            raise ConfigError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p must be in (0, 1], got {self.top_p}")
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


@runtime_checkable
class TokenConstraint(Protocol):
    """Structured decoding: which tokens may come next.

    The local backend calls `mask(generated, logits)` before choosing each token: `generated[i]` holds the ids row
    i has generated so far and `logits[i]` its next-token logits [rows, V]; it returns the logits with forbidden
    tokens at -inf. Rows are independent: a row's mask may depend only on its own ids. HTTP backends cannot mask;
    they send `json_schema` (a dict, or None) as the server's JSON-schema response format where it has one.
    """

    json_schema: dict | None

    def mask(self, generated: list[list[int]], logits: torch.Tensor) -> torch.Tensor: ...


@dataclass
class Completion:
    text: str
    finish_reason: Literal["stop", "length"]
    prompt_tokens: int
    completion_tokens: int
    token_ids: list[int] = field(default_factory=list)
    cached_tokens: int = 0      # prompt tokens whose KV cache was reused (included in prompt_tokens)


@runtime_checkable
class ChatModel(Protocol):
    """Anything that turns a batch of conversations into completions, in one call."""

    name: str

    def generate(self, batch: list[Conversation], sampling: Sampling) -> list[Completion]: ...

    async def agenerate(self, batch: list[Conversation], sampling: Sampling) -> list[Completion]: ...

    def count_tokens(self, text: str) -> int: ...

    @property
    def context_window(self) -> int: ...


@runtime_checkable
class LatentModel(Protocol):
    """White-box access: embeddings in, last hidden state out, a KV cache carried between calls.

    All batch state lives in a `SequenceState` (cache + attention mask + next positions per row), so several
    agents can append to one shared working memory and the final one can decode text from it. Hidden states are
    the last layer's, after the final norm; every tensor lives on `device`.

        state = model.new_state(B)
        h = model.prefill(state, ids)                  # [B, H]   left-padded token ids
        h = model.prefill_embeds(state, embeds)        # [B, H]   B sequences [L_i, H] of input embeddings
        h = model.step_embeds(state, e)                # [B, H]   e: [B, 1, H], one latent step
        texts = model.decode(state, ids, sampling)     # prefill ids, then generate; consumes the state
    """

    name: str
    hidden_size: int
    device: torch.device
    dtype: torch.dtype

    def chat_ids(self, conversation: Conversation, add_generation_prompt: bool = True) -> list[int]: ...

    def followup_ids(self, user_content: str) -> list[int]: ...

    def detokenize(self, ids: list[int]) -> str: ...

    def new_state(self, batch_size: int) -> SequenceState: ...

    def prefill(self, state: SequenceState, ids: list[list[int]]) -> torch.Tensor: ...

    def prefill_embeds(self, state: SequenceState, embeds: list[torch.Tensor]) -> torch.Tensor: ...

    def step_embeds(self, state: SequenceState, embeds: torch.Tensor) -> torch.Tensor: ...

    def decode(self, state: SequenceState, ids: list[list[int]], sampling: Sampling) -> list[Completion]: ...

    def embed(self, ids: torch.Tensor) -> torch.Tensor: ...

    def logits(self, hidden: torch.Tensor) -> torch.Tensor: ...

    def input_embedding_matrix(self) -> torch.Tensor: ...

    def output_embedding_matrix(self) -> torch.Tensor: ...


def missing_latent_methods(model: object) -> list[str]:
    """The `LatentModel` members `model` lacks ([] for a white-box model)."""
    members = [name for name in dir(LatentModel) if not name.startswith("_")]
    members += list(getattr(LatentModel, "__annotations__", {}))
    return sorted({name for name in members if not hasattr(model, name)})
