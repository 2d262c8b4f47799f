"""`ChatModel` over any OpenAI-compatible HTTP server (vLLM, SGLang, llama.cpp server, Ollama, OpenAI, `recursa serve`).

Every conversation of a batch is one `/v1/chat/completions` request; requests run concurrently, at most
`max_concurrency` per server at a time. Several base URLs (replicas of one model) share the load client-side: each
request goes to the least busy replica that is up, and a failed replica's requests move to another
(`models/replicas.py`). Transient failures (connection errors, timeouts, 408/409/429, 5xx) are retried with
exponential backoff and jitter (honouring `Retry-After`); other HTTP errors fail at once with a `BackendError`.

All HTTP work runs on one event loop in a private daemon thread, so the client, its connection pool and the
concurrency semaphore are shared by every caller: the synchronous `generate` (CLI, RLM REPL worker threads) and
`agenerate` from any other event loop. The caller's trace context travels with each request.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import math
import os
import random
import threading
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

import openai

from recursa.core.errors import BackendError, BackendUnreachable, ContextTooLongError, RecursaError
from recursa.core.trace import record_model_call
from recursa.models.base import Completion, Conversation, Sampling
from recursa.models.replicas import ReplicaPool, split_base_urls

if TYPE_CHECKING:
    import torch

T = TypeVar("T")

RETRYABLE_STATUS = {408, 409, 429}  # plus every 5xx
DEFAULT_CONTEXT_WINDOW = 8192       # used when the server does not say (see `context_window`)
MAX_BACKOFF_SECONDS = 30.0


class OpenAIChatModel:
    """A chat model served over the OpenAI chat-completions API, by one server or several replicas.

    `base_url`: one URL, a comma-separated list or a list of URLs (replicas serving the same model)."""

    def __init__(self, model: str, base_url: str | list[str] | None = None, api_key: str | None = None,
                 max_concurrency: int = 8, timeout: float = 120.0, max_retries: int = 4,
                 backoff_seconds: float = 0.5, context_window: int | None = None):
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        self.name = model
        self.base_urls = split_base_urls(base_url or os.environ.get("OPENAI_BASE_URL"))
        self.base_url = self.base_urls[0]
        # Local servers need no key, but the client insists on one.
        self._api_key = api_key or os.environ.get("OPENAI_API_KEY") or "not-needed"
        self.max_concurrency = max_concurrency
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff_seconds = backoff_seconds
        self._context_window = context_window
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pool: ReplicaPool | None = None
        self._semaphore: asyncio.Semaphore | None = None
        self._json_schema_ok = True         # until the server rejects a JSON-schema response_format

    # ---- the private event loop -------------------------------------------------------------------------
    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._loop.is_closed():
                loop = asyncio.new_event_loop()
                ready = threading.Event()

                def serve() -> None:
                    asyncio.set_event_loop(loop)
                    ready.set()
                    loop.run_forever()

                threading.Thread(target=serve, name=f"openai-compat-{self.name}", daemon=True).start()
                ready.wait()
                self._loop = loop
            return self._loop

    def _submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedule `coro` on the private loop with the caller's context vars (trace, parent span)."""
        loop = self._ensure_loop()
        context = contextvars.copy_context()
        return asyncio.run_coroutine_threadsafe(_with_context(coro, context), loop)

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._submit(coro).result()

    def close(self) -> None:
        """Close the HTTP client and stop the private loop (the model can be used again afterwards)."""
        with self._lock:
            loop, self._loop = self._loop, None
        if loop is None or loop.is_closed():
            return
        pool, self._pool, self._semaphore = self._pool, None, None
        for replica in pool.replicas if pool is not None else []:
            asyncio.run_coroutine_threadsafe(replica.client.close(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)

    def __enter__(self) -> OpenAIChatModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _pool_and_semaphore(self) -> tuple[ReplicaPool, asyncio.Semaphore]:
        # Created lazily on the private loop, so the clients and the semaphore belong to it.
        if self._pool is None or self._semaphore is None:
            self._pool = ReplicaPool.build(self.base_urls, lambda url: openai.AsyncOpenAI(
                base_url=url, api_key=self._api_key, timeout=self.timeout, max_retries=0))  # retries are ours
            self._semaphore = asyncio.Semaphore(self.max_concurrency * len(self.base_urls))
        return self._pool, self._semaphore

    def replica_stats(self) -> list[dict[str, Any]]:
        """Requests answered and failures seen per replica (base URL) so far."""
        return self._pool.stats() if self._pool is not None else []

    # ---- ChatModel ----------------------------------------------------------------------------------------
    def generate(self, batch: list[Conversation], sampling: Sampling) -> list[Completion]:
        """Blocking; safe from any thread, with or without a running event loop in it."""
        if not batch:
            return []
        return self._run(self._generate_all(batch, sampling))

    async def agenerate(self, batch: list[Conversation], sampling: Sampling) -> list[Completion]:
        if not batch:
            return []
        return await asyncio.wrap_future(self._submit(self._generate_all(batch, sampling)))

    def count_tokens(self, text: str) -> int:
        """An estimate (about 4 bytes of UTF-8 per token for BPE tokenizers on English and code): the server's
        tokenizer is not available here. Use it for budgeting, not for exact accounting (usage is exact)."""
        return math.ceil(len(text.encode("utf-8")) / 4) if text else 0

    @property
    def context_window(self) -> int:
        """The served model's context length if the server reports it in `/v1/models` (vLLM: `max_model_len`;
        `recursa serve` too), else the `context_window` given to the constructor, else 8192."""
        if self._context_window is None:
            try:
                self._context_window = self._run(self._fetch_context_window()) or DEFAULT_CONTEXT_WINDOW
            except BackendError:
                return DEFAULT_CONTEXT_WINDOW
        return self._context_window

    # ---- requests -----------------------------------------------------------------------------------------
    async def _generate_all(self, batch: list[Conversation], sampling: Sampling) -> list[Completion]:
        return list(await asyncio.gather(*(self._generate_one(conv, sampling) for conv in batch)))

    async def _generate_one(self, conversation: Conversation, sampling: Sampling) -> Completion:
        _, semaphore = self._pool_and_semaphore()
        params: dict[str, Any] = {"model": self.name, "messages": conversation, **_sampling_params(sampling)}
        schema = getattr(sampling.constraint, "json_schema", None)
        if schema and self._json_schema_ok:  # the server constrains decoding; callers still validate the reply
            params["response_format"] = {"type": "json_schema",
                                         "json_schema": {"name": "reply", "schema": schema, "strict": True}}
        async with semaphore:
            started = time.perf_counter()
            try:
                response = await self._with_retries(lambda client: client.chat.completions.create(**params))
            except BackendError as exc:
                if "response_format" not in params or "400" not in str(exc):
                    raise
                self._json_schema_ok = False    # a server without JSON-schema output: send plain requests
                params.pop("response_format")
                response = await self._with_retries(lambda client: client.chat.completions.create(**params))
            seconds = time.perf_counter() - started
        if not response.choices:
            raise BackendError(f"{self.base_url or 'OpenAI'} returned no choices for model '{self.name}'")
        choice = response.choices[0]
        text = choice.message.content or ""
        text = _cut_at_stop(text, sampling.stop)  # some servers return the text past a stop string
        usage = response.usage
        prompt_tokens = usage.prompt_tokens if usage else self.count_tokens(_flatten(conversation))
        completion_tokens = usage.completion_tokens if usage else self.count_tokens(text)
        finish = "length" if choice.finish_reason == "length" else "stop"
        record_model_call(self.name, seconds, prompt_tokens, completion_tokens, backend="openai",
                          usage_estimated=usage is None)
        return Completion(text=text, finish_reason=finish, prompt_tokens=prompt_tokens,
                          completion_tokens=completion_tokens)

    # ---- decoding from input embeddings (vLLM) ----------------------------------------------------------------
    def complete_embeds(self, sequences: list[torch.Tensor], sampling: Sampling,
                        stop_token_ids: list[int] | None = None) -> list[Completion]:
        """Generate from input embeddings instead of text: each sequence [T, H] (no padding) is one
        `/v1/completions` request with `prompt_embeds` (vLLM started with --enable-prompt-embeds, as `recursa
        engine` does), sent concurrently. `stop_token_ids`: end-of-turn ids beyond the served generation config's."""
        payloads = [encode_prompt_embeds(seq) for seq in sequences]      # on the caller's thread: torch work
        if not payloads:
            return []
        return self._run(self._complete_all(payloads, [int(seq.shape[0]) for seq in sequences], sampling,
                                            stop_token_ids))

    async def _complete_all(self, payloads: list[str], lengths: list[int], sampling: Sampling,
                            stop_token_ids: list[int] | None) -> list[Completion]:
        return list(await asyncio.gather(*(self._complete_one(p, n, sampling, stop_token_ids)
                                           for p, n in zip(payloads, lengths, strict=True))))

    async def _complete_one(self, payload: str, length: int, sampling: Sampling,
                            stop_token_ids: list[int] | None) -> Completion:
        _, semaphore = self._pool_and_semaphore()
        extra: dict[str, Any] = {"prompt_embeds": payload}
        if stop_token_ids:
            extra["stop_token_ids"] = list(stop_token_ids)
        if sampling.ignore_eos:
            extra["ignore_eos"] = True
        params = {"model": self.name, "prompt": None, **_sampling_params(sampling), "extra_body": extra}
        async with semaphore:
            started = time.perf_counter()
            response = await self._with_retries(lambda client: client.completions.create(**params))
            seconds = time.perf_counter() - started
        if not response.choices:
            raise BackendError(f"{self.base_url} returned no choices for model '{self.name}'")
        choice = response.choices[0]
        text = _cut_at_stop(choice.text or "", sampling.stop)
        usage = response.usage
        prompt_tokens = usage.prompt_tokens if usage else length
        completion_tokens = usage.completion_tokens if usage else self.count_tokens(text)
        record_model_call(self.name, seconds, prompt_tokens, completion_tokens, backend="openai-embeds",
                          usage_estimated=usage is None)
        return Completion(text=text, finish_reason="length" if choice.finish_reason == "length" else "stop",
                          prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)

    def served_models(self) -> list[str]:
        """The model ids the server lists at `/v1/models` (raises BackendError when it cannot be reached)."""
        return [entry.id for entry in self._run(self._list_models()).data]

    async def _list_models(self):
        return await self._with_retries(lambda client: client.models.list())

    async def _fetch_context_window(self) -> int | None:
        page = await self._list_models()
        for entry in page.data:
            if entry.id == self.name:
                extra = entry.model_extra or {}
                for key in ("max_model_len", "context_window", "context_length"):
                    if isinstance(extra.get(key), int):
                        return extra[key]
        return None

    async def _with_retries(self, call):
        """`call(client)` on a replica; a transient failure moves it to another replica that is up at once, and
        backs off only when none is. One server: `max_retries` retries with backoff, as before."""
        pool, _ = self._pool_and_semaphore()
        attempts = self.max_retries + len(pool)      # every replica gets its own try before retries count
        tried: set[int] = set()
        backoffs = 0
        for attempt in range(attempts):
            replica = pool.pick(tried)
            replica.in_flight += 1
            try:
                result = await call(replica.client)
            except (openai.APIConnectionError, openai.APIStatusError) as exc:
                status = getattr(exc, "status_code", None)
                retryable = status is None or status in RETRYABLE_STATUS or status >= 500
                if retryable:
                    pool.failed(replica)
                if not retryable or attempt == attempts - 1:
                    raise _backend_error(exc, replica.where, self.name, attempt + 1) from exc
                tried.add(pool.index(replica))
                if not pool.has_other_up(tried):    # nowhere else to go now: wait, then try them all again
                    tried.clear()
                    await asyncio.sleep(self._backoff(backoffs, exc))
                    backoffs += 1
            else:
                pool.succeeded(replica)
                return result
            finally:
                replica.in_flight -= 1
        raise AssertionError("unreachable")

    def _backoff(self, attempt: int, exc: Exception) -> float:
        response = getattr(exc, "response", None)
        retry_after = response.headers.get("retry-after") if response is not None else None
        if retry_after:
            try:
                return min(float(retry_after), MAX_BACKOFF_SECONDS)
            except ValueError:
                pass  # an HTTP date: fall back to our own schedule
        delay = self.backoff_seconds * 2**attempt
        return min(delay * (0.5 + random.random()), MAX_BACKOFF_SECONDS)  # jitter spreads out retry storms


def encode_prompt_embeds(embeds: torch.Tensor) -> str:
    """[T, H] input embeddings → the `prompt_embeds` string vLLM 0.32 reads (vllm/renderers/embed_utils.py):
    base64, standard alphabet, of `torch.save` of a dense 2-D floating tensor; the server loads it with
    `torch.load(weights_only=True)` and casts it to the model's dtype."""
    import base64
    import io

    import torch

    if embeds.dim() != 2 or not embeds.is_floating_point():
        raise ValueError(f"prompt embeddings must be a [T, H] floating tensor, got {tuple(embeds.shape)} "
                         f"{embeds.dtype}")
    buffer = io.BytesIO()
    torch.save(embeds.detach().to("cpu").contiguous().clone(), buffer)   # clone: a view would save its whole storage
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _sampling_params(sampling: Sampling) -> dict[str, Any]:
    params: dict[str, Any] = {"max_tokens": sampling.max_tokens, "temperature": sampling.temperature, "n": 1}
    if sampling.top_p < 1.0:
        params["top_p"] = sampling.top_p
    if sampling.stop:
        params["stop"] = list(sampling.stop)
    if sampling.seed is not None:
        params["seed"] = sampling.seed
    return params


async def _with_context(coro: Coroutine[Any, Any, T], context: contextvars.Context) -> T:
    task = asyncio.get_running_loop().create_task(coro, context=context)
    return await task


def _backend_error(exc: Exception, where: str, model: str, attempts: int) -> RecursaError:
    status = getattr(exc, "status_code", None)
    detail = getattr(exc, "message", None) or str(exc)
    if status == 400 and "context" in detail.lower() and ("length" in detail.lower() or "window" in detail.lower()):
        return ContextTooLongError(f"{where} rejected the request for '{model}': {detail}; "
                                   "shorten the prompt or lower max_tokens")
    if status is None:
        return BackendUnreachable(f"cannot reach {where} after {attempts} attempt(s): {detail}; "
                            "check that the server is running and --base-url is right")
    hint = {401: "check the API key", 404: "check the model name (GET /v1/models lists them)"}.get(status, "")
    return BackendError(f"{where} answered HTTP {status} for model '{model}' after {attempts} attempt(s): "
                        f"{detail}" + (f"; {hint}" if hint else ""))


def _cut_at_stop(text: str, stop: tuple[str, ...]) -> str:
    cut = min((text.find(s) for s in stop if s and s in text), default=-1)
    return text[:cut] if cut >= 0 else text


def _flatten(conversation: Conversation) -> str:
    return "\n".join(str(m.get("content", "")) for m in conversation)
