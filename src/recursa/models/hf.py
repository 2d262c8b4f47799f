"""Local transformers backend: batched generation and white-box latent access on CPU.

One `HFModel` is both a `ChatModel` and a `LatentModel`. Batches are left-padded; every row carries its own
attention mask and positions, so a row's tokens and RoPE positions are the same whether it runs alone or in a
batch (batch invariance). Text generation is `new_state → prefill(prompt) → decode loop`, the same path the latent
methods use after their latent steps.
"""

from __future__ import annotations

import asyncio
import os
import time
import types
from collections.abc import Generator
from pathlib import Path

import torch
import torch.nn.functional as F
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

from recursa.core.config import settings
from recursa.core.errors import ConfigError, ContextTooLongError, ModelNotFoundError
from recursa.core.trace import record_model_call
from recursa.models import attention, fused
from recursa.models.base import Completion, Conversation, Sampling
from recursa.models.devices import resolve_device, resolve_dtype
from recursa.models.prefix_cache import PrefixCache
from recursa.models.sampling import RowProgress, choose_tokens, sampling_generator
from recursa.models.state import SequenceState

PAD_QUANTUM = 16            # multi-token segments are left-padded to a multiple of this (batch invariance)
EAGER_SCORE_BYTES = 512 << 20   # bounds the score matrix transformers' eager attention builds per prefill chunk
PREFILL_TOKENS = 512          # tokens per prefill forward (all rows): bigger batches spill the CPU caches


def _batch_invariant_linear(module: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """nn.Linear whose per-row result does not depend on the number of rows.

    oneDNN uses a different bf16 kernel for a single row (M = 1) than for M >= 2, and the two round differently;
    every M >= 2 agrees. A lone row is therefore run as two: the weights are read once either way.
    """
    if x.numel() != x.shape[-1]:
        return F.linear(x, module.weight, module.bias)
    flat = x.reshape(1, -1)
    out = F.linear(torch.cat([flat, flat]), module.weight, module.bias)[:1]
    return out.reshape(*x.shape[:-1], out.shape[-1])


def make_batch_invariant(model: torch.nn.Module) -> None:
    """Results of a row must not depend on its batch beyond near-ties: per-row masks (attention.py) and
    row-count-independent linears."""
    softcap = getattr(model.config, "attn_logit_softcapping", None)
    choice = "eager" if softcap else settings().attention              # softcapping models: always plain eager
    model.set_attn_implementation(attention.register() if choice == "grouped" else choice)
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            module.forward = types.MethodType(_batch_invariant_linear, module)


class HFModel:
    """A transformers causal LM on any torch device (bf16 where the device supports it).

    Llama-family models (Llama, Qwen2, Mistral, SmolLM) run through `fused` (models/fused.py), a lean forward over
    the same weights; others, and `RECURSA_ATTENTION=eager`, through the transformers modules. `weights`: auto
    (the model's dtype) or int8 (models/int8.py; `weights_cache` is where the quantised weights are kept)."""

    def __init__(self, model, tokenizer, name: str, weights: str | None = None, weights_cache: Path | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.config = model.config
        self.hidden_size: int = model.config.hidden_size
        self.device: torch.device = next(model.parameters()).device
        self.dtype: torch.dtype = next(model.parameters()).dtype
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        eos = {tokenizer.eos_token_id}
        gen_eos = getattr(model.generation_config, "eos_token_id", None)
        eos.update(gen_eos if isinstance(gen_eos, list) else [gen_eos])
        for special in ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<end_of_turn>"):
            tid = tokenizer.convert_tokens_to_ids(special)
            if isinstance(tid, int) and tid != tokenizer.unk_token_id:
                eos.add(tid)
        self.eos_set = frozenset(i for i in eos if i is not None)
        self.eos_ids = torch.tensor(sorted(self.eos_set), device=self.device)
        self.prefix_cache = PrefixCache(settings().prefix_cache_tokens)
        reason = fused.unsupported_reason(model, self.attention)
        self.fused: fused.FusedDecoder | None = None if reason else fused.FusedDecoder(model, self.attention)
        self.fused_unsupported = reason      # why `fused` is None (the transformers modules run instead)
        self.weights = "auto"
        chosen = weights or settings().weights
        if chosen not in ("auto", "int8"):
            raise ConfigError(f"unknown weights {chosen!r}; use auto or int8")
        if chosen == "int8":
            self.use_int8(weights_cache)

    def use_int8(self, cache: Path | None = None) -> None:
        """Switch to int8 weights (one way: the model's weights become their dequantised values). `cache`: the file
        that keeps the quantised weights (default: under RECURSA_HOME/int8/)."""
        from recursa.models import int8

        if self.fused is None:
            raise ConfigError(f"int8 weights need the fused decoder, which {self.name} cannot use: "
                              f"{self.fused_unsupported}; use --weights auto")
        if self.weights == "int8":
            return
        path = cache if cache is not None else int8.cache_path(settings().home, self.name)
        int8.apply_int8(self.fused, int8.load_or_quantize(self.fused, path))
        self.weights = "int8"
        self.prefix_cache.clear()

    @classmethod
    def from_path(cls, path: Path | str, name: str | None = None, dtype: str = "auto",
                  device: str | None = None, weights: str | None = None) -> HFModel:
        """Load a transformers folder or hub id. `device`: auto | cpu | cuda | cuda:N | mps (default:
        `RECURSA_DEVICE`, else auto); `dtype`: auto (bf16 where the device supports it) | bfloat16 | float16 |
        float32; `weights`: auto | int8 (default: `RECURSA_WEIGHTS`)."""
        threads = settings().threads or os.cpu_count() or 1
        torch.set_num_threads(threads)
        transformers.utils.logging.disable_progress_bar()
        target = resolve_device(device or settings().device)
        try:
            tokenizer = AutoTokenizer.from_pretrained(path)
            model = AutoModelForCausalLM.from_pretrained(path, dtype=resolve_dtype(dtype, target))
        except OSError as exc:
            raise ModelNotFoundError(f"cannot load model '{path}': {str(exc).splitlines()[0]}") from exc
        model.to(target)
        model.eval()
        make_batch_invariant(model)
        return cls(model, tokenizer, name or str(path), weights=weights)

    @property
    def attention(self) -> str:
        """The attention kernel in use (`RECURSA_ATTENTION`: grouped, eager or sdpa)."""
        implementation = self.model.config._attn_implementation
        return "grouped" if implementation == attention.NAME else implementation

    @property
    def module(self) -> torch.nn.Module:
        """The underlying transformers model (for comparisons with its own `generate`)."""
        return self.model

    # ---- text helpers -------------------------------------------------------------------------------
    @property
    def context_window(self) -> int:
        return int(getattr(self.config, "max_position_embeddings", 4096))

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    def chat_text(self, conversation: Conversation, add_generation_prompt: bool = True) -> str:
        if self.tokenizer.chat_template:
            return self.tokenizer.apply_chat_template(conversation, tokenize=False,
                                                      add_generation_prompt=add_generation_prompt)
        # base models: a plain transcript
        text = "".join(f"{m['role'].capitalize()}: {m['content']}\n" for m in conversation)
        return text + ("Assistant:" if add_generation_prompt else "")

    def chat_ids(self, conversation: Conversation, add_generation_prompt: bool = True) -> list[int]:
        return self.tokenizer.encode(self.chat_text(conversation, add_generation_prompt), add_special_tokens=False)

    def detokenize(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def followup_ids(self, user_content: str) -> list[int]:
        """Tokens that close the assistant turn in progress, add a user turn and open the next assistant turn.

        Lets several agents share one transcript (LatentMAS's conversation layout): the template is rendered around
        a sentinel assistant message and only what follows the sentinel is kept, so any chat template works.
        """
        sentinel = "\x00recursa-turn\x00"
        conversation = [{"role": "user", "content": "."}, {"role": "assistant", "content": sentinel},
                        {"role": "user", "content": user_content}]
        text = self.chat_text(conversation)
        return self.tokenizer.encode(text[text.index(sentinel) + len(sentinel):], add_special_tokens=False)

    # ---- white-box access ---------------------------------------------------------------------------
    def input_embedding_matrix(self) -> torch.Tensor:
        """[V, H] rows as the model feeds them (Gemma-style embedding scales included)."""
        emb = self.model.get_input_embeddings()
        scale = getattr(emb, "embed_scale", None)
        weight = emb.weight
        if torch.is_tensor(scale):
            return weight * scale.to(weight.dtype)
        return weight if scale in (None, 1, 1.0) else weight * scale   # no [V, H] copy when nothing scales

    def output_embedding_matrix(self) -> torch.Tensor:
        return self.model.get_output_embeddings().weight

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model.get_input_embeddings()(ids)

    @torch.inference_mode()
    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.fused is not None:
            return self.fused.logits(hidden)
        return self.model.get_output_embeddings()(hidden)

    def new_state(self, batch_size: int) -> SequenceState:
        return SequenceState.empty(self.config, batch_size, self.device)

    @torch.inference_mode()
    def _forward(self, state: SequenceState, seg_mask: torch.Tensor, input_ids: torch.Tensor | None = None,
                 inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
        """Append one segment [B, t] to `state`; return last-layer hidden states [B, t, H] (after the final norm)."""
        # Real tokens continue each row's own position count; pads reuse it (they are masked anyway).
        positions = state.next_pos[:, None] + (seg_mask.cumsum(1) - 1).clamp(min=0)
        mask = torch.cat([state.mask, seg_mask], dim=1)
        if self.fused is not None:
            hidden = self.fused.forward(state.cache, mask, positions, input_ids, inputs_embeds)
        else:
            hidden = self.model.model(input_ids=input_ids, inputs_embeds=inputs_embeds, attention_mask=mask,
                                      position_ids=positions, past_key_values=state.cache,
                                      use_cache=True).last_hidden_state
        state.mask = mask
        state.next_pos = state.next_pos + seg_mask.sum(1)
        return hidden

    def _pad_left(self, ids: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        # Widths are rounded up to PAD_QUANTUM so that a row's padding is the same modulo the quantum alone or in
        # any batch: the bf16 kernels then see its keys at the same alignment and round identically.
        width = max(len(row) for row in ids)
        if width > 1:
            width = -(-width // PAD_QUANTUM) * PAD_QUANTUM
        padded = torch.full((len(ids), width), self.pad_id, dtype=torch.long)
        seg_mask = torch.zeros((len(ids), width), dtype=torch.long)
        for i, row in enumerate(ids):
            if row:
                padded[i, width - len(row):] = torch.tensor(row)
                seg_mask[i, width - len(row):] = 1
        return padded.to(self.device), seg_mask.to(self.device)

    def _prefill_chunk(self, state: SequenceState, width: int) -> int:
        """Positions per prefill forward: PREFILL_TOKENS over all rows, and under eager attention (the only kernel
        that materialises its scores) the score matrix's size."""
        chunk = PREFILL_TOKENS // state.batch_size
        if self.attention == "eager":
            bytes_per_query = 4 * state.batch_size * self.config.num_attention_heads * (state.length + width)
            chunk = min(chunk, EAGER_SCORE_BYTES // bytes_per_query)
        return max(PAD_QUANTUM, chunk // PAD_QUANTUM * PAD_QUANTUM)

    def prefill(self, state: SequenceState, ids: list[list[int]]) -> torch.Tensor:
        """Append a left-padded batch of token ids to the state; return the last position's hidden state [B, H]."""
        steps = self.prefill_stepwise(state, ids)
        while True:
            try:
                next(steps)
            except StopIteration as done:
                return done.value

    def prefill_stepwise(self, state: SequenceState, ids: list[list[int]]) -> Generator[int, None, torch.Tensor]:
        """`prefill` one forward at a time: yields the positions prefilled so far after each forward and returns the
        last hidden state [B, H]. A server interleaves these forwards with decode steps of other rows."""
        if len(ids) != state.batch_size:
            raise ValueError(f"prefill got {len(ids)} rows for a state of batch size {state.batch_size}")
        padded, seg_mask = self._pad_left(ids)
        chunk = self._prefill_chunk(state, padded.shape[1])
        hidden = None
        for start in range(0, padded.shape[1], chunk):
            end = start + chunk
            hidden = self._forward(state, seg_mask[:, start:end], input_ids=padded[:, start:end])
            if end < padded.shape[1]:
                yield end
        return hidden[:, -1, :]

    def step_ids(self, state: SequenceState, ids: torch.Tensor) -> torch.Tensor:
        """Feed one token per row (ids [B]); return the new last hidden state [B, H]. One decode step."""
        ones = torch.ones(ids.shape[0], 1, dtype=torch.long, device=self.device)
        return self._forward(state, ones, input_ids=ids.to(self.device)[:, None])[:, -1, :]

    def prefill_embeds(self, state: SequenceState, embeds: list[torch.Tensor]) -> torch.Tensor:
        """Append B sequences of input embeddings ([L_i, H] each, lengths may differ), left-padded like `prefill`;
        return each row's last hidden state [B, H]. An empty row ([0, H]) adds only padding."""
        if len(embeds) != state.batch_size:
            raise ValueError(f"prefill_embeds got {len(embeds)} rows for a state of batch size {state.batch_size}")
        _, seg_mask = self._pad_left([[0] * int(row.shape[0]) for row in embeds])
        width = seg_mask.shape[1]
        padded = torch.zeros(len(embeds), width, self.hidden_size, dtype=self.dtype, device=self.device)
        for i, row in enumerate(embeds):
            if row.shape[0]:
                padded[i, width - row.shape[0]:] = row.to(self.device, self.dtype)
        chunk = self._prefill_chunk(state, width)
        hidden = None
        for start in range(0, width, chunk):
            end = start + chunk
            hidden = self._forward(state, seg_mask[:, start:end], inputs_embeds=padded[:, start:end])
        return hidden[:, -1, :]

    def step_embeds(self, state: SequenceState, embeds: torch.Tensor) -> torch.Tensor:
        """Feed one input embedding per row [B, 1, H] (a latent step); return the new last hidden state [B, H]."""
        seg_mask = torch.ones(embeds.shape[0], embeds.shape[1], dtype=torch.long, device=self.device)
        return self._forward(state, seg_mask, inputs_embeds=embeds.to(self.device, self.dtype))[:, -1, :]

    # ---- decoding ---------------------------------------------------------------------------------------
    @torch.inference_mode()
    def decode(self, state: SequenceState, ids: list[list[int]], sampling: Sampling, *, cached_tokens: int = 0,
               remember: list[int] | None = None) -> list[Completion]:
        """Prefill `ids` on top of `state`, then generate text for every row. Consumes the state.

        `cached_tokens`: prompt tokens the state already holds (reported in `prompt_tokens`); `remember`: the whole
        prompt of a single row, whose finished state the prefix cache keeps."""
        longest = max(len(r) for r in ids) + state.length
        if longest + sampling.max_tokens > self.context_window:
            raise ContextTooLongError(
                f"prompt of {longest} tokens + max_tokens {sampling.max_tokens} exceeds the context window of "
                f"{self.context_window} tokens of {self.name}; shorten the prompt or lower max_tokens")
        started = time.perf_counter()
        hidden = self.prefill(state, ids)
        rows = self._generate(state, hidden, sampling)
        if remember is not None:
            self.prefix_cache.store(remember, state)
        completions = [Completion(text=row.text(self), finish_reason=row.finish or "length",
                                  prompt_tokens=len(prompt) + cached_tokens, completion_tokens=len(row.tokens),
                                  token_ids=row.tokens, cached_tokens=cached_tokens)
                       for row, prompt in zip(rows, ids, strict=True)]
        record_model_call(self.name, time.perf_counter() - started,
                          sum(c.prompt_tokens for c in completions), sum(c.completion_tokens for c in completions),
                          batch_size=len(ids), cached_tokens=cached_tokens)
        return completions

    def _generate(self, state: SequenceState, hidden: torch.Tensor, sampling: Sampling) -> list[RowProgress]:
        """The decode loop from the prefilled `hidden` [B, H]; finished rows leave the state as they stop."""
        generator = sampling_generator(sampling, self.device)
        rows = [RowProgress() for _ in range(state.batch_size)]
        active = list(range(state.batch_size))          # original row index of each row still in the state
        for step in range(sampling.max_tokens):
            logits = self.logits(hidden)
            if sampling.constraint is not None:   # structured decoding: each row masked by its own tokens
                logits = sampling.constraint.mask([rows[row].tokens for row in active], logits)
            next_ids = choose_tokens(logits, sampling, generator)
            keep = [j for j, (row, token) in enumerate(zip(active, next_ids.tolist(), strict=True))
                    if rows[row].take(token, self, sampling, last=step == sampling.max_tokens - 1)]
            if not keep:
                break
            if len(keep) < len(active):  # drop finished rows: later steps cost only what is still running
                index = torch.tensor(keep, device=self.device)
                state.select_rows(index)
                active, next_ids = [active[j] for j in keep], next_ids[index]
            hidden = self.step_ids(state, next_ids)
        return rows

    def generate(self, batch: list[Conversation], sampling: Sampling) -> list[Completion]:
        if not batch:
            return []
        return self.decode_prompts([self.chat_ids(conv) for conv in batch], sampling)

    def decode_prompts(self, ids: list[list[int]], sampling: Sampling) -> list[Completion]:
        """Generate for prompts given as token ids; a single row reuses the prefix cache."""
        if len(ids) != 1:
            return self.decode(self.new_state(len(ids)), ids, sampling)
        state, cached = self.prefix_cache.take(ids[0])
        state = state if state is not None else self.new_state(1)
        return self.decode(state, [ids[0][cached:]], sampling, cached_tokens=cached, remember=ids[0])

    async def agenerate(self, batch: list[Conversation], sampling: Sampling) -> list[Completion]:
        return await asyncio.to_thread(self.generate, batch, sampling)
