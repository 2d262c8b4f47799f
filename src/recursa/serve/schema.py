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
from recursa.models.constraints import JsonSchemaConstraint

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


class JsonSchemaFormat(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)
    name: str = "response"
    json_schema: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    """OpenAI's `response_format`: text, any JSON object, or JSON of a given schema (decoded under its grammar)."""

    model_config = ConfigDict(extra="allow")
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


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
    response_format: ResponseFormat | None = None

    def conversation(self) -> list[dict[str, str]]:
        return [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in self.messages]

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    def include_usage(self) -> bool:
        return bool(self.stream and self.stream_options and self.stream_options.include_usage)


def response_constraint(response_format: ResponseFormat | None, tokenizer: Any) -> JsonSchemaConstraint | None:
    """The token mask that makes the reply JSON (of the request's schema), or None for plain text. Runs on the
    engine's thread: the first call for a tokenizer scans its vocabulary."""
    if response_format is None or response_format.type == "text":
        return None
    if response_format.type == "json_object":
        schema: dict[str, Any] = {"type": "object"}
    elif response_format.json_schema is None or response_format.json_schema.json_schema is None:
        raise ApiError(400, "response_format of type json_schema needs json_schema.schema", "response_format",
                       "invalid_value")
    else:
        schema = response_format.json_schema.json_schema
    try:
        return JsonSchemaConstraint(tokenizer, schema)
    except ImportError:
        raise ApiError(400, "response_format needs llguidance, which is not installed", "response_format",
                       "unsupported_parameter") from None
    except (ValueError, TypeError) as exc:
        raise ApiError(400, f"response_format: {exc}", "response_format", "invalid_value") from exc


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
