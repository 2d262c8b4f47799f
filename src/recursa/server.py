"""`recursa serve`: an OpenAI-compatible HTTP server over the local transformers backend.

Requests are not run one by one: a single model worker thread drains a queue and runs every waiting request with
the same sampling settings in one batched `HFModel.decode` (one forward pass per step for all of their rows; a
request with `n` > 1 adds n rows). While a batch decodes, new requests queue up and form the next batch
(static batching per round; rows do not join a batch that is already decoding).

All model and tokenizer work happens on that one thread, so the event loop only parses, validates and waits.
Errors follow the OpenAI shape `{"error": {"message", "type", "param", "code"}}` with a 4xx status.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import queue
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from recursa.core.errors import ConfigError
from recursa.models.base import Completion, Sampling

DEFAULT_MAX_TOKENS = 1024  # when a request sets neither max_tokens nor max_completion_tokens
MAX_STOP_STRINGS = 16


class ApiError(Exception):
    """A request the server refuses, rendered as an OpenAI error body."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind

    def response(self) -> JSONResponse:
        body = {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}
        return JSONResponse(body, status_code=self.status)


# ---- request / response schema ------------------------------------------------------------------------------
class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        if any(part.type != "text" for part in self.content):
            raise ApiError(400, "only text content parts are supported", "messages", "unsupported_content")
        return "".join(part.text or "" for part in self.content)


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # unknown OpenAI fields are accepted and ignored
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    n: int = Field(1, ge=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, ge=0.0, le=1.0)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    logprobs: bool | None = None
    tools: list[Any] | None = None


# ---- the batching worker -----------------------------------------------------------------------------------
@dataclass
class Job:
    messages: list[dict[str, str]]
    n: int
    sampling: Sampling
    max_tokens_given: bool
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)
    prompt_ids: list[int] = field(default_factory=list)
    prepared: bool = False  # tokenized and checked (jobs carried over to the next round are)


@dataclass
class BatchStats:
    batches: int = 0
    rows: int = 0
    requests: int = 0
    largest_batch: int = 0
    decoding_rows: int = 0  # rows of the batch decoding right now (0 = idle)


class BatchWorker:
    """Owns the model: one thread that turns queued jobs into batched `decode` calls."""

    def __init__(self, model, max_batch: int = 16):
        self.model = model
        self.max_batch = max_batch
        self.stats = BatchStats()
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._backlog: deque[Job] = deque()
        self._thread = threading.Thread(target=self._run, name="recursa-serve-worker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=60)

    def submit(self, job: Job) -> concurrent.futures.Future:
        self._queue.put(job)
        return job.future

    def _run(self) -> None:
        while True:
            jobs = list(self._backlog)
            self._backlog.clear()
            if not jobs:
                first = self._queue.get()
                if first is None:
                    return
                jobs.append(first)
            stopping = False
            while True:  # take everything that is already waiting
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stopping = True
                    break
                jobs.append(nxt)
            self._run_round(jobs)
            if stopping:
                for job in self._backlog:
                    job.future.set_exception(ApiError(503, "server is shutting down", kind="server_error"))
                return

    def _run_round(self, jobs: list[Job]) -> None:
        groups: dict[Any, list[Job]] = {}
        for job in jobs:
            if not job.prepared:
                if not job.future.set_running_or_notify_cancel():
                    continue
                try:
                    self._tokenize(job)
                except ApiError as exc:
                    job.future.set_exception(exc)
                    continue
                job.prepared = True
            # A seeded sampled request runs alone, so the same seed gives the same text.
            key = (job.sampling, id(job)) if job.sampling.seed is not None and not job.sampling.greedy else job.sampling
            groups.setdefault(key, []).append(job)
        for group in groups.values():
            batch, rows = [], 0
            for job in group:
                if rows + job.n > self.max_batch and batch:
                    self._backlog.append(job)  # runs in the next round
                    continue
                batch.append(job)
                rows += job.n
            self._decode(batch)

    def _tokenize(self, job: Job) -> None:
        job.prompt_ids = self.model.chat_ids(job.messages)
        window, prompt = self.model.context_window, len(job.prompt_ids)
        if not job.max_tokens_given:
            room = window - prompt
            if room < 1:
                raise ApiError(400, f"the prompt has {prompt} tokens, which fills the model's context window of "
                                    f"{window} tokens; shorten the messages", "messages", "context_length_exceeded")
            job.sampling = _replace_max_tokens(job.sampling, min(DEFAULT_MAX_TOKENS, room))
        elif prompt + job.sampling.max_tokens > window:
            raise ApiError(400, f"this model's maximum context length is {window} tokens; the messages have {prompt} "
                                f"tokens and max_tokens asks for {job.sampling.max_tokens} more; shorten the messages "
                                "or lower max_tokens", "messages", "context_length_exceeded")

    def _decode(self, jobs: list[Job]) -> None:
        rows = [job.prompt_ids for job in jobs for _ in range(job.n)]
        self.stats.decoding_rows = len(rows)
        try:
            completions = self.model.decode_prompts(rows, jobs[0].sampling)
        except Exception as exc:  # the server keeps serving; the requests of this batch get a 500
            for job in jobs:
                job.future.set_exception(ApiError(500, f"generation failed: {type(exc).__name__}: {exc}",
                                                  kind="server_error"))
            return
        finally:
            self.stats.decoding_rows = 0
        self.stats.batches += 1
        self.stats.rows += len(rows)
        self.stats.requests += len(jobs)
        self.stats.largest_batch = max(self.stats.largest_batch, len(rows))
        start = 0
        for job in jobs:
            job.future.set_result(completions[start:start + job.n])
            start += job.n


def _replace_max_tokens(sampling: Sampling, max_tokens: int) -> Sampling:
    return Sampling(max_tokens=max_tokens, temperature=sampling.temperature, top_p=sampling.top_p,
                    stop=sampling.stop, seed=sampling.seed)


# ---- the app ---------------------------------------------------------------------------------------------
def served_names(model) -> set[str]:
    from recursa.models.registry import ALIASES, canonical_name

    names = {model.name, canonical_name(model.name)}
    names.update(alias for alias, target in ALIASES.items() if target in names)
    return names


def add_error_handlers(app: FastAPI) -> None:
    """Every error leaves the server as an OpenAI-style error object."""

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        loc = [str(p) for p in first.get("loc", ()) if p != "body"]
        if first.get("type") == "json_invalid":
            return ApiError(400, f"the request body is not valid JSON: {first.get('ctx', {}).get('error', '')}",
                            code="invalid_json").response()
        param = ".".join(loc) or None
        return ApiError(400, f"invalid value for '{param}': {first.get('msg', 'invalid request')}",
                        param, "invalid_value").response()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return ApiError(exc.status_code, str(exc.detail), code=str(exc.status_code)).response()


def create_app(model, max_batch: int = 16) -> FastAPI:
    """An OpenAI-compatible app over `model` (an `HFModel`); the worker runs while the app is up."""
    worker = BatchWorker(model, max_batch)
    names = served_names(model)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        worker.start()
        try:
            yield
        finally:
            await asyncio.to_thread(worker.stop)

    app = FastAPI(title="recursa serve", lifespan=lifespan)
    app.state.worker = worker

    add_error_handlers(app)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/stats")
    async def stats() -> dict[str, int]:
        return vars(worker.stats).copy()

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": model.name, "object": "model", "created": 0, "owned_by": "recursa",
                                            "max_model_len": model.context_window}]}

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatRequest) -> dict[str, Any]:
        if body.model not in names:
            raise ApiError(404, f"the model '{body.model}' does not exist; this server serves: "
                                f"{', '.join(sorted(names))}", "model", "model_not_found")
        job = Job(messages=[{"role": "system" if m.role == "developer" else m.role, "content": m.text()}
                            for m in body.messages],
                  n=body.n, sampling=_sampling(body, max_batch), max_tokens_given=_max_tokens(body) is not None)
        completions: list[Completion] = await asyncio.wrap_future(worker.submit(job))
        completion_tokens = sum(c.completion_tokens for c in completions)
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion", "created": int(time.time()),
            "model": model.name, "system_fingerprint": None,
            "choices": [{"index": i, "message": {"role": "assistant", "content": c.text},
                         "finish_reason": c.finish_reason, "logprobs": None} for i, c in enumerate(completions)],
            "usage": {"prompt_tokens": len(job.prompt_ids), "completion_tokens": completion_tokens,
                      "total_tokens": len(job.prompt_ids) + completion_tokens,
                      "prompt_tokens_details": {"cached_tokens": completions[0].cached_tokens if completions else 0}},
        }

    return app


def _max_tokens(body: ChatRequest) -> int | None:
    return body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens


def _sampling(body: ChatRequest, max_batch: int) -> Sampling:
    if body.stream:
        raise ApiError(400, "streaming is not supported by recursa serve; send stream=false", "stream",
                       "unsupported_parameter")
    if body.tools or body.logprobs:
        param = "tools" if body.tools else "logprobs"
        raise ApiError(400, f"'{param}' is not supported by recursa serve", param, "unsupported_parameter")
    if body.n > max_batch:
        raise ApiError(400, f"n={body.n} exceeds this server's batch limit of {max_batch} (--max-batch)", "n",
                       "invalid_value")
    stop = (body.stop,) if isinstance(body.stop, str) else tuple(body.stop or ())
    if len(stop) > MAX_STOP_STRINGS or any(not s for s in stop):
        raise ApiError(400, f"stop takes 1 to {MAX_STOP_STRINGS} non-empty strings", "stop", "invalid_value")
    temperature = 0.0 if body.top_p == 0.0 else body.temperature  # top_p 0 keeps only the top token
    try:
        return Sampling(max_tokens=_max_tokens(body) or DEFAULT_MAX_TOKENS, temperature=temperature,
                        top_p=body.top_p or 1.0, stop=stop, seed=body.seed)
    except ConfigError as exc:
        raise ApiError(400, str(exc), code="invalid_value") from exc


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


def serve(model_name: str | None = None, host: str = "127.0.0.1", port: int = 8000, max_batch: int = 16) -> None:
    """Load the model and serve it until interrupted."""
    import uvicorn

    from recursa.models import registry

    model = registry.load(model_name)
    uvicorn.run(create_app(model, max_batch=max_batch), host=host, port=port, log_level="info")
