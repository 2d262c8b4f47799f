"""A request as the engine sees it (`Job`), and the events it sends back to the request's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from recursa.models.base import Sampling
from recursa.models.sampling import RowProgress, StreamText
from recursa.serve.schema import ApiError


@dataclass
class Accepted:
    """The prompt was tokenized and fits: the request will run (it may wait for room first)."""
    prompt_tokens: int


@dataclass
class Delta:
    index: int   # choice index
    text: str


@dataclass
class Finished:
    index: int
    reason: str  # "stop" | "length"
    text: str
    completion_tokens: int


@dataclass
class Done:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int


@dataclass
class Failed:
    error: ApiError


Event = Accepted | Delta | Finished | Done | Failed


class Channel:
    """Events from the engine thread to the asyncio loop that serves the request."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.loop = loop or asyncio.get_running_loop()
        self.queue: asyncio.Queue[Event] = asyncio.Queue()

    def put(self, event: Event) -> None:
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is listening any more
            self.loop.call_soon_threadsafe(self.queue.put_nowait, event)

    async def get(self) -> Event:
        return await self.queue.get()


@dataclass
class Job:
    """One chat request: `n` rows that share a prompt, decoded with one `Sampling`."""

    id: str
    messages: list[dict[str, str]]
    n: int
    sampling: Sampling
    max_tokens_given: bool
    channel: Channel
    stream: bool = False
    response_format: Any = None      # the request's ResponseFormat; its token mask is built on the engine's thread
    cancelled: bool = False          # set by the request's side when its client went away
    prompt_ids: list[int] = field(default_factory=list)
    cached_tokens: int = 0
    rows: list[RowProgress] = field(default_factory=list)
    texts: list[StreamText] = field(default_factory=list)
    generator: torch.Generator | None = None
    open_rows: int = 0
    closed: bool = False             # finished, failed or cancelled: the engine is done with it
    record: dict[str, Any] = field(default_factory=dict)   # step numbers of its life, for /stats
    started: float = field(default_factory=time.perf_counter)

    def cancel(self) -> None:
        self.cancelled = True

    def start_rows(self) -> None:
        self.rows = [RowProgress() for _ in range(self.n)]
        self.texts = [StreamText(self.sampling.stop) for _ in range(self.n)]
        self.open_rows = self.n

    def fail(self, error: ApiError) -> None:
        if not self.closed:
            self.closed = True
            self.channel.put(Failed(error))
