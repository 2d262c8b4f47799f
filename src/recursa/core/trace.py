"""Trace: every model call, latent step, tool call and REPL block is an event in one JSONL file per run.

A `Tracer` is installed for the duration of a run (`with Tracer.start(...) as tracer:`); code anywhere below
reaches it through `current_tracer()` (a context variable, so asyncio tasks inherit it). Spans nest: each event
records its parent span id. The tracer also keeps running totals, which benchmarks read instead of keeping
counters of their own.
"""

from __future__ import annotations

import contextvars
import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_current_tracer: contextvars.ContextVar[Tracer | None] = contextvars.ContextVar("recursa_tracer", default=None)
_current_span: contextvars.ContextVar[str | None] = contextvars.ContextVar("recursa_span", default=None)


@dataclass
class UsageTotals:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latent_steps: int = 0
    model_calls: int = 0

    def add(self, other: UsageTotals) -> None:
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.latent_steps += other.latent_steps
        self.model_calls += other.model_calls

    def as_dict(self) -> dict[str, int]:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "latent_steps": self.latent_steps, "model_calls": self.model_calls}


@dataclass
class Span:
    tracer: Tracer
    span_id: str
    parent_id: str | None
    kind: str
    name: str
    attrs: dict[str, Any] = field(default_factory=dict)
    start: float = field(default_factory=time.time)

    def set(self, **attrs: Any) -> None:
        self.attrs.update(attrs)


class Tracer:
    """Writes events for one run to `<dir>/<run_id>.jsonl` (flushed per line: nothing is lost on a crash)."""

    def __init__(self, path: Path | None, run_id: str | None = None, otel: bool = False):
        self.run_id = run_id or time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        self.path = path
        self.totals = UsageTotals()
        self._lock = threading.Lock()
        self._file = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._otel = _OtelExporter() if otel else None

    @classmethod
    @contextmanager
    def start(cls, runs_dir: Path | None = None, run_id: str | None = None,
              otel: bool | None = None) -> Iterator[Tracer]:
        """Create a tracer, make it current for this context, close it at the end."""
        from recursa.core.config import settings

        conf = settings()
        rid = run_id or time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        directory = (runs_dir or conf.runs_dir) / "traces"
        tracer = cls(directory / f"{rid}.jsonl", rid, conf.otel if otel is None else otel)
        token = _current_tracer.set(tracer)
        try:
            with tracer.span("run", "run"):
                yield tracer
        finally:
            _current_tracer.reset(token)
            tracer.close()

    def write(self, record: dict[str, Any]) -> None:
        record.setdefault("run_id", self.run_id)
        with self._lock:
            if self._file is not None:
                self._file.write(json.dumps(record, default=str) + "\n")
                self._file.flush()

    @contextmanager
    def span(self, kind: str, name: str, **attrs: Any) -> Iterator[Span]:
        span = Span(self, uuid.uuid4().hex[:12], _current_span.get(), kind, name, dict(attrs))
        token = _current_span.set(span.span_id)
        error: str | None = None
        try:
            yield span
        except BaseException as exc:
            error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            _current_span.reset(token)
            self._finish(span, error)

    def event(self, kind: str, name: str, seconds: float = 0.0, **attrs: Any) -> None:
        """A leaf event that already happened (e.g. a model call timed by the backend)."""
        now = time.time()
        span = Span(self, uuid.uuid4().hex[:12], _current_span.get(), kind, name, dict(attrs), now - seconds)
        self._finish(span, None, end=now)

    def _finish(self, span: Span, error: str | None, end: float | None = None) -> None:
        end = end or time.time()
        usage = UsageTotals(
            prompt_tokens=int(span.attrs.get("prompt_tokens", 0) or 0),
            completion_tokens=int(span.attrs.get("completion_tokens", 0) or 0),
            latent_steps=int(span.attrs.get("latent_steps", 0) or 0),
            model_calls=int(span.attrs.get("model_calls", 1 if span.kind == "model_call" else 0) or 0),
        )
        if span.kind in ("model_call", "latent"):
            with self._lock:
                self.totals.add(usage)
        record = {"span_id": span.span_id, "parent_id": span.parent_id, "kind": span.kind, "name": span.name,
                  "start": span.start, "seconds": round(end - span.start, 6), **span.attrs}
        if error:
            record["error"] = error
        self.write(record)
        if self._otel is not None:
            self._otel.export(span, end, error)

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


def current_tracer() -> Tracer | None:
    return _current_tracer.get()


@contextmanager
def span(kind: str, name: str, **attrs: Any) -> Iterator[Span | None]:
    """A span on the current tracer, or nothing when no run is being traced."""
    tracer = current_tracer()
    if tracer is None:
        yield None
        return
    with tracer.span(kind, name, **attrs) as s:
        yield s


ANSWER_SUFFIX = ".answer.json"
EXCHANGES_KEPT, PROMPT_CHARS_KEPT, ANSWER_CHARS_KEPT = 64, 800, 400


def traced_exchanges(prompts: list[str], answers: list[str]) -> list[dict[str, str]]:
    """Sub-call prompts and answers as a span attribute: the first EXCHANGES_KEPT pairs, each cut to a readable size
    (a 500-prompt batch would otherwise put megabytes of context slices into the trace)."""
    pairs = list(zip(prompts, answers, strict=False))[:EXCHANGES_KEPT]
    return [{"prompt": p[:PROMPT_CHARS_KEPT] + ("…" if len(p) > PROMPT_CHARS_KEPT else ""),
             "answer": a[:ANSWER_CHARS_KEPT] + ("…" if len(a) > ANSWER_CHARS_KEPT else "")} for p, a in pairs]


def answer_path(trace: Path) -> Path:
    """Where a finished run keeps its answer record: beside its trace, `<run_id>.answer.json`."""
    return trace.with_name(trace.stem + ANSWER_SUFFIX)


def save_answer(trace: Path, answer: dict[str, Any], question: str, model: str) -> Path:
    """Write the finished run's answer (`Answer.to_dict()`), question and model next to its trace: the trace holds
    costs and structure, this record the texts a reader wants to see (the viewer shows both)."""
    path = answer_path(trace)
    record = {**answer, "question": question, "model": model}
    path.write_text(json.dumps(record, default=str, indent=1), encoding="utf-8")
    return path


def record_model_call(model: str, seconds: float, prompt_tokens: int, completion_tokens: int,
                      batch_size: int = 1, **attrs: Any) -> None:
    """Record one model call (a whole batch counts as `batch_size` calls) on the current tracer, if any."""
    tracer = current_tracer()
    if tracer is not None:
        tracer.event("model_call", model, seconds, model=model, prompt_tokens=prompt_tokens,
                     completion_tokens=completion_tokens, model_calls=batch_size, batch_size=batch_size, **attrs)


def record_latent(model: str, seconds: float, latent_steps: int, **attrs: Any) -> None:
    tracer = current_tracer()
    if tracer is not None:
        tracer.event("latent", model, seconds, model=model, latent_steps=latent_steps, **attrs)


class _OtelExporter:
    """Maps trace events onto OpenTelemetry spans with the GenAI semantic conventions (optional dependency)."""

    def __init__(self) -> None:
        try:
            from opentelemetry import trace as otel_trace
        except ImportError as exc:  # pragma: no cover - depends on optional install
            from recursa.core.errors import ConfigError

            raise ConfigError("RECURSA_OTEL=1 needs OpenTelemetry: pip install 'recursa[otel]'") from exc
        self._tracer = otel_trace.get_tracer("recursa")
        if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") is None and os.environ.get("RECURSA_OTEL_CONSOLE"):
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

            provider = TracerProvider()
            provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
            otel_trace.set_tracer_provider(provider)
            self._tracer = otel_trace.get_tracer("recursa")

    def export(self, span: Span, end: float, error: str | None) -> None:
        attrs: dict[str, Any] = {"recursa.run_id": span.tracer.run_id, "recursa.kind": span.kind}
        if span.kind == "model_call":
            attrs.update({"gen_ai.operation.name": "chat", "gen_ai.request.model": span.attrs.get("model", span.name),
                          "gen_ai.usage.input_tokens": span.attrs.get("prompt_tokens", 0),
                          "gen_ai.usage.output_tokens": span.attrs.get("completion_tokens", 0)})
        for key, value in span.attrs.items():
            if isinstance(value, (str, int, float, bool)):
                attrs[f"recursa.{key}"] = value
        otel_span = self._tracer.start_span(f"{span.kind} {span.name}", start_time=int(span.start * 1e9),
                                            attributes=attrs)
        if error:
            otel_span.set_attribute("error.type", error.split(":")[0])
        otel_span.end(end_time=int(end * 1e9))
