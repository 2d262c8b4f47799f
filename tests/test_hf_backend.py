"""The local transformers backend on the real embedded model."""

import torch
from conftest import diverges_only_at_a_tie

from recursa.models.base import Sampling

PROMPTS = [
    "What is 12*7? Answer with a number.",
    "Write one sentence about the sea.",
    "List three prime numbers greater than 100.",
    "hi",
]


def conv(text):
    return [{"role": "user", "content": text}]


def test_batch_of_four_matches_each_alone(qwen):
    # "the sea" meets an exact bf16 tie (' open' vs ' unf', both 12.25) at its 7th token: rounding picks one.
    sampling = Sampling(max_tokens=24)
    batch = qwen.generate([conv(p) for p in PROMPTS], sampling)
    for prompt, together in zip(PROMPTS, batch, strict=True):
        alone = qwen.generate([conv(prompt)], sampling)[0]
        assert diverges_only_at_a_tie(qwen, qwen.chat_ids(conv(prompt)), alone.token_ids, together.token_ids), prompt
        assert together.completion_tokens == len(together.token_ids) > 0
    # the check is sharp: another prompt's reply differs at a step the model is sure about
    first = qwen.generate([conv(PROMPTS[0])], sampling)[0].token_ids
    assert not diverges_only_at_a_tie(qwen, qwen.chat_ids(conv(PROMPTS[0])), first, batch[2].token_ids)


def test_prefill_split_into_several_forwards_keeps_greedy_tokens(qwen):
    # A batch of 8 prompts of ~150 tokens is prefilled 64 positions at a time (PREFILL_TOKENS); alone, in one forward.
    from recursa.models.hf import PREFILL_TOKENS
    story = "The lighthouse keeper counted ships every night and wrote their names in a blue notebook. " * 8
    prompts = [f"{story}\nQuestion {i}: how many words are in the name of ship number {i}? Answer briefly."
               for i in range(8)]
    assert qwen.count_tokens(prompts[0]) * 8 > 2 * PREFILL_TOKENS
    sampling = Sampling(max_tokens=8)
    batch = qwen.generate([conv(p) for p in prompts], sampling)
    for prompt, together in zip(prompts[:3], batch, strict=False):
        assert together.token_ids == qwen.generate([conv(prompt)], sampling)[0].token_ids


def test_decode_after_prefilled_cache_equals_full_prompt(qwen):
    ids = qwen.chat_ids(conv("Explain what a hash map is in two sentences."))
    sampling = Sampling(max_tokens=20)
    full = qwen.decode(qwen.new_state(1), [ids], sampling)[0]
    state = qwen.new_state(1)
    split = len(ids) - 5
    qwen.prefill(state, [ids[:split]])
    assert state.mask.sum().item() == split
    continued = qwen.decode(state, [ids[split:]], sampling)[0]
    # the second segment is left-padded too, so the last keys sit at another alignment: equal up to a bf16 tie
    assert diverges_only_at_a_tie(qwen, ids, full.token_ids, continued.token_ids)


@torch.inference_mode()
def test_prefill_embeds_of_different_lengths_equals_prefill_of_ids(qwen):
    rows = [qwen.chat_ids(conv("Say hello.")), qwen.chat_ids(conv("Name three rivers of Europe, please."))]
    assert len(rows[0]) != len(rows[1])
    by_ids_state, by_embeds_state = qwen.new_state(2), qwen.new_state(2)
    by_ids = qwen.prefill(by_ids_state, rows)
    by_embeds = qwen.prefill_embeds(by_embeds_state, [qwen.embed(torch.tensor(row)) for row in rows])
    assert torch.equal(qwen.logits(by_ids), qwen.logits(by_embeds))
    assert torch.equal(by_ids_state.mask, by_embeds_state.mask)                 # same left padding and positions
    assert torch.equal(by_ids_state.next_pos, by_embeds_state.next_pos)
    # both states continue identically
    follow = [[qwen.chat_ids(conv("x"))[-1]]] * 2
    assert torch.equal(qwen.prefill(by_ids_state, follow), qwen.prefill(by_embeds_state, follow))


def test_stop_strings_and_max_tokens(qwen):
    out = qwen.generate([conv("Count from 1 to 20, separated by commas.")], Sampling(max_tokens=40, stop=("5",)))[0]
    assert out.finish_reason == "stop" and "5" not in out.text and "4" in out.text
    short = qwen.generate([conv("Count from 1 to 20, separated by commas.")], Sampling(max_tokens=3))[0]
    assert short.finish_reason == "length" and short.completion_tokens == 3


def test_sampling_is_seeded(qwen):
    sampling = Sampling(max_tokens=12, temperature=1.0, top_p=0.9, seed=7)
    first = qwen.generate([conv("Invent a name for a cat.")], sampling)[0]
    again = qwen.generate([conv("Invent a name for a cat.")], sampling)[0]
    assert first.token_ids == again.token_ids


def test_state_reports_cache_size(qwen):
    state = qwen.new_state(2)
    qwen.prefill(state, [[1, 2, 3], [4, 5]])
    # segments are left-padded to a multiple of 16 positions; each row's positions count only its real tokens
    assert state.length == 16 and state.next_pos.tolist() == [3, 2]
    assert state.mask.sum(1).tolist() == [3, 2]
    assert state.nbytes() > 0


def test_attention_rounds_like_transformers_eager_and_the_reference_equals_it():
    from types import SimpleNamespace

    from transformers.models.qwen2.modeling_qwen2 import eager_attention_forward

    from recursa.models.attention import grouped_attention, grouped_eager

    torch.manual_seed(0)
    module = SimpleNamespace(num_key_value_groups=7, training=False)
    for q_len, total in ((1, 37), (16, 80), (5, 5)):
        query = torch.randn(3, 14, q_len, 64).bfloat16()
        key, value = torch.randn(3, 2, total, 64).bfloat16(), torch.randn(3, 2, total, 64).bfloat16()
        mask = torch.zeros(3, 1, q_len, total, dtype=torch.bfloat16)
        mask[1, :, :, :7] = torch.finfo(torch.bfloat16).min      # a padded row
        ours, _ = grouped_attention(module, query, key, value, mask, scaling=0.125)
        theirs, _ = eager_attention_forward(module, query, key, value, mask, scaling=0.125)
        assert ours.shape == theirs.shape == (3, q_len, 14, 64)
        # the fused kernel: float32 inside, one bf16 rounding apart at most
        assert torch.allclose(ours.float(), theirs.float(), rtol=2 ** -7, atol=2 ** -7), (q_len, total)
        # the reference: the same products and sums, only without copies
        assert torch.equal(grouped_eager(query, key, value, mask, 0.125), theirs), (q_len, total)
        if q_len == 1:   # a decode step runs the reference itself
            assert torch.equal(ours, theirs)


def test_prefix_cache_reuses_a_growing_conversation(qwen):
    system = "You read records and answer briefly. " + "Every record has an id, a user and a label. " * 30
    first = [{"role": "system", "content": system}, {"role": "user", "content": "Name one label a record might have."}]
    sampling = Sampling(max_tokens=12)
    qwen.prefix_cache.clear()
    reply = qwen.generate([first], sampling)[0]
    second = first + [{"role": "assistant", "content": reply.text}, {"role": "user", "content": "And another?"}]
    hits = qwen.prefix_cache.hits
    reused = qwen.generate([second], sampling)[0]
    assert qwen.prefix_cache.hits == hits + 1
    full_ids = qwen.chat_ids(second)
    assert reused.prompt_tokens == len(full_ids)
    fresh = qwen.decode(qwen.new_state(1), [full_ids], sampling)[0]
    assert reused.token_ids == fresh.token_ids
    again = qwen.generate([second], sampling)[0]           # the same prompt: all but its last token come from cache
    assert again.token_ids == fresh.token_ids


def test_prefix_cache_crops_a_padded_state_to_the_shared_tokens(qwen):
    from recursa.models.prefix_cache import PrefixCache

    ids = qwen.chat_ids(conv("alpha beta gamma delta " * 20))
    assert len(ids) % 16 != 0                              # the stored state starts with padding
    state = qwen.new_state(1)
    qwen.prefill(state, [ids])
    cache = PrefixCache(min_tokens=8)
    cache.store(ids, state)
    other = ids[:50] + [ids[50] + 1] + ids[51:]
    taken, shared = cache.take(other)
    assert shared == 50
    assert int(taken.mask.sum()) == 50 and int(taken.next_pos[0]) == 50
    assert taken.length == 50 + (state.length - len(ids))
    assert cache.take(ids[:5])[0] is None                 # too little shared
    assert state.length == -(-len(ids) // 16) * 16         # the stored original is untouched


def test_attention_setting_selects_the_kernel(monkeypatch):
    from recursa.core import config
    from recursa.models import registry
    from recursa.models.hf import HFModel

    monkeypatch.setenv("RECURSA_ATTENTION", "sdpa")
    config.settings.cache_clear()
    fused = HFModel.from_path(registry.resolve_path("qwen2.5-coder-0.5b"))
    assert fused.attention == "sdpa"
    answer = fused.generate([conv("What is 12*7? Answer with a number only.")], Sampling(max_tokens=8))[0]
    assert "84" in answer.text
