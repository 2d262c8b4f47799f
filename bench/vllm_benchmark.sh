#!/bin/bash
# Issue 16's benchmark in one slot: text-mas and latent-mas on 50 GSM8K problems through the local backend and
# through vLLM, and recursa serve vs vLLM at 1 and 8 streams. One core of compute each: RECURSA_THREADS=1 for the
# local backend, and vLLM's own default reservation (VLLM_CPU_NUM_OF_RESERVED_CPU=1: the model on one core).
#     bench-slot bash bench/vllm_benchmark.sh [OUT]       (results: bench/results/engine/README.md)
set -ex
OUT=${1:-runs/i16}
R=${RECURSA:-.venv/bin/recursa}
P=${PYTHON:-.venv/bin/python}
M=qwen2.5-coder-0.5b
B="--task gsm8k --limit 50 --batch-size 8"
$R bench $B --methods text-mas --out "$OUT/text-local"
$R bench $B --methods latent-mas --out "$OUT/latent-local"
$R serve --port 8012 > "$OUT/serve.log" 2>&1 & SERVE=$!
until curl -sf http://127.0.0.1:8012/v1/models >/dev/null; do sleep 2; done
$P bench/engine_throughput.py --base-url http://127.0.0.1:8012/v1 --model $M --label recursa-serve-1thread \
  --out "$OUT/throughput.jsonl"
kill $SERVE; wait $SERVE || true
VLLM_CPU_NUM_OF_RESERVED_CPU=1 $R engine start vllm --port 8011
$P bench/engine_throughput.py --base-url http://127.0.0.1:8011/v1 --model $M --label vllm-compiled-1core \
  --out "$OUT/throughput.jsonl"
$R bench $B --methods text-mas --backend openai --model $M --base-url http://127.0.0.1:8011/v1 --out "$OUT/text-vllm"
$R bench $B --methods "latent-mas[decoder=vllm]" --out "$OUT/latent-vllm"
$R engine stop
$P bench/vllm_decode_ties.py "$OUT/latent-local" "$OUT/latent-vllm"
