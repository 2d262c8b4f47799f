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


def test_summary_ratios():
    bandwidth = speed.memory_bandwidth(size_mb=16, repeats=1)
    assert bandwidth["copy_gb_s"] > 0 and bandwidth["read_gb_s"] > 0
    results = {"bandwidth": {"copy_gb_s": 10.0}, "weight_bytes": {"all_parameters": 1e9, "read_per_step": 5e8},
               "decode": {"1": {"tokens_per_s": 5.0}, "8": {"tokens_per_s": 25.0}},
               "plain_generate": {"tokens_per_s": 2.5}, "llama_cpp": None}
    summary = speed.summarize(results)
    assert summary["ceiling_tok_s_all_params"] == 10.0 and summary["ceiling_tok_s_bytes_read"] == 20.0
    assert summary["batch1_fraction_of_ceiling_all_params"] == 0.5
    assert summary["batch8_over_batch1"] == 5.0 and summary["over_plain_generate"] == 2.0
