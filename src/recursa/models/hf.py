"""Local transformers backend: batched generation and white-box latent access on CPU.

One `HFModel` is both a `ChatModel` and a `LatentModel`. Batches are left-padded; every row carries its own
attention mask and positions, so a row's tokens and RoPE positions are the same whether it runs alone or in a
batch (batch invariance). Text generation is `new_state → prefill(prompt) → decode loop`, the same path the latent
methods use after their latent steps.
"""

from __future__ import annotations

import asyncio
import copy
import os
import time
import types
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache

from recursa.core.config import settings
from recursa.core.errors import ContextTooLongError, ModelNotFoundError
from recursa.core.trace import record_model_call
from recursa.models import attention
from recursa.models.base import Completion, Conversation, Sampling
from recursa.models.prefix_cache import PrefixCache

PAD_QUANTUM = 16            # multi-token segments are left-padded to a multiple of this (batch invariance)
ATTENTION_BYTES = 512 << 20   # bounds the eager attention matrix of one prefill chunk
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
    """Results of a row must not depend on its batch: eager attention (SDPA's CPU kernel rounds differently
    when the padding changes) and row-count-independent linears."""
    softcap = getattr(model.config, "attn_logit_softcapping", None)
    choice = "eager" if softcap else settings().attention              # softcapping models: always plain eager
    model.set_attn_implementation(attention.register() if choice == "grouped" else choice)
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            module.forward = types.MethodType(_batch_invariant_linear, module)


@dataclass
class SequenceState:
    """A batch's working memory: KV cache, attention mask over every cached position, next RoPE position per row."""

    cache: DynamicCache
    mask: torch.Tensor       # [B, T] long: 1 = real position, 0 = padding
    next_pos: torch.Tensor   # [B] long: position id the next real token of each row gets

    @property
    def batch_size(self) -> int:
        return self.mask.shape[0]

    @property
    def length(self) -> int:
        """Cached positions per row (padding included)."""
        return self.mask.shape[1]

    def nbytes(self) -> int:
        return sum(layer.keys.numel() * layer.keys.element_size() + layer.values.numel() * layer.values.element_size()
                   for layer in self.cache.layers if getattr(layer, "keys", None) is not None)

    def keep_positions(self, index: torch.Tensor) -> None:
        """Keep only the cached positions in `index` (1-D, ascending); keys keep their original RoPE phases."""
        for layer in self.cache.layers:
            if getattr(layer, "keys", None) is not None:
                layer.keys = layer.keys.index_select(2, index)
                layer.values = layer.values.index_select(2, index)
        self.mask = self.mask.index_select(1, index)

    def copy(self) -> SequenceState:
        return SequenceState(copy.deepcopy(self.cache), self.mask.clone(), self.next_pos.clone())

    def select_rows(self, rows: torch.Tensor) -> None:
        self.cache.batch_select_indices(rows)
        self.mask = self.mask.index_select(0, rows)
        self.next_pos = self.next_pos.index_select(0, rows)


class HFModel:
    """A transformers causal LM on CPU (bf16 by default)."""

    def __init__(self, model, tokenizer, name: str):
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.config = model.config
        self.hidden_size: int = model.config.hidden_size
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        eos = {tokenizer.eos_token_id}
        gen_eos = getattr(model.generation_config, "eos_token_id", None)
        eos.update(gen_eos if isinstance(gen_eos, list) else [gen_eos])
        for special in ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<end_of_turn>"):
            tid = tokenizer.convert_tokens_to_ids(special)
            if isinstance(tid, int) and tid != tokenizer.unk_token_id:
                eos.add(tid)
        self.eos_ids = torch.tensor(sorted(i for i in eos if i is not None))
        self.prefix_cache = PrefixCache(settings().prefix_cache_tokens)

    @classmethod
    def from_path(cls, path: Path | str, name: str | None = None, dtype: str = "bfloat16") -> HFModel:
        threads = settings().threads or os.cpu_count() or 1
        torch.set_num_threads(threads)
        transformers.utils.logging.disable_progress_bar()
        try:
            tokenizer = AutoTokenizer.from_pretrained(path)
            model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype))
        except OSError as exc:
            raise ModelNotFoundError(f"cannot load model '{path}': {str(exc).splitlines()[0]}") from exc
        model.eval()
        make_batch_invariant(model)
        return cls(model, tokenizer, name or str(path))

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
        return self.model.get_output_embeddings()(hidden)

    def new_state(self, batch_size: int) -> SequenceState:
        return SequenceState(DynamicCache(config=self.config), torch.zeros(batch_size, 0, dtype=torch.long),
                             torch.zeros(batch_size, dtype=torch.long))

    @torch.inference_mode()
    def _forward(self, state: SequenceState, seg_mask: torch.Tensor, input_ids: torch.Tensor | None = None,
                 inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
        """Append one segment [B, t] to `state`; return last-layer hidden states [B, t, H] (after the final norm)."""
        # Real tokens continue each row's own position count; pads reuse it (they are masked anyway).
        positions = state.next_pos[:, None] + (seg_mask.cumsum(1) - 1).clamp(min=0)
        mask = torch.cat([state.mask, seg_mask], dim=1)
        out = self.model.model(input_ids=input_ids, inputs_embeds=inputs_embeds, attention_mask=mask,
                               position_ids=positions, past_key_values=state.cache, use_cache=True)
        state.mask = mask
        state.next_pos = state.next_pos + seg_mask.sum(1)
        return out.last_hidden_state

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
        return padded, seg_mask

    def prefill(self, state: SequenceState, ids: list[list[int]]) -> torch.Tensor:
        """Append a left-padded batch of token ids to the state; return the last position's hidden state [B, H]."""
        if len(ids) != state.batch_size:
            raise ValueError(f"prefill got {len(ids)} rows for a state of batch size {state.batch_size}")
        padded, seg_mask = self._pad_left(ids)
        total = state.length + padded.shape[1]
        bytes_per_query = 4 * state.batch_size * self.config.num_attention_heads * total
        chunk = min(ATTENTION_BYTES // bytes_per_query, PREFILL_TOKENS // state.batch_size)
        # Elementwise ops on [rows * chunk, 4.9k] activations are memory-bound once they leave the caches: a batch of
        # 16 x 430 tokens in one forward took 2x the time of 16 single-row prefills; 512 tokens per forward is as fast.
        chunk = max(PAD_QUANTUM, chunk // PAD_QUANTUM * PAD_QUANTUM)
        hidden = None
        for start in range(0, padded.shape[1], chunk):
            end = start + chunk
            hidden = self._forward(state, seg_mask[:, start:end], input_ids=padded[:, start:end])
        return hidden[:, -1, :]

    def step_embeds(self, state: SequenceState, embeds: torch.Tensor) -> torch.Tensor:
        """Feed one input embedding per row [B, 1, H] (a latent step); return the new last hidden state [B, H]."""
        seg_mask = torch.ones(embeds.shape[0], embeds.shape[1], dtype=torch.long)
        return self._forward(state, seg_mask, inputs_embeds=embeds.to(self.model.dtype))[:, -1, :]

    # ---- decoding ---------------------------------------------------------------------------------------
    def _choose(self, logits: torch.Tensor, sampling: Sampling, generator: torch.Generator | None) -> torch.Tensor:
        if sampling.greedy:
            return logits.argmax(dim=-1)
        probs = torch.softmax(logits.float() / sampling.temperature, dim=-1)
        if sampling.top_p < 1.0:
            sorted_probs, order = probs.sort(dim=-1, descending=True)
            drop = sorted_probs.cumsum(-1) - sorted_probs > sampling.top_p
            sorted_probs[drop] = 0.0
            probs = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1)

    @torch.inference_mode()
    def decode(self, state: SequenceState, ids: list[list[int]], sampling: Sampling, *, cached_tokens: int = 0,
               remember: list[int] | None = None) -> list[Completion]:
        """Prefill `ids` on top of `state`, then generate text for every row. Consumes the state.

        `cached_tokens`: prompt tokens the state already holds (reported in `prompt_tokens`); `remember`: the whole
        prompt of a single row, whose finished state the prefix cache keeps."""
        batch = len(ids)
        longest = max(len(r) for r in ids) + state.length
        if longest + sampling.max_tokens > self.context_window:
            raise ContextTooLongError(
                f"prompt of {longest} tokens + max_tokens {sampling.max_tokens} exceeds the context window of "
                f"{self.context_window} tokens of {self.name}; shorten the prompt or lower max_tokens")
        generator = None
        if not sampling.greedy:
            generator = torch.Generator().manual_seed(sampling.seed if sampling.seed is not None else
                                                      int(time.time_ns() % 2**31))
        started = time.perf_counter()
        hidden = self.prefill(state, ids)
        generated: list[list[int]] = [[] for _ in range(batch)]
        finish: list[str | None] = [None] * batch
        texts: list[str | None] = [None] * batch
        active = torch.arange(batch)          # original row index of each row still in the state
        for step in range(sampling.max_tokens):
            next_ids = self._choose(self.logits(hidden), sampling, generator)
            keep = []
            for j, row in enumerate(active.tolist()):
                token = int(next_ids[j])
                if bool((self.eos_ids == token).any()):
                    finish[row] = "stop"
                    continue
                generated[row].append(token)
                if sampling.stop:
                    text = self.tokenizer.decode(generated[row], skip_special_tokens=True)
                    cut = min((text.find(s) for s in sampling.stop if s in text), default=-1)
                    if cut >= 0:
                        finish[row], texts[row] = "stop", text[:cut]
                        continue
                if step == sampling.max_tokens - 1:
                    finish[row] = "length"
                    continue
                keep.append(j)
            if not keep:
                break
            if len(keep) < len(active):  # drop finished rows: later steps cost only what is still running
                rows = torch.tensor(keep)
                state.select_rows(rows)
                active, next_ids = active[rows], next_ids[rows]
            hidden = self._forward(state, torch.ones(len(active), 1, dtype=torch.long),
                                   input_ids=next_ids[:, None])[:, -1, :]
        if remember is not None:
            self.prefix_cache.store(remember, state)
        completions = []
        for row in range(batch):
            text = texts[row] if texts[row] is not None else self.tokenizer.decode(generated[row],
                                                                                   skip_special_tokens=True)
            completions.append(Completion(text=text, finish_reason=finish[row] or "length",
                                          prompt_tokens=len(ids[row]) + cached_tokens,
                                          completion_tokens=len(generated[row]),
                                          token_ids=generated[row], cached_tokens=cached_tokens))
        record_model_call(self.name, time.perf_counter() - started,
                          sum(c.prompt_tokens for c in completions), sum(c.completion_tokens for c in completions),
                          batch_size=batch, cached_tokens=cached_tokens)
        return completions

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
