"""Decode throughput of any OpenAI-compatible server at 1 and N concurrent streams (vLLM vs `recursa serve`).

    python bench/engine_throughput.py --base-url http://127.0.0.1:8011/v1 --model qwen2.5-coder-0.5b --label vllm

Each stream sends its requests one after another (chat, greedy, `ignore_eos`, exactly --tokens new tokens each);
the figure is all completion tokens (from the server's usage) over the wall time. Results are appended to
--out (JSON lines), so one file holds the engines side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

import openai

PROMPTS = ["Write a long story about a lighthouse keeper and a storm.", "Explain how a hash map works.",
           "List the planets of the solar system with one fact each.", "Describe the water cycle for a child."]


async def run_streams(base_url: str, model: str, streams: int, requests: int, tokens: int) -> dict:
    client = openai.AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=3600)

    async def stream(index: int) -> int:
        done = 0
        for request in range(requests):
            reply = await client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": PROMPTS[(index + request) % len(PROMPTS)]}],
                max_tokens=tokens, temperature=0, extra_body={"ignore_eos": True})
            done += reply.usage.completion_tokens
        return done

    await client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Hi"}], max_tokens=4)
    # ^ warm-up: a server's first request can take seconds longer than the next ones
    started = time.perf_counter()
    total = sum(await asyncio.gather(*(stream(i) for i in range(streams))))
    seconds = time.perf_counter() - started
    await client.close()
    return {"streams": streams, "requests": streams * requests, "tokens": total, "seconds": round(seconds, 2),
            "tokens_per_s": round(total / seconds, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--label", required=True, help="what serves it, e.g. vllm-eager or recursa-serve")
    parser.add_argument("--streams", default="1,8")
    parser.add_argument("--requests", type=int, default=2, help="requests per stream")
    parser.add_argument("--tokens", type=int, default=64, help="new tokens per request")
    parser.add_argument("--out", type=Path, default=Path("bench/results/engine/throughput.jsonl"))
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for streams in (int(s) for s in args.streams.split(",")):
        row = {"label": args.label, "model": args.model,
               **asyncio.run(run_streams(args.base_url, args.model, streams, args.requests, args.tokens)),
               "at": time.strftime("%Y-%m-%d %H:%M")}
        print(json.dumps(row), flush=True)
        with args.out.open("a", encoding="utf-8") as out:
            out.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
