"""What the `recursa serve` test modules share: a server on a model, an openai client on it, its /stats."""

from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import openai

from recursa.server import ServerThread, create_app


def user(text):
    return [{"role": "user", "content": text}]


@contextmanager
def running_server(model, **options) -> Iterator[ServerThread]:
    with ServerThread(create_app(model, **options)) as running:
        yield running


def openai_client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=120)


def stats(server):
    return httpx.get(server.url.removesuffix("/v1") + "/stats").json()


def record(server, request_id):
    return next(r for r in stats(server)["recent"] if r["id"] == request_id)
