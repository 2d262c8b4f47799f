"""`recursa serve` throughput with N concurrent streaming clients (part of bench/speed.py).

Each client sends its requests one after another (streaming, varied lengths so rows finish at different steps);
the figure is all completion tokens over the wall time. With continuous batching a request joins the running batch
at the next step; with static batching (`continuous=False`, the server before issue 15) it waits for the batch to
finish, so clients queue behind each other's longest request.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

PROMPTS = ["Write a long story about a lighthouse keeper and a storm.", "Explain how a hash map works.",
           "List the planets of the solar system with one fact each.", "Describe the water cycle for a child."]


def serve_throughput(model, streams: int, requests_per_stream: int = 3, new_tokens: int = 48,
                     continuous: bool = True) -> dict[str, Any]:
    import openai

    from recursa.server import ServerThread, create_app

    app = create_app(model, max_batch=max(8, streams), continuous=continuous)
    first_token: list[float] = []

    async def client(index: int, url: str) -> int:
        aclient = openai.AsyncOpenAI(base_url=url, api_key="unused", max_retries=0, timeout=3600)
        tokens = 0
        for request in range(requests_per_stream):
            length = new_tokens // 2 + (index * 7 + request * 13) % new_tokens      # 0.5–1.5 × new_tokens
            sent = time.perf_counter()
            stream = await aclient.chat.completions.create(
                model=model.name, messages=[{"role": "user", "content": PROMPTS[(index + request) % len(PROMPTS)]}],
                max_tokens=length, temperature=0, stream=True, stream_options={"include_usage": True},
                extra_body={"ignore_eos": True})
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content and sent:
                    first_token.append(time.perf_counter() - sent)
                    sent = 0.0
                if chunk.usage:
                    tokens += chunk.usage.completion_tokens
        await aclient.close()
        return tokens

    async def all_clients(url: str) -> list[int]:
        return await asyncio.gather(*(client(i, url) for i in range(streams)))

    with ServerThread(app) as server:
        started = time.perf_counter()
        tokens = sum(asyncio.run(all_clients(server.url)))
        seconds = time.perf_counter() - started
        stats = app.state.engine.stats
    return {"streams": streams, "continuous": continuous, "requests": streams * requests_per_stream,
            "tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds,
            "mean_first_token_s": sum(first_token) / max(1, len(first_token)), "steps": stats.steps,
            "largest_batch": stats.largest_batch, "joined_running": stats.joined_running}
