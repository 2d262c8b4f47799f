"""Step-level continuous batching over `HFModel`: the one thread that runs the model for `recursa serve`.

The engine keeps one running batch (a `SequenceState` whose rows belong to different requests) and loops:

1. take new requests off the queue, tokenize and check them (the request learns at once whether it will run);
2. advance the prefill of the newest group of waiting requests by one forward (at most `PREFILL_TOKENS` tokens),
   so a long prompt never stalls the running rows for more than one forward; when the group's prefill is done,
   its first tokens are chosen and its rows join the running batch;
3. one decode step for every running row (their own sampling, their own random generator);
4. rows that finished or whose client went away leave the state, so they cost nothing from the next step on.

A request that arrives while a batch decodes therefore joins it after its prefill, at the next decode step.
Rows keep their own mask and RoPE positions inside the shared state (models/state.py), so a request's greedy tokens
are the same alone and joined except at a bf16 tie of its two best logits (models/invariance.py).
"""

from __future__ import annotations

import dataclasses
import queue
import threading
import time
from collections import deque
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

import torch

from recursa.core import allocator
from recursa.models.sampling import choose_tokens, sampling_generator
from recursa.models.state import SequenceState
from recursa.serve.jobs import Accepted, Delta, Done, Finished, Job
from recursa.serve.schema import DEFAULT_MAX_TOKENS, ApiError, response_constraint

TRIM_EVERY_REQUESTS = 16


@dataclass
class EngineStats:
    steps: int = 0                 # decode forwards (one per step for the whole running batch)
    prefill_forwards: int = 0
    cohorts: int = 0               # groups of requests prefilled together
    requests: int = 0              # finished requests (cancelled ones included)
    rows: int = 0                  # rows admitted
    largest_batch: int = 0         # most rows in one decode step
    decoding_rows: int = 0         # rows in the running batch now
    waiting: int = 0               # accepted requests not yet prefilling
    joined_running: int = 0        # requests whose rows joined a batch that was already decoding
    cancelled_requests: int = 0
    cancelled_rows: int = 0        # rows that stopped because their client went away
    recent: deque = field(default_factory=lambda: deque(maxlen=64))   # per-request step records, newest last

    def as_dict(self) -> dict[str, Any]:
        counters = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "recent"}
        return counters | {"recent": list(self.recent)}


@dataclass
class Running:
    """The decoding batch: its state, the owner (job, choice index) of every row, the tokens to feed next [B]."""
    state: SequenceState
    owners: list[tuple[Job, int]]
    pending: torch.Tensor


@dataclass
class Cohort:
    """Requests whose prompts are being prefilled together, one forward per engine iteration."""
    jobs: list[Job]
    state: SequenceState
    steps: Generator[int, None, torch.Tensor]


class ContinuousBatcher:
    """Owns the model: every tokenizer and model call happens on its thread."""

    def __init__(self, model, max_batch: int = 16, batch_window_s: float = 0.005, continuous: bool = True):
        self.model = model
        self.max_batch = max_batch
        self.continuous = continuous           # False: static batching, newcomers wait for the batch to finish
        self.batch_window_s = batch_window_s   # an idle engine waits this long for requests sent together
        self.stats = EngineStats()
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._waiting: deque[Job] = deque()
        self._cohort: Cohort | None = None
        self._running: Running | None = None
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="recursa-serve-engine", daemon=True)

    def start(self) -> None:
        allocator.fix_mmap_threshold()
        self._thread.start()

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=60)

    def submit(self, job: Job) -> None:
        self._queue.put(job)

    # ---- the loop -------------------------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stopping:
            self._receive(block=self._running is None and self._cohort is None and not self._waiting)
            self._drop_cancelled()
            try:
                self._advance_prefill()
                self._decode_step()
            except Exception as exc:  # the server keeps serving; the requests in flight get a 500
                self._fail_in_flight(ApiError(500, f"generation failed: {type(exc).__name__}: {exc}",
                                              kind="server_error"))
            self._update_gauges()
        self._fail_everything(ApiError(503, "server is shutting down", kind="server_error"))

    def _receive(self, block: bool) -> None:
        if block:
            allocator.release_free_memory()   # idle: hand back what the last batch freed
            first = self._queue.get()
            if first is None:
                self._stopping = True
                return
            self._admit(first)
            time.sleep(self.batch_window_s)
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                return
            if job is None:
                self._stopping = True
                return
            self._admit(job)

    def _admit(self, job: Job) -> None:
        """Tokenize and check the prompt; the request hears `Accepted` or its error right away."""
        if job.cancelled:
            self._close_cancelled(job, rows=0)
            return
        try:
            job.prompt_ids = self.model.chat_ids(job.messages)
            job.sampling = self._fit_max_tokens(job)
            constraint = response_constraint(job.response_format, self.model.tokenizer)
            if constraint is not None:
                job.sampling = dataclasses.replace(job.sampling, constraint=constraint)
        except ApiError as exc:
            job.fail(exc)
            return
        job.record = {"id": job.id, "prompt_tokens": len(job.prompt_ids), "admitted_step": self.stats.steps}
        job.channel.put(Accepted(len(job.prompt_ids)))
        self._waiting.append(job)

    def _fit_max_tokens(self, job: Job):
        window, prompt = self.model.context_window, len(job.prompt_ids)
        if not job.max_tokens_given:
            room = window - prompt
            if room < 1:
                raise ApiError(400, f"the prompt has {prompt} tokens, which fills the model's context window of "
                                    f"{window} tokens; shorten the messages", "messages", "context_length_exceeded")
            return dataclasses.replace(job.sampling, max_tokens=min(DEFAULT_MAX_TOKENS, room))
        if prompt + job.sampling.max_tokens > window:
            raise ApiError(400, f"this model's maximum context length is {window} tokens; the messages have {prompt} "
                                f"tokens and max_tokens asks for {job.sampling.max_tokens} more; shorten the messages "
                                "or lower max_tokens", "messages", "context_length_exceeded")
        return job.sampling

    # ---- prefill: a group of waiting requests, one forward per iteration ------------------------------------
    def _advance_prefill(self) -> None:
        if self._cohort is None:
            self._cohort = self._start_cohort()
            if self._cohort is None:
                return
        cohort = self._cohort
        try:
            next(cohort.steps)
            self.stats.prefill_forwards += 1
            return
        except StopIteration as done:
            hidden = done.value
        self.stats.prefill_forwards += 1
        self._join(cohort, hidden)
        self._cohort = None          # only now: if the join fails, the cohort's requests are still in flight

    def _start_cohort(self) -> Cohort | None:
        if not self.continuous and self._running is not None:
            return None
        room = self.max_batch - self._running_rows()
        jobs: list[Job] = []
        cache = self.model.prefix_cache
        while self._waiting and self._waiting[0].n <= room:   # first come, first served: none overtakes a big one
            # a request that continues a cached conversation prefills alone (only its new tokens), then joins
            reuses = self._waiting[0].n == 1 and cache.lookup(self._waiting[0].prompt_ids) > 0
            if reuses and jobs:
                break
            job = self._waiting.popleft()
            jobs.append(job)
            room -= job.n
            if reuses:
                break
        if not jobs:
            return None
        if len(jobs) == 1:   # a conversation growing request by request reuses its previous prompt's cache
            state, cached = cache.take(jobs[0].prompt_ids)
            jobs[0].cached_tokens = cached
            state = state if state is not None else self.model.new_state(1)
        else:
            state = self.model.new_state(len(jobs))
        for job in jobs:
            job.record["prefill_step"] = self.stats.steps
        self.stats.cohorts += 1
        ids = [job.prompt_ids[job.cached_tokens:] for job in jobs]
        return Cohort(jobs, state, self.model.prefill_stepwise(state, ids))

    def _join(self, cohort: Cohort, hidden: torch.Tensor) -> None:
        """The cohort's first tokens; its rows that go on join the running batch (or become it)."""
        jobs, state = cohort.jobs, cohort.state
        if any(job.n > 1 for job in jobs):   # one prefill per prompt, then a copy of its row per choice
            index = torch.tensor([k for k, job in enumerate(jobs) for _ in range(job.n)], device=state.device)
            state.select_rows(index)
            hidden = hidden.index_select(0, index)
        owners = [(job, choice) for job in jobs for choice in range(job.n)]
        joins_running = self._running is not None
        for job in jobs:
            job.start_rows()
            job.generator = sampling_generator(job.sampling, self.model.device)
            job.record |= {"joined_step": self.stats.steps, "rows_at_join": self._running_rows() + len(owners),
                           "joined_running": joins_running}
            self.stats.joined_running += joins_running
        self.stats.rows += len(owners)
        tokens = self._choose(hidden, owners)
        keep = self._take(owners, tokens, state)
        if not keep:
            return
        if len(keep) < len(owners):
            state.select_rows(torch.tensor(keep, device=state.device))
        pending = torch.tensor([tokens[k] for k in keep], device=state.device)
        kept_owners = [owners[k] for k in keep]
        if self._running is None:
            self._running = Running(state, kept_owners, pending)
            return
        self._running.state.append_rows(state)
        self._running.owners += kept_owners
        self._running.pending = torch.cat([self._running.pending, pending])

    # ---- decode ---------------------------------------------------------------------------------------------
    def _decode_step(self) -> None:
        running = self._running
        if running is None:
            return
        hidden = self.model.step_ids(running.state, running.pending)
        self.stats.steps += 1
        self.stats.largest_batch = max(self.stats.largest_batch, len(running.owners))
        tokens = self._choose(hidden, running.owners)
        self._keep(self._take(running.owners, tokens, running.state), tokens)

    def _choose(self, hidden: torch.Tensor, owners: list[tuple[Job, int]]) -> list[int]:
        """Each row's next token under its own request's sampling: a `response_format` first masks the row by its
        grammar (each row by its own tokens so far); greedy rows then take one argmax, the others are sampled."""
        logits = self.model.logits(hidden)
        by_job: dict[int, list[int]] = {}
        for row, (job, _) in enumerate(owners):
            by_job.setdefault(id(job), []).append(row)
        groups = [(owners[rows[0]][0], rows) for rows in by_job.values()]
        for job, rows in groups:
            if job.sampling.constraint is not None:
                index = torch.tensor(rows, device=logits.device)
                generated = [job.rows[owners[row][1]].tokens for row in rows]
                with torch.inference_mode():       # the logits are an inference tensor: update them in that mode
                    logits[index] = job.sampling.constraint.mask(generated, logits.index_select(0, index))
        chosen = logits.argmax(dim=-1)
        for job, rows in groups:
            if not job.sampling.greedy:
                index = torch.tensor(rows, device=logits.device)
                chosen[index] = choose_tokens(logits.index_select(0, index), job.sampling, job.generator)
        return chosen.tolist()

    def _take(self, owners: list[tuple[Job, int]], tokens: list[int], state: SequenceState) -> list[int]:
        """Hand each row its token; return the rows (indices into `owners`) that go on."""
        keep = []
        for i, ((job, choice), token) in enumerate(zip(owners, tokens, strict=True)):
            if job.closed:
                continue
            row = job.rows[choice]
            going = row.take(token, self.model, job.sampling, last=len(row.tokens) + 1 >= job.sampling.max_tokens)
            if job.stream:
                text = self.model.detokenize(row.tokens) if going else row.text(self.model)
                delta = job.texts[choice].delta(text, finished=not going)
                if delta:
                    job.channel.put(Delta(choice, delta))
            if going:
                keep.append(i)
            else:
                self._finish_row(job, choice, state, i, sole=len(owners) == 1)
        return keep

    def _finish_row(self, job: Job, choice: int, state: SequenceState, row: int, sole: bool) -> None:
        progress = job.rows[choice]
        job.channel.put(Finished(choice, progress.finish or "length", progress.text(self.model),
                                 len(progress.tokens)))
        job.open_rows -= 1
        if job.open_rows:
            return
        job.closed = True
        completion = sum(len(r.tokens) for r in job.rows)
        job.channel.put(Done(len(job.prompt_ids), completion, job.cached_tokens))
        self._record(job, completion_tokens=completion, cancelled=False)
        if job.n == 1:   # keep this conversation's cache for its next request (the state is shared: copy the row)
            remembered = state if sole else state.take_rows(torch.tensor([row], device=state.device))
            remembered.trim_left()
            self.model.prefix_cache.store(job.prompt_ids, remembered)

    def _keep(self, keep: list[int], tokens: list[int]) -> None:
        """Only rows `keep` of the running batch go on, fed `tokens` of those rows next."""
        running = self._running
        if not keep:
            self._running = None
            return
        if len(keep) < len(running.owners):
            index = torch.tensor(keep, device=running.state.device)
            running.state.select_rows(index)
            running.state.trim_left()
            running.owners = [running.owners[k] for k in keep]
        running.pending = torch.tensor([tokens[k] for k in keep], device=running.state.device)

    # ---- cancellation, failures, bookkeeping -----------------------------------------------------------------
    def _drop_cancelled(self) -> None:
        for job in [job for job in self._waiting if job.cancelled]:
            self._waiting.remove(job)
            self._close_cancelled(job, rows=0)
        if self._cohort is not None and all(job.cancelled for job in self._cohort.jobs):
            for job in self._cohort.jobs:
                self._close_cancelled(job, rows=job.n)
            self._cohort.steps.close()
            self._cohort = None
        running = self._running
        if running is None or not any(job.cancelled for job, _ in running.owners):
            return
        for job in {id(job): job for job, _ in running.owners if job.cancelled and not job.closed}.values():
            self._close_cancelled(job, rows=job.open_rows)
        keep = [i for i, (job, _) in enumerate(running.owners) if not job.cancelled]
        self._keep(keep, running.pending.tolist())

    def _close_cancelled(self, job: Job, rows: int) -> None:
        if job.closed:
            return
        job.closed = True
        self.stats.cancelled_requests += 1
        self.stats.cancelled_rows += rows
        self._record(job, completion_tokens=sum(len(r.tokens) for r in job.rows), cancelled=True)

    def _record(self, job: Job, completion_tokens: int, cancelled: bool) -> None:
        self.stats.requests += 1
        job.record |= {"finished_step": self.stats.steps, "completion_tokens": completion_tokens,
                       "cancelled": cancelled, "cached_tokens": job.cached_tokens,
                       "seconds": round(time.perf_counter() - job.started, 3)}
        self.stats.recent.append(job.record)
        if self.stats.requests % TRIM_EVERY_REQUESTS == 0:   # a server that is never idle trims as it goes
            allocator.release_free_memory()

    def _in_flight(self) -> list[Job]:
        jobs = {id(job): job for job, _ in (self._running.owners if self._running else [])}
        jobs |= {id(job): job for job in (self._cohort.jobs if self._cohort else [])}
        return list(jobs.values())

    def _fail_in_flight(self, error: ApiError) -> None:
        jobs = self._in_flight()
        self._running = self._cohort = None
        self._update_gauges()
        for job in jobs:
            job.fail(error)

    def _fail_everything(self, error: ApiError) -> None:
        self._fail_in_flight(error)
        while self._waiting:
            self._waiting.popleft().fail(error)
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                return
            if job is not None:
                job.fail(error)

    def _running_rows(self) -> int:
        return len(self._running.owners) if self._running else 0

    def _update_gauges(self) -> None:
        self.stats.decoding_rows = self._running_rows()
        self.stats.waiting = len(self._waiting)
