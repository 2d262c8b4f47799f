"""The HTTP side of `recursa serve`: OpenAI chat completions (plain JSON or server-sent events) over the engine.

The event loop only parses, validates and relays: every model and tokenizer call runs on the engine's thread. A
client that goes away cancels its request: a stream notices when it can no longer send, a plain request watches its
connection while it waits; either way the engine drops the request's rows at its next step.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

from recursa.serve.engine import ContinuousBatcher
from recursa.serve.jobs import Channel, Delta, Done, Failed, Finished, Job
from recursa.serve.schema import ApiError, ChatRequest, add_error_handlers, request_sampling


def served_names(model) -> set[str]:
    from recursa.models.registry import ALIASES, canonical_name

    names = {model.name, canonical_name(model.name)}
    names.update(alias for alias, target in ALIASES.items() if target in names)
    return names


def create_app(model, max_batch: int = 16, continuous: bool = True) -> FastAPI:
    """An OpenAI-compatible app over `model` (an `HFModel`); the engine runs while the app is up. `continuous`
    False gives static batching (a request waits for the running batch to finish; for comparisons)."""
    engine = ContinuousBatcher(model, max_batch, continuous=continuous)
    model.prefix_cache.capacity = max(model.prefix_cache.capacity, max_batch)   # one entry per conversation
    names = served_names(model)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine.start()
        try:
            yield
        finally:
            await asyncio.to_thread(engine.stop)

    app = FastAPI(title="recursa serve", lifespan=lifespan)
    app.state.engine = engine
    add_error_handlers(app)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/stats")
    async def stats() -> dict[str, Any]:
        return engine.stats.as_dict()

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": model.name, "object": "model", "created": 0, "owned_by": "recursa",
                                            "max_model_len": model.context_window}]}

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatRequest, request: Request):
        if body.model not in names:
            raise ApiError(404, f"the model '{body.model}' does not exist; this server serves: "
                                f"{', '.join(sorted(names))}", "model", "model_not_found")
        job = Job(id=f"chatcmpl-{uuid.uuid4().hex[:24]}", messages=body.conversation(), n=body.n,
                  sampling=request_sampling(body, max_batch), max_tokens_given=body.requested_max_tokens() is not None,
                  channel=Channel(), stream=body.stream, response_format=body.response_format)
        engine.submit(job)
        head = ChunkHead(job.id, model.name)
        try:
            first = await _until_disconnect(request, job, job.channel.get())
        except BaseException:
            job.cancel()
            raise
        if isinstance(first, Failed):
            raise first.error
        if body.stream:
            return JobStream(job, _sse(job, head, body.include_usage()))
        try:
            return await _until_disconnect(request, job, _collect(job, head))
        finally:
            job.cancel()   # a no-op once the engine is done with it

    return app


class JobStream(StreamingResponse):
    """Server-sent events of one job; the job is cancelled when the response ends early for any reason (the
    client disconnected while waiting or while receiving, or the server shut down)."""

    def __init__(self, job: Job, content: AsyncIterator[str]) -> None:
        super().__init__(content, media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self.job = job

    async def __call__(self, scope, receive, send) -> None:
        watch = asyncio.ensure_future(_disconnected(receive))
        watch.add_done_callback(lambda task: task.cancelled() or self.job.cancel())
        try:
            await super().__call__(scope, receive, send)
        finally:
            watch.cancel()
            self.job.cancel()   # a no-op once the engine is done with it


class ChunkHead:
    """The fields every response and chunk of one request share."""

    def __init__(self, request_id: str, model: str) -> None:
        self.fields = {"id": request_id, "created": int(time.time()), "model": model, "system_fingerprint": None}

    def chunk(self, choices: list[dict[str, Any]], usage: dict[str, Any] | None = None,
              with_usage: bool = False) -> str:
        body = {**self.fields, "object": "chat.completion.chunk", "choices": choices}
        if with_usage:
            body["usage"] = usage
        return f"data: {json.dumps(body)}\n\n"


def _usage(done: Done) -> dict[str, Any]:
    return {"prompt_tokens": done.prompt_tokens, "completion_tokens": done.completion_tokens,
            "total_tokens": done.prompt_tokens + done.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": done.cached_tokens}}


async def _collect(job: Job, head: ChunkHead) -> dict[str, Any]:
    """The whole reply as one chat.completion object."""
    finished: dict[int, Finished] = {}
    while True:
        event = await job.channel.get()
        if isinstance(event, Failed):
            raise event.error
        if isinstance(event, Finished):
            finished[event.index] = event
        elif isinstance(event, Done):
            choices = [{"index": i, "message": {"role": "assistant", "content": finished[i].text},
                        "finish_reason": finished[i].reason, "logprobs": None} for i in sorted(finished)]
            return {**head.fields, "object": "chat.completion", "choices": choices, "usage": _usage(event)}


async def _sse(job: Job, head: ChunkHead, include_usage: bool) -> AsyncIterator[str]:
    """chat.completion.chunk events: the role, content deltas, each choice's finish reason, usage, [DONE].

    The response (`JobStream`) cancels the request if it ends before the generator does."""
    for index in range(job.n):
        yield head.chunk([_choice(index, {"role": "assistant", "content": ""})], with_usage=include_usage)
    while True:
        event = await job.channel.get()
        if isinstance(event, Delta):
            yield head.chunk([_choice(event.index, {"content": event.text})], with_usage=include_usage)
        elif isinstance(event, Finished):
            yield head.chunk([_choice(event.index, {}, event.reason)], with_usage=include_usage)
        elif isinstance(event, Failed):
            yield f"data: {json.dumps(event.error.body())}\n\n"
            break
        elif isinstance(event, Done):
            if include_usage:
                yield head.chunk([], _usage(event), with_usage=True)
            break
    yield "data: [DONE]\n\n"


def _choice(index: int, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
    return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}


async def _until_disconnect(request: Request, job: Job, awaitable):
    """Await `awaitable` unless the client disconnects first; then cancel the job and give up."""
    work = asyncio.ensure_future(awaitable)
    watch = asyncio.ensure_future(_disconnected(request.receive))
    try:
        await asyncio.wait({work, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
    if not work.done():
        job.cancel()
        work.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await work
        raise ApiError(499, "the client closed the connection", code="client_closed_request")
    return work.result()


async def _disconnected(receive) -> None:
    """Returns when the client has gone away (the body is already read, so the next message is the disconnect)."""
    while (await receive())["type"] != "http.disconnect":
        pass


class ServerThread:
    """Run an app with uvicorn in a daemon thread (tests, notebooks): `with ServerThread(app) as server: server.url`.

    Port 0 picks a free port; `url` is the OpenAI base URL (`http://host:port/v1`)."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0, startup_timeout: float = 30.0):
        import uvicorn

        self._server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
        self._thread = threading.Thread(target=self._server.run, name="recursa-serve-http", daemon=True)
        self.host, self.port, self._startup_timeout = host, port, startup_timeout

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def __enter__(self) -> ServerThread:
        self._thread.start()
        deadline = time.monotonic() + self._startup_timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the HTTP server did not start on {self.host}:{self.port}")
            time.sleep(0.02)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)


def serve(model_name: str | None = None, host: str = "127.0.0.1", port: int = 8000, max_batch: int = 16,
          weights: str | None = None) -> None:
    """Load the model (`weights`: auto | int8, default RECURSA_WEIGHTS) and serve it until interrupted."""
    import uvicorn

    from recursa.models import registry

    # Loaded on a thread that then exits, so the main thread never starts an OpenMP team: with one alive, the
    # engine thread's workers sleep between ops instead of spinning (small ops 3-4x slower; likely libgomp's
    # throttling once it counts more threads than CPUs; bench/results/attention.md).
    with concurrent.futures.ThreadPoolExecutor(1) as loader:
        model = loader.submit(registry.load, model_name, weights=weights).result()
    uvicorn.run(create_app(model, max_batch=max_batch), host=host, port=port, log_level="info")
