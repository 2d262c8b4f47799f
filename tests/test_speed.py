"""The speed benchmark's building blocks (not its figures: those are reported by bench/speed.py)."""

import importlib.util
from pathlib import Path

from recursa.models.base import Sampling

_SPEC = importlib.util.spec_from_file_location("bench_speed", Path(__file__).parents[1] / "bench" / "speed.py")
speed = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(speed)


def test_weight_bytes_count_the_untied_head_and_skip_the_embedding_table(qwen):
    weights = speed.weight_bytes(qwen)
    embedding = qwen.input_embedding_matrix()
    assert not weights["tied_embeddings"]
    assert 1.2e9 < weights["all_parameters"] < 1.3e9  # 630 M bf16 parameters
    assert weights["read_per_step"] == weights["all_parameters"] - embedding.numel() * 2
    assert weights["lm_head"] == 151936 * 896 * 2


def test_decode_runs_every_row_to_full_length(qwen):
    row = speed.decode_throughput(qwen, batch=2, new_tokens=3)
    assert row["tokens"] == 6 and row["tokens_per_s"] > 0


def test_ignore_eos_decodes_past_the_end_of_turn(qwen):
    ids = qwen.chat_ids([{"role": "user", "content": "Reply with the single word: yes"}])
    short = qwen.decode(qwen.new_state(1), [ids], Sampling(max_tokens=24))[0]
    assert short.finish_reason == "stop" and short.completion_tokens < 24
    full = qwen.decode(qwen.new_state(1), [ids], Sampling(max_tokens=24, ignore_eos=True))[0]
    assert full.completion_tokens == 24 and full.finish_reason == "length"


def test_summary_ratios_and_report():
    import speed_report

    bandwidth = speed.memory_bandwidth(size_mb=16, repeats=1)
    assert bandwidth["copy_gb_s"] > 0 and bandwidth["read_gb_s"] > 0
    decode = {"1": {"tokens_per_s": 5.0, "ms_per_step": 200.0}, "8": {"tokens_per_s": 25.0, "ms_per_step": 320.0}}
    results = {"model": "m", "threads": 1, "torch": "x", "repeats": 1, "new_tokens": 8, "backend_sha256": "abc",
               "load_average_at_start": 0.5, "load_average_at_end": 0.6,
               "bandwidth": {"copy_gb_s": 10.0, "read_gb_s": 11.0},
               "weight_bytes": {"bf16": {"read_per_step": 1e9}, "int8": {"read_per_step": 5e8}},
               "paths": {"bf16-modules": {"decode": decode, "prefill": {"tokens_per_s": 100.0}},
                         "int8": {"decode": {"1": {"tokens_per_s": 10.0, "ms_per_step": 100.0}},
                                  "prefill": {"tokens_per_s": 120.0}}},
               "plain_generate": {"tokens_per_s": 2.5},
               "llama_cpp": {"Q8_0": {"gguf_bytes": 5e8, "runner": "node-llama-cpp", "batch1": {"tokens_per_s": 16.0},
                                      "parallel": {"sequences": 8, "tokens_per_s": 20.0},
                                      "prefill": {"tokens_per_s": 200.0}},
                             "mix": {"error": "failed to load"}},
               "latent_mas": {"bf16-modules": {"problems": 8, "seconds_per_problem": 12.34, "correct": 3,
                                               "same_text_as_first_path": 8}},
               "serve": {"static": {"8": {"tokens_per_s": 20.0, "mean_first_token_s": 3.0, "largest_batch": 8,
                                          "joined_running": 0}},
                         "continuous": {"8": {"tokens_per_s": 30.0, "mean_first_token_s": 1.0, "largest_batch": 8,
                                              "joined_running": 12}}}}
    summary = speed_report.summarize(results)
    assert summary["limit_tok_s"] == {"bf16": 10.0, "int8": 20.0}
    assert summary["paths"]["bf16-modules"]["batch1_fraction_of_limit"] == 0.5
    assert summary["paths"]["bf16-modules"]["batch8_over_batch1"] == 5.0
    assert summary["paths"]["int8"]["batch1_fraction_of_limit"] == 0.5
    assert summary["paths"]["int8"]["batch1_over_bf16-modules"] == 2.0
    assert summary["paths"]["int8"]["prefill_over_bf16-modules"] == 1.2
    assert summary["serve_8_streams_continuous_over_static"] == 1.5
    llama = summary["llama_cpp"]["Q8_0"]
    assert llama["limit_tok_s"] == 20.0 and llama["batch1_fraction_of_limit"] == 0.8
    assert llama["bf16-modules_parallel_over_llama"] == 1.25 and llama["int8_batch1_over_llama"] == 10.0 / 16.0
    assert "mix" not in summary["llama_cpp"]
    results["summary"] = summary
    text = speed_report.markdown(results, command="python bench/speed.py")
    assert "| int8 | 10.0 (100 ms/step) | - | 50% |" in text and "continuous batching" in text
    assert "| llama.cpp Q8_0 | 16.0 | 20.0 | 80% | 1.25× | 200 | - | 3.20× / 2.00× |" in text
    assert "| llama.cpp mix | failed to load |" in text
    assert "| bf16-modules | 12.3 | 3/8 | 8/8 |" in text


def test_gguf_requantised_to_q8_0_keeps_metadata_and_values(tmp_path):
    import numpy as np
    from gguf import GGMLQuantizationType, GGUFReader
    from gguf.quants import dequantize
    from gguf_requant import requantize

    from recursa.core.config import settings
    from recursa.models.embedded import gguf_path
    from recursa.models.registry import EMBEDDED

    source = gguf_path(EMBEDDED["smollm2-135m"], settings().models_dir)
    target = tmp_path / "q8.gguf"
    requantize(source, target, "Q8_0")
    before, after = GGUFReader(source), GGUFReader(target)
    assert {f.name for f in after.fields.values()} == {f.name for f in before.fields.values()}
    assert after.fields["general.file_type"].contents() == 7   # MOSTLY_Q8_0
    assert after.fields["tokenizer.ggml.tokens"].contents() == before.fields["tokenizer.ggml.tokens"].contents()
    floats = {GGMLQuantizationType.F32, GGMLQuantizationType.F16}
    pairs = list(zip(before.tensors, after.tensors, strict=True))
    assert all(b.name == a.name and list(b.shape) == list(a.shape) for b, a in pairs)
    assert all(a.tensor_type == (b.tensor_type if b.tensor_type in floats else GGMLQuantizationType.Q8_0)
               for b, a in pairs)
    old, new = pairs[5][0], pairs[5][1]
    want, got = dequantize(old.data, old.tensor_type), dequantize(new.data, new.tensor_type)
    assert np.abs(got - want).max() <= np.abs(want).max() / 127


def test_attention_candidates_time_both_kernels_over_every_layer():
    from types import SimpleNamespace

    import speed_kernels

    config = SimpleNamespace(num_attention_heads=4, num_key_value_heads=2, hidden_size=64, num_hidden_layers=3)
    measured = speed_kernels.attention_candidates(config, new_tokens=16, cached_tokens=32, repeats=1)
    assert len(measured) == 2 and all(m["ms_all_layers"] > 0 and m["cached_tokens"] == 32 for m in measured.values())


def test_prefill_after_a_cache_times_only_the_new_tokens(smollm2):
    row = speed.prefill_after_cache_throughput(smollm2, new_tokens=16, cached_tokens=32, repeats=1)
    assert row["prompt_tokens"] == 16 and row["cached_tokens"] == 32 and row["tokens_per_s"] > 0


def test_matmul_candidates_report_every_routine():
    import speed_kernels

    measured = speed_kernels.matmul_candidates([(64, 32), (32, 64)], repeats=1)
    assert len(measured) == 5
    for name, rows in measured.items():
        assert "error" in rows or (rows["rows=1"]["gb_s"] > 0 and rows["rows=2"]["ms"] > 0), name


def test_serve_throughput_counts_streamed_tokens(smollm2):
    import speed_serve

    measured = speed_serve.serve_throughput(smollm2, streams=2, requests_per_stream=1, new_tokens=4)
    lengths = [4 // 2 + (i * 7) % 4 for i in range(2)]
    assert measured["tokens"] == sum(lengths) and measured["tokens_per_s"] > 0 and measured["largest_batch"] >= 1
