"""The OpenAI chat-completions request schema, its validation into `Sampling`, and OpenAI-shaped errors."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from recursa.core.errors import ConfigError
from recursa.models.base import Sampling

DEFAULT_MAX_TOKENS = 1024  # when a request sets neither max_tokens nor max_completion_tokens
MAX_STOP_STRINGS = 16


class ApiError(Exception):
    """A request the server refuses, rendered as an OpenAI error body."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status)


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


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


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
    stream_options: StreamOptions | None = None
    logprobs: bool | None = None
    tools: list[Any] | None = None
    ignore_eos: bool = False  # vLLM's extension: decode exactly max_tokens tokens (benchmarks)

    def conversation(self) -> list[dict[str, str]]:
        return [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in self.messages]

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    def include_usage(self) -> bool:
        return bool(self.stream and self.stream_options and self.stream_options.include_usage)


def request_sampling(body: ChatRequest, max_batch: int) -> Sampling:
    """The request's decoding settings, or a 400 saying which field is out of range."""
    if body.tools or body.logprobs:
        param = "tools" if body.tools else "logprobs"
        raise ApiError(400, f"'{param}' is not supported by recursa serve", param, "unsupported_parameter")
    if body.n > max_batch:
        raise ApiError(400, f"n={body.n} exceeds this server's batch limit of {max_batch} (--max-batch)", "n",
                       "invalid_value")
    if body.stream_options is not None and not body.stream:
        raise ApiError(400, "stream_options is only allowed with stream=true", "stream_options", "invalid_value")
    stop = (body.stop,) if isinstance(body.stop, str) else tuple(body.stop or ())
    if len(stop) > MAX_STOP_STRINGS or any(not s for s in stop):
        raise ApiError(400, f"stop takes 1 to {MAX_STOP_STRINGS} non-empty strings", "stop", "invalid_value")
    temperature = 0.0 if body.top_p == 0.0 else body.temperature  # top_p 0 keeps only the top token
    try:
        return Sampling(max_tokens=body.requested_max_tokens() or DEFAULT_MAX_TOKENS, temperature=temperature,
                        top_p=body.top_p or 1.0, stop=stop, seed=body.seed, ignore_eos=body.ignore_eos)
    except ConfigError as exc:
        raise ApiError(400, str(exc), code="invalid_value") from exc


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
