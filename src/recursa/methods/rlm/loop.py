"""`rlm`: a Recursive Language Model. The context lives in a sandboxed REPL; the root model writes code over it.

One `solve()`: start a `PythonWorker` holding `context`, then repeat {root model writes a reply → run its code
blocks → show the output} until the code calls FINAL (or the reply says FINAL(...) / FINAL_VAR(name)), the
iteration cap is reached, or the shared `Budget` trips. Code reaches models through callbacks: `llm_query`,
`llm_query_batched` (one batched `generate` call) and `rlm_query` (a child RLM one level deeper, same Budget).
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Iterator
from importlib import resources
from typing import Any

from pydantic import Field

import recursa.methods.rlm.parsing as parsing
import recursa.methods.rlm.prompting as prompting
from recursa.core.budget import Budget
from recursa.core.errors import BudgetExceeded, ConfigError, RecursaError
from recursa.core.sandbox import BlockResult, PythonWorker
from recursa.core.trace import span, traced_exchanges
from recursa.methods.base import AgentOutput, Answer, MethodBase, Task, register
from recursa.methods.config import MethodConfig
from recursa.methods.rlm.history import fit_history
from recursa.methods.rlm.state import Repl, RunState
from recursa.models.base import ChatModel, Completion, Conversation, Sampling

MARKED_VARIABLES = ("final_answer", "answer")
CLOSING_FENCE = "\n```\n"
# Short numeric or id literals ("42", "-3.5", "1,204", "5138149", "ab-1234"): the answers a model can guess.
_LITERAL = re.compile(r"[-+]?\d[\d,.]*|(?=[\w-]*\d)[a-z]{0,4}[-_#]?[\w-]{1,16}")
_MARKED_PROBE = ("for _n in " + repr(MARKED_VARIABLES) + ":\n    if globals().get(_n) not in (None, '', [], {}):\n"
                 "        print(globals()[_n])\n        break")


class RLMConfig(MethodConfig):
    """`rlm`: the context lives in a sandboxed Python REPL; the root model writes code over it."""

    max_depth: int = Field(1, ge=0)
    """Recursion depth: 0 = no sub-calls, 1 = `llm_query` sub-calls, 2+ = `rlm_query` runs child RLMs."""
    max_iterations: int = Field(12, ge=1)
    """Root-model turns before the run must answer."""
    max_tokens: int = Field(512, ge=1)
    """Most tokens per root-model reply."""
    temperature: float = Field(0.0, ge=0.0)
    """Root-model sampling temperature; 0 is greedy."""
    seed: int | None = None
    """Seed for sampling (temperature > 0)."""
    sub_max_tokens: int = Field(256, ge=1)
    """Most tokens per sub-call answer."""
    max_output_chars: int = Field(20_000, ge=100)
    """REPL output shown to the root model per block (the rest is cut)."""
    block_timeout: float = Field(30.0, gt=0)
    """Wall seconds one code block may run."""
    memory_mb: int = Field(1024, ge=64)
    """Address-space limit of the sandboxed REPL."""
    max_chunk_tokens: int = Field(2000, ge=64)
    """Largest chunk (in sub-model tokens) that `chunks()` hands out."""
    history_tokens: int = Field(12_000, ge=512)
    """Root transcript kept in the prompt (older turns are summarised away)."""
    max_batch: int = Field(32, ge=1)
    """Most prompts per batched sub-model call."""
    max_prompts: int = Field(500, ge=1)
    """Most prompts one `llm_query_batched` call may hold (more is refused: narrow the lines first)."""
    max_seconds: float | None = Field(None, gt=0)
    """Wall seconds per question (child RLMs included) when no Budget is passed; then the best answer so far."""
    system_prompt: str | None = None
    """Replace the root's system prompt with this text (e.g. another scaffold's, to measure prompt vs loop)."""


@register
class RecursiveLM(MethodBase):
    """A Recursive Language Model: the root model never sees the context; it works on it with code."""

    name = "rlm"
    Config = RLMConfig

    def __init__(self, model: ChatModel, config: RLMConfig | None = None, *, budget: Budget | None = None,
                 sub_model: ChatModel | None = None, depth: int = 0, **options: Any):
        super().__init__(model, config, budget=budget, **options)
        cfg = self.config
        self.sub_model = sub_model or model
        self.max_depth, self.max_iterations, self.depth = cfg.max_depth, cfg.max_iterations, depth
        # Stop at the end of the first code block: small models otherwise go on to imagine its output and answer.
        self.sampling = Sampling(max_tokens=cfg.max_tokens, temperature=cfg.temperature, seed=cfg.seed,
                                 stop=(CLOSING_FENCE, "Output of your code:"))
        self.sub_sampling = Sampling(max_tokens=cfg.sub_max_tokens, temperature=0.0)
        self.max_output_chars, self.block_timeout, self.memory_mb = (cfg.max_output_chars, cfg.block_timeout,
                                                                     cfg.memory_mb)
        self.max_chunk_tokens, self.history_tokens, self.max_batch = (cfg.max_chunk_tokens, cfg.history_tokens,
                                                                      cfg.max_batch)
        self._current_chunk = 8000

    @property
    def sub_calls_allowed(self) -> bool:
        return self.depth < self.max_depth

    # ---- entry points ------------------------------------------------------------------------------
    def solve_batch(self, tasks: list[Task]) -> list[Answer]:
        return [self.solve(task) for task in tasks]

    def solve(self, task: Task) -> Answer:
        started = time.perf_counter()
        budget = self.budget if self.budget is not None else Budget(max_depth=self.max_depth,
                                                                    max_seconds=self.config.max_seconds)
        run = RunState(task, budget)
        context = task.context if task.context is not None else ""
        chunk = prompting.chunk_chars(self.sub_model, prompting.context_text(context)[:4000], self.max_chunk_tokens,
                                      self.sub_sampling.max_tokens)
        stopped = None
        with span("rlm", f"rlm depth {self.depth}", depth=self.depth, task=task.id, model=self.model.name,
                  sub_model=self.sub_model.name, context_chars=prompting.context_chars(context),
                  chunk_chars=chunk) as rlm_span, self._worker(run, context, chunk) as worker:
            run.messages = [
                {"role": "system", "content": self.config.system_prompt or prompting.system_prompt(
                    context=context, chunk=chunk, sub_calls=self.sub_calls_allowed,
                    recursive=self.depth + 1 < self.max_depth, question=task.question)},
                {"role": "user", "content": prompting.first_user(task.question, context)}]
            try:
                self._loop(run, worker)
                if run.final is None:
                    self._last_answer(run, worker, allow_call=True)
            except BudgetExceeded as exc:
                stopped = str(exc)
                self._last_answer(run, worker, allow_call=False)
            if rlm_span is not None:
                rlm_span.set(iterations=run.iterations, blocks=run.blocks, sub_calls=run.sub_calls,
                             final_source=run.final_source, stopped=stopped)
        return self._answer(run, stopped, time.perf_counter() - started)

    # ---- the loop ----------------------------------------------------------------------------------
    def _loop(self, run: RunState, worker: PythonWorker) -> None:
        rejected_early = False
        previous_reply = None
        for turn in range(1, self.max_iterations + 1):
            run.budget.check()
            run.iterations = turn
            with span("rlm_iteration", f"iteration {turn}", depth=self.depth, turn=turn) as it_span:
                reply = self._root_call(run, charge_iteration=True, resample=previous_reply)
                previous_reply = reply
                run.messages.append({"role": "assistant", "content": reply})
                blocks = parsing.extract_code(reply)
                outputs, notes = [], []
                for index, block in enumerate(blocks, 1):
                    result = self._run_block(run, worker, block, index)
                    if run.final is not None and not self._grounded(run, block):
                        run.budget.offer(run.final)
                        notes.append(f"FINAL({run.final!r}) was ignored: that value does not appear in any output "
                                     "so far. Answer only with values your code printed or computed.")
                        run.final = None
                    outputs.append(f"[block {index}]\n{result.text()}" if len(blocks) > 1 else result.text())
                    notes += self._block_notes(block, result)
                    if run.final is not None:
                        run.final_source = "FINAL() in code"
                        break
                if it_span is not None:
                    it_span.set(reply=reply, code_blocks=len(blocks), final=run.final)
                if run.final is not None:
                    return
                if self._textual_final(run, worker, reply, blocks, outputs, notes, rejected_early):
                    return
                if not blocks and parsing.find_final(reply) is not None and not run.code_ran:
                    rejected_early = True
                    run.messages.append({"role": "user", "content": prompting.render("too_early")})
                elif not blocks:
                    run.messages.append({"role": "user", "content": prompting.render("no_code")})
                else:
                    note_text = "".join(f"Note: {n}\n" for n in notes)
                    run.messages.append({"role": "user", "content": prompting.render(
                        "next_user", output="\n\n".join(outputs), notes=note_text, turn=turn + 1,
                        max_turns=self.max_iterations, question=run.task.question,
                        key_words=", ".join(repr(w) for w in prompting.key_words(run.task.question)),
                        hint=prompting.render("hint_subcalls") + "\n" if self.sub_calls_allowed else "")})

    def _textual_final(self, run: RunState, worker: PythonWorker, reply: str, blocks: list[parsing.CodeBlock],
                       outputs: list[str], notes: list[str], rejected_early: bool) -> bool:
        """Honour FINAL(...)/FINAL_VAR(name) written as text. True if the run is done."""
        final = parsing.find_final(reply)
        if final is None:
            return False
        if final.kind == "var":
            result = worker.execute(f"print(str({final.value}))")
            if result.ok:
                run.final, run.final_source = result.stdout.rstrip("\n"), "FINAL_VAR text"
                return True
            notes.append(f"FINAL_VAR({final.value}) failed: {result.error}. Use the name of an existing variable.")
            return False
        if not blocks and (run.code_ran or rejected_early):
            run.final, run.final_source = final.value, "FINAL text"
            return True
        run.budget.offer(final.value)
        if blocks:
            # A small model often writes code *and* a guessed FINAL before seeing the output; keep it only if the
            # output it had not seen yet agrees with it.
            if final.value and any(final.value in out for out in outputs):
                run.final, run.final_source = final.value, "FINAL text (matches output)"
                return True
            notes.append("Your FINAL(...) was ignored because you wrote it before seeing the output above. "
                         "Check the output, then answer.")
        return False

    def _run_block(self, run: RunState, worker: PythonWorker, block: parsing.CodeBlock, index: int) -> BlockResult:
        with span("repl_block", f"block {index}", depth=self.depth, code=block.code, repaired=block.repaired,
                  unfenced=block.unfenced) as block_span:
            result = worker.execute(block.code)
            run.blocks += 1
            run.code_ran = True
            run.errors += 0 if result.ok else 1
            run.seen += result.text().replace("FINAL answer recorded.", "") + "\n"
            if block_span is not None:
                block_span.set(output=result.text()[:4000], error=result.error, timed_out=result.timed_out,
                               crashed=result.crashed, state_lost=result.state_lost, block_seconds=result.seconds)
        run.budget.check()
        return result

    @staticmethod
    def _grounded(run: RunState, block: parsing.CodeBlock) -> bool:
        """A short number or id typed into FINAL's code must repeat one an output showed (no guessed literals).

        Anything else (a name, a phrase, a summary) may be paraphrased, so it is not checked.
        """
        value = (run.final or "").strip().lower()
        if not value or value not in block.code.lower() or not _LITERAL.fullmatch(value):
            return True   # computed in code (FINAL(total)), or not a literal that must be copied
        # As a whole token: "83" inside "1983" is not a sighting.
        shown = re.compile(r"(?<![\w.])" + re.escape(value) + r"(?![\w])")
        return bool(shown.search(run.seen.lower()) or shown.search(run.task.question.lower()))

    @staticmethod
    def _block_notes(block: parsing.CodeBlock, result: BlockResult) -> list[str]:
        notes = []
        if block.unfenced:
            notes.append("your code was not inside a ```repl block; it ran anyway, but please use ```repl fences.")
        if block.repaired:
            notes.append(f"your code had a syntax problem; I {block.repaired} and ran the rest.")
        if result.error and result.error.startswith("SyntaxError"):
            notes.append("fix the SyntaxError: write plain Python, one statement per line, no prose in the code.")
        return notes

    # ---- model calls -------------------------------------------------------------------------------
    def _root_call(self, run: RunState, charge_iteration: bool, resample: str | None = None,
                   extra: Conversation | None = None) -> str:
        limit = min(self.history_tokens, self.model.context_window - self.sampling.max_tokens - 64)
        messages = fit_history(run.messages + (extra or []), self.model, limit)
        completion = self.model.generate([messages], self.sampling)[0]
        if resample is not None and completion.text.strip() == resample.strip():
            # Greedy decoding of a small model repeats itself; one sampled retry breaks the loop.
            run.root.add([completion])
            retry = Sampling(max_tokens=self.sampling.max_tokens, temperature=0.7, stop=self.sampling.stop,
                             seed=run.iterations)
            completion = self.model.generate([messages], retry)[0]
        run.root.add([completion])
        run.budget.charge(tokens=completion.prompt_tokens + completion.completion_tokens, calls=1,
                          iterations=1 if charge_iteration and self.depth == 0 else 0)
        text = completion.text
        if text.count("```") % 2 == 1 and completion.finish_reason == "stop":
            text = text.rstrip() + "\n```"  # the stop sequence ate the closing fence
        return text

    def _sub_generate(self, run: RunState, prompts: list[Any], kind: str) -> list[str]:
        if not isinstance(prompts, list) or not prompts:
            raise ConfigError(f"{kind} needs a non-empty list of prompt strings")
        if len(prompts) > self.config.max_prompts:
            raise ConfigError(f"{kind} got {len(prompts)} prompts; at most {self.config.max_prompts} per call. Keep "
                              "only the lines that meet every plainly written condition of the question first.")
        texts = [p if isinstance(p, str) else json.dumps(p) if isinstance(p, (dict, list)) else str(p)
                 for p in prompts]
        if len(texts) > 1 and len(set(texts)) == 1:   # a list comprehension that forgot to put its item in
            raise ConfigError(f"{kind} got {len(texts)} identical prompts, so every answer would be the same. Put "
                              "each item's own text into its prompt, e.g. [item + '\n\n' + question for item in items]")
        run.budget.check()
        system = prompting.render("sub_system")
        convs = [[{"role": "system", "content": system}, {"role": "user", "content": t}] for t in texts]
        completions: list[Completion] = []
        with span("sub_call", kind, depth=self.depth + 1, prompts=len(texts), chars=sum(map(len, texts)),
                  model=self.sub_model.name) as sub_span:
            try:
                for start in range(0, len(convs), self.max_batch):
                    if start:
                        run.budget.check()
                    completions += self.sub_model.generate(convs[start:start + self.max_batch], self.sub_sampling)
            except BudgetExceeded:
                raise
            except RecursaError as exc:
                raise type(exc)(f"{exc}. Keep each prompt under about {self._current_chunk} characters "
                                "(use chunks()).") from exc
            if sub_span is not None:
                sub_span.set(prompt_tokens=sum(c.prompt_tokens for c in completions),
                             completion_tokens=sum(c.completion_tokens for c in completions),
                             exchanges=traced_exchanges(texts, [c.text for c in completions]))
        run.sub.add(completions)
        run.sub_calls += len(completions)
        with contextlib.suppress(BudgetExceeded):  # paid for: hand the answers over; the loop stops at its next check
            run.budget.charge(tokens=sum(c.prompt_tokens + c.completion_tokens for c in completions),
                              calls=len(completions))
        return [c.text for c in completions]

    def _rlm_query(self, run: RunState, prompt: str, context: Any = None) -> str:
        if self.depth + 1 >= self.max_depth:  # deepest level: a plain model call, as in the paper
            text = prompt if context is None else f"{prompt}\n\n{prompting.context_text(context)}"
            return self._sub_generate(run, [text], "rlm_query->llm_query")[0]
        config = self.config.model_copy(update={"max_iterations": max(3, self.max_iterations // 2)})
        child = RecursiveLM(self.model, config, sub_model=self.sub_model, budget=run.budget.child(),
                            depth=self.depth + 1)
        with span("sub_call", "rlm_query", depth=self.depth + 1) as sub_span:
            answer = child.solve(Task(id=f"{run.task.id}/child{len(run.children) + 1}", question=prompt,
                                      context=context if context is not None else prompt))
            if sub_span is not None:
                sub_span.set(exchanges=traced_exchanges([prompt], [answer.text]))
        run.children.append(answer)
        run.sub_calls += 1
        return answer.text

    # ---- worker and answers ------------------------------------------------------------------------
    @contextlib.contextmanager
    def open_repl(self, context: Any, *, chunk_chars: int | None = None, budget: Budget | None = None,
                  question: str = "") -> Iterator[Repl]:
        """The sandboxed REPL a solve() works in, holding `context`, with the same helpers and model callbacks.

        For code that drives the REPL itself (tools, benchmarks); closes the worker on exit.
        """
        task = Task("repl", question or "(code run directly)", context=context)
        run = RunState(task, budget or Budget(max_depth=self.max_depth))
        chunk = chunk_chars or prompting.chunk_chars(self.sub_model, prompting.context_text(context)[:4000],
                                                     self.max_chunk_tokens, self.sub_sampling.max_tokens)
        with self._worker(run, context, chunk) as worker:
            yield Repl(worker, run)

    def _worker(self, run: RunState, context: Any, chunk: int) -> PythonWorker:
        self._current_chunk = chunk
        files = {"context.txt": context} if isinstance(context, str) else {"context.json": json.dumps(context)}
        helpers = resources.files("recursa.methods.rlm").joinpath("repl_helpers.py").read_text(encoding="utf-8")

        def final(answer: Any) -> str:
            run.final = str(answer)
            run.budget.offer(run.final)
            return "ok"

        callbacks: dict[str, Any] = {"_final": final}
        if self.sub_calls_allowed:
            callbacks["llm_query"] = lambda prompt, model=None: self._sub_generate(run, [prompt], "llm_query")[0]
            callbacks["llm_query_batched"] = lambda prompts, model=None: self._sub_generate(
                run, prompts, "llm_query_batched")
            callbacks["rlm_query"] = lambda prompt, context=None: self._rlm_query(run, prompt, context)
        return PythonWorker(timeout=self.block_timeout, memory_mb=self.memory_mb,
                            max_output_chars=self.max_output_chars, files=files,
                            setup_code=f"_chunk_chars = {chunk}\n{helpers}", callbacks=callbacks)

    def _last_answer(self, run: RunState, worker: PythonWorker, allow_call: bool) -> None:
        """No FINAL: take a variable the model marked as its answer, else ask once, else the best offer."""
        if run.final is not None:
            return
        probe = worker.execute(_MARKED_PROBE)
        if probe.ok and probe.stdout.strip():
            run.final, run.final_source = probe.stdout.strip(), "marked variable"
            return
        if allow_call:
            try:
                reply = self._root_call(run, charge_iteration=False, extra=[
                    {"role": "user", "content": prompting.render("final_request")}])
            except BudgetExceeded:
                reply = ""
            final = parsing.find_final(reply)
            text = final.value if final is not None and final.kind == "text" else reply.strip()
            if text:
                run.final, run.final_source = text, "final request"
                return
        if run.budget.root.best_answer:
            run.final, run.final_source = run.budget.root.best_answer, "best offered answer"

    def _answer(self, run: RunState, stopped: str | None, seconds: float) -> Answer:
        agents = [AgentOutput("root", "", run.root.prompt_tokens, run.root.completion_tokens, seconds=seconds,
                              extra={"model_calls": run.root.calls, "depth": self.depth}),
                  AgentOutput("sub", "", run.sub.prompt_tokens, run.sub.completion_tokens,
                              extra={"model_calls": run.sub.calls, "depth": self.depth + 1})]
        for child in run.children:
            agents += [AgentOutput(f"child/{a.role}", a.text, a.prompt_tokens, a.completion_tokens, a.latent_steps,
                                   a.seconds, a.extra) for a in child.agents]
        meta = {"iterations": run.iterations, "code_blocks": run.blocks, "block_errors": run.errors,
                "sub_calls": run.sub_calls, "final_source": run.final_source, "depth": self.depth,
                "max_depth": self.max_depth}
        return Answer(text=run.final or "", method=self.name, agents=agents, seconds=seconds, stopped=stopped,
                      meta=meta)
