"""The fused decode path (models/fused.py) on real weights: same weights as the transformers modules, the same
tokens up to a bf16 tie, and a decode matmul that gives every row the same bits at any batch size."""

import pytest
import torch
from conftest import diverges_only_at_a_tie

from recursa.models.base import Sampling
from recursa.models.fused import DenseMatmul

PROMPTS = ["What is 12*7? Answer with a number.", "Write one sentence about the sea.",
           "List three prime numbers greater than 100."]


def conv(text):
    return [{"role": "user", "content": text}]


@pytest.fixture
def modules_only():
    """Run a model through the transformers modules for the length of a test (its fused decoder set aside)."""
    held = []

    def switch(model):
        held.append((model, model.fused))
        model.fused = None
        return model

    yield switch
    for model, fused in held:
        model.fused = fused


def test_llama_family_models_run_fused_on_the_modules_own_memory(qwen, smollm2):
    for model in (qwen, smollm2):
        assert model.fused is not None and model.fused_unsupported is None
        layer, fused = model.module.model.layers[0], model.fused.layers[0]
        attn, mlp = layer.self_attn, layer.mlp
        # the modules' q/k/v and gate/up weights are views into the fused matrices: one copy of the weights
        assert attn.q_proj.weight.data_ptr() == fused.qkv.weight.data_ptr()
        assert attn.v_proj.weight.data_ptr() == fused.qkv.weight[-attn.v_proj.out_features:].data_ptr()
        assert mlp.up_proj.weight.data_ptr() == fused.gate_up.weight[mlp.gate_proj.out_features:].data_ptr()
        assert (fused.qkv.bias is not None) == (attn.q_proj.bias is not None)


@pytest.mark.parametrize("name", ["qwen", "smollm2"])
def test_fused_tokens_equal_the_modules_tokens_up_to_a_tie(name, request, modules_only):
    model = request.getfixturevalue(name)
    sampling = Sampling(max_tokens=16)
    fused = model.generate([conv(p) for p in PROMPTS], sampling)
    modules = modules_only(model).generate([conv(p) for p in PROMPTS], sampling)
    for prompt, ours, theirs in zip(PROMPTS, fused, modules, strict=True):
        assert diverges_only_at_a_tie(model, model.chat_ids(conv(prompt)), theirs.token_ids, ours.token_ids), prompt


@torch.inference_mode()
def test_decode_matmul_gives_each_row_the_same_bits_at_any_batch_size(qwen):
    """The property the batch guarantee rests on, for the kernel a decode step uses (transformers' linear loses it
    from 48 rows on; torch's single-row kernel rounds differently, hence one row runs as two)."""
    ids = torch.tensor(qwen.chat_ids(conv(" ".join(PROMPTS))))[:16]
    hidden = qwen.embed(ids)                                                   # 16 real rows [16, H]
    for matmul in (qwen.fused.layers[3].qkv, qwen.fused.layers[3].gate_up, qwen.fused.head):
        alone = torch.cat([matmul(hidden[i:i + 1]) for i in range(16)])
        for rows in (2, 3, 8, 16):
            assert torch.equal(matmul(hidden[:rows]), alone[:rows]), rows
    down = qwen.fused.layers[3].down
    wide = torch.nn.functional.silu(qwen.fused.layers[3].gate_up(hidden)).split(down.weight.shape[1], -1)[0]
    assert torch.equal(down(wide[:5]), torch.cat([down(wide[i:i + 1]) for i in range(5)]))


def test_dense_matmul_adds_the_bias_once_and_keeps_shapes():
    torch.manual_seed(0)
    weight, bias = torch.randn(6, 4).bfloat16(), torch.randn(6).bfloat16()
    matmul = DenseMatmul(weight, bias)
    for shape in ((4,), (1, 4), (3, 4), (2, 1, 4), (2, 5, 4)):
        x = torch.randn(*shape).bfloat16()
        out = matmul(x)
        assert out.shape == (*shape[:-1], 6)
        reference = (x.float() @ weight.float().T + bias.float())
        assert torch.allclose(out.float(), reference, atol=0.1, rtol=0.02), shape


def test_attention_setting_eager_runs_the_modules_and_sdpa_stays_fused(monkeypatch, smollm2):
    from recursa.core import config
    from recursa.models import registry

    monkeypatch.setenv("RECURSA_ATTENTION", "eager")
    config.settings.cache_clear()
    eager = registry.load("smollm2", device="cpu")
    assert eager.fused is None and "eager" in eager.fused_unsupported

    monkeypatch.setenv("RECURSA_ATTENTION", "sdpa")
    config.settings.cache_clear()
    sdpa = registry.load("smollm2", device="cpu")
    assert sdpa.fused is not None and sdpa.fused.attention_kind == "sdpa"
    ids = sdpa.chat_ids(conv(PROMPTS[0]))
    ours = sdpa.decode(sdpa.new_state(1), [ids], Sampling(max_tokens=8))[0]
    grouped = smollm2.decode(smollm2.new_state(1), [ids], Sampling(max_tokens=8))[0]
    assert ours.text and diverges_only_at_a_tie(smollm2, ids, grouped.token_ids, ours.token_ids)
