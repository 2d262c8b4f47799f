"""Int8 weight-only path (models/int8.py) on SmolLM2-135M: quantisation, its disk cache, the kernel that reads int8,
the batch guarantee, and the latent methods' access (embeddings, hidden states, inputs_embeds)."""

import pytest
import torch
from conftest import diverges_only_at_a_tie

from recursa.core import config
from recursa.core.errors import ConfigError
from recursa.models import int8, registry
from recursa.models.base import Sampling
from recursa.models.fused import Int8Matmul

PROMPTS = ["What is 12*7? Answer with a number.", "Name a colour.", "Write one sentence about the sea.", "hi"]


def conv(text):
    return [{"role": "user", "content": text}]


@pytest.fixture(scope="module")
def folder():
    return registry.resolve_path("smollm2")      # the prepared model, in the shared models folder


@pytest.fixture(scope="module")
def home(folder, tmp_path_factory):
    """A private RECURSA_HOME for this module: the int8 cache written here is this test's own."""
    with pytest.MonkeyPatch.context() as patch:
        path = tmp_path_factory.mktemp("home")
        patch.setenv("RECURSA_HOME", str(path))
        config.settings.cache_clear()
        yield path
    config.settings.cache_clear()


@pytest.fixture(scope="module")
def quantized(folder, home):
    return _load_int8(folder)


def _load_int8(folder):
    from recursa.models.hf import HFModel

    return HFModel.from_path(folder, name="smollm2-135m", device="cpu", weights="int8")


def test_quantize_is_per_channel_with_power_of_two_scales():
    torch.manual_seed(0)
    weight = (torch.randn(64, 48) * torch.logspace(-3, 0, 64)[:, None]).bfloat16()
    q, scales = int8.quantize(weight)
    assert q.dtype == torch.int8 and q.abs().max() <= 127 and scales.shape == (64,)
    assert torch.equal(torch.log2(scales), torch.log2(scales).round())          # powers of two
    assert ((q.float() * scales[:, None] - weight.float()).abs() <= scales[:, None] / 2 + 1e-12).all()
    assert (q.abs().amax(1) > 63).all()                                          # each row uses over half the range
    dequantized = q.float() * scales[:, None]
    assert torch.equal(dequantized.bfloat16().float(), dequantized)               # exact in bf16


def test_quantized_weights_are_cached_once_and_reused(quantized, folder, home, monkeypatch):
    path = int8.cache_path(home, "smollm2-135m")
    assert quantized.weights == "int8" and path.is_file()
    written = path.stat().st_mtime_ns

    def no_quantizing(_):
        raise AssertionError("the cached int8 weights should have been used")

    monkeypatch.setattr(int8, "quantize", no_quantizing)
    again = _load_int8(folder)
    assert again.weights == "int8" and path.stat().st_mtime_ns == written
    for name, matmul in quantized.fused.matmuls().items():
        assert torch.equal(matmul.qweight, again.fused.matmuls()[name].qweight), name


@torch.inference_mode()
def test_the_kernel_reads_int8_and_matches_the_dequantized_weights(quantized):
    matmuls = quantized.fused.matmuls()
    assert all(isinstance(m, Int8Matmul) and m.qweight.dtype == torch.int8 for m in matmuls.values())
    gate_up = matmuls["layers.5.gate_up"]
    assert torch.equal(gate_up.dense.weight, gate_up.qweight.to(torch.bfloat16) * gate_up.scales[:, None])
    # the model's own modules read the dequantised weights too (one function, whichever kernel runs)
    module_up = quantized.module.model.layers[5].mlp.up_proj.weight
    assert torch.equal(module_up, gate_up.dense.weight[-module_up.shape[0]:])
    hidden = quantized.embed(torch.tensor(quantized.chat_ids(conv(PROMPTS[0]))[:4]))
    one_row = torch.cat([gate_up(hidden[i:i + 1]) for i in range(4)])       # int8 kernel
    dense = gate_up.dense(hidden)                                          # bf16 kernel, same products
    assert torch.allclose(one_row.float(), dense.float(), rtol=2e-2, atol=2e-2)


def test_int8_batch_equals_each_row_alone_up_to_a_tie(quantized):
    sampling = Sampling(max_tokens=16)
    batch = quantized.generate([conv(p) for p in PROMPTS], sampling)
    for prompt, together in zip(PROMPTS, batch, strict=True):
        alone = quantized.generate([conv(prompt)], sampling)[0]
        assert diverges_only_at_a_tie(quantized, quantized.chat_ids(conv(prompt)), alone.token_ids,
                                      together.token_ids), prompt


@torch.inference_mode()
def test_latent_access_works_on_int8(quantized):
    rows = [quantized.chat_ids(conv("Say hello.")), quantized.chat_ids(conv("Name three rivers of Europe."))]
    by_ids, by_embeds = quantized.new_state(2), quantized.new_state(2)
    hidden = quantized.prefill(by_ids, rows)
    embedded = quantized.prefill_embeds(by_embeds, [quantized.embed(torch.tensor(row)) for row in rows])
    assert torch.equal(quantized.logits(hidden), quantized.logits(embedded))
    step = quantized.step_embeds(by_embeds, hidden[:, None, :] / hidden.norm(dim=-1, keepdim=True)[:, None])
    assert step.shape == (2, quantized.hidden_size) and torch.isfinite(step).all()
    head = quantized.fused.head
    assert torch.equal(quantized.output_embedding_matrix(), head.dense.weight)   # what the logits really use


def test_recursa_weights_selects_int8_and_an_unfused_model_refuses_it(monkeypatch, smollm2, tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    from recursa.models.hf import HFModel

    def tiny():
        torch.manual_seed(0)
        cfg = LlamaConfig(vocab_size=smollm2.config.vocab_size, hidden_size=64, intermediate_size=128,
                          num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
        return LlamaForCausalLM(cfg).eval().to(torch.bfloat16)

    monkeypatch.setenv("RECURSA_WEIGHTS", "int8")
    monkeypatch.setenv("RECURSA_HOME", str(tmp_path))
    config.settings.cache_clear()
    model = HFModel(tiny(), smollm2.tokenizer, "tiny")
    assert model.weights == "int8" and int8.cache_path(tmp_path, "tiny").is_file()
    assert model.generate([conv("hi")], Sampling(max_tokens=3, ignore_eos=True))[0].completion_tokens == 3
    eager = tiny()
    eager.set_attn_implementation("eager")
    with pytest.raises(ConfigError, match="int8 weights need the fused decoder"):
        HFModel(eager, smollm2.tokenizer, "tiny-eager")
