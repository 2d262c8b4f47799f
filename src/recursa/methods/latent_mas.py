"""`latent-mas`: agents collaborate through a shared KV working memory instead of text (LatentMAS, arXiv 2511.20639).

One white-box model plays every role of a team (`recursa/prompts/<pattern>.yaml`: the roles of `text-mas`, in
their `latent_instruction` wording by default, since a text format asked of an agent that writes no text was
copied by the final agent; `prompts=shared` uses text-mas's wording).
Each non-final agent prefills its prompt on top of the shared working memory and thinks for m latent steps
(`latent/rollout.py`); it never emits a token. The final agent prefills its prompt on top of everything and is
the only one that decodes text. A batch of tasks runs through one batched working memory; every row is
independent of the others (left padding, per-row mask and positions).

    planner ─┐ prefill + m latent steps ─▶ critic ─▶ refiner ─▶ judger: prefill + decode → answer text
             └────────────── one SequenceState (KV cache [B, T]) grows by L_i + m per agent ──────────────┘

`decoder=vllm`: the latent rollouts stay here; the final agent's decode goes to a vLLM server as `prompt_embeds`,
every input that built the row's memory plus the final prompt (`latent/replay.py`), so the server rebuilds the
same cache and decodes what the local model would (at its own speed, batched with other requests).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Literal, get_args

from pydantic import Field, model_validator

from recursa.core.budget import Budget
from recursa.core.errors import ConfigError
from recursa.core.trace import record_latent, span
from recursa.latent.modes import DEFAULT_RIDGE, REALIGN_MODES, REPLAYABLE_TRANSFERS, TRANSFER_MODES
from recursa.methods.base import AgentOutput, Answer, MethodBase, Task, register
from recursa.methods.prompts import Team, answer_format_of, load_team
from recursa.methods.single import SamplingOptions
from recursa.methods.text_mas import Pattern
from recursa.models.base import Completion, LatentModel, missing_latent_methods

if TYPE_CHECKING:       # torch loads when a team runs, not when the CLI reads the config's options
    from recursa.latent.align import Aligner
    from recursa.latent.replay import InputTape
    from recursa.models.state import SequenceState

# How agents' prompts sit in the shared memory. "conversation": one transcript, each later agent's prompt is a new
# user turn after the previous agent's (latent) assistant turn, closed by the template's end-of-turn. "stacked":
# every agent starts a fresh chat (system + user + open assistant turn) after the previous latents, never closing
# them (upstream LatentMAS's layout; the small models we ship tend to end the final turn at once after it).
Layout = Literal["conversation", "stacked"]
Realign = Literal["none", "norm", "ridge", "ridge+norm", "soft"]
Transfer = Literal["full", "latent-only", "own-only", "none"]
Prompts = Literal["shared", "latent"]
Preset = Literal["ours", "paper"]
Decoder = Literal["local", "vllm"]
assert get_args(Realign) == REALIGN_MODES and get_args(Transfer) == TRANSFER_MODES

# Named configurations; options given explicitly win over their preset's values.
# "paper": the official code (Gen-Verse/LatentMAS) as published: ridge W_a + norm rescale, a fresh chat per agent,
# the whole cache handed on, m = 10 (its CLI default when the paper appeared; the later default 0 drops the
# cache, i.e. is a single agent) and role prompts written for text agents (the critic is asked for a format).
# Sampling is not part of a preset: benchmarks decode every method alike.
PRESETS: dict[str, dict[str, Any]] = {
    "ours": {"latent_steps": 4, "realign": "soft", "layout": "conversation", "transfer": "full", "prompts": "latent"},
    "paper": {"latent_steps": 10, "realign": "ridge+norm", "layout": "stacked", "transfer": "full",
              "prompts": "shared"},
}


class LatentMASConfig(SamplingOptions):
    """`latent-mas`: agents of one model think in latent steps on a shared KV working memory."""

    preset: Preset | None = None
    """Named configuration: ours (the defaults) or paper (the official code's); explicit options win."""
    latent_steps: int = Field(4, ge=0)
    """Latent steps per non-final agent (m); 0 hands on only the prompts' cache."""
    realign: Realign = "soft"
    """How a last hidden state becomes the next input embedding: the paper's maps or `soft` (ours)."""
    transfer: Transfer = "full"
    """What the next agent sees of the working memory."""
    pattern: Pattern = "sequential"
    """Team: sequential (planner → critic → refiner → judger) or hierarchical (experts → summarizer)."""
    layout: Layout = "conversation"
    """conversation: agents' turns in one transcript; stacked: a fresh chat per agent (as upstream)."""
    ridge: float = Field(DEFAULT_RIDGE, gt=0)
    """Ridge regulariser of the ridge maps."""
    prompts: Prompts = "latent"
    """Role prompts: latent (written for agents that think in latent steps) or shared (text-mas's, word for word)."""
    gist: bool | None = None
    """Read each thought back as the LM head's top token (default: on with soft, which computes it anyway)."""
    decoder: Decoder = "local"
    """Final agent's decode: local (from the handed-over cache) or vllm (its inputs replayed as prompt_embeds)."""
    decoder_url: str | None = None
    """decoder=vllm: the server's base URL (default: the `recursa engine` that serves this model)."""

    @model_validator(mode="after")
    def _replayable(self) -> LatentMASConfig:
        # ConfigError, not ValueError: pydantic passes it through whole (a ValueError on a Literal field would be
        # reported as a bad choice)
        if self.decoder == "vllm" and self.transfer not in REPLAYABLE_TRANSFERS:
            raise ConfigError(f"latent-mas: decoder=vllm replays the memory's inputs, which rebuilds it only with "
                              f"transfer {' or '.join(REPLAYABLE_TRANSFERS)}, not {self.transfer}")
        return self

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        """Fill the options a preset names, except those given explicitly."""
        if not isinstance(data, dict) or data.get("preset") is None:
            return data
        values = PRESETS.get(str(data["preset"]))
        if values is None:   # let the Literal report the bad name with its choices
            return data
        return {**values, **data}


@register
class LatentMAS(MethodBase):
    """Agents collaborate through a shared KV working memory; only the final agent decodes text."""

    name = "latent-mas"
    Config = LatentMASConfig

    def __init__(self, model: LatentModel, config: LatentMASConfig | None = None, *, budget: Budget | None = None,
                 **options: Any):
        missing = missing_latent_methods(model)
        if missing:
            raise ConfigError(f"latent-mas needs a white-box local model (hidden states and KV cache); "
                              f"{getattr(model, 'name', model)!s} lacks {', '.join(missing)}: use --backend local")
        super().__init__(model, config, budget=budget, **options)
        cfg = self.config
        self.latent_steps, self.realign, self.ridge = cfg.latent_steps, cfg.realign, cfg.ridge
        self.transfer, self.layout = cfg.transfer, cfg.layout
        # Each thought's top token, decoded into the agent's record and trace: free with soft realignment (it runs
        # the LM head anyway); other modes pay one head matmul per step for it, so there it is asked for.
        self.gist = cfg.realign == "soft" if cfg.gist is None else cfg.gist
        self.team: Team = load_team(cfg.pattern)
        self.sampling = cfg.sampling()
        self._aligner: Aligner | None = None
        self._remote: Any = None            # decoder=vllm: the OpenAI-compatible client, made on first use

    @property
    def aligner(self) -> Aligner:
        if self._aligner is None:  # built on first use: the ridge solve costs seconds the first time per model
            from recursa.latent.align import Aligner

            self._aligner = Aligner.for_model(self.model, self.realign, self.ridge)
        return self._aligner

    def _prompt_ids(self, role: Any, tasks: list[Task], context: str, state: SequenceState) -> list[list[int]]:
        latent = self.config.prompts == "latent"
        if self.layout == "conversation" and state.length > 0:
            return [self.model.followup_ids(role.user_prompt(t.question, answer_format_of(t.meta), context, latent))
                    for t in tasks]
        return [self.model.chat_ids(role.messages(t.question, answer_format_of(t.meta), context, latent))
                for t in tasks]

    def build_memory(self, tasks: list[Task], tape: InputTape | None = None
                     ) -> tuple[SequenceState, list[list[AgentOutput]]]:
        """Run every non-final agent: the working memory the final agent reads, and each task's agent records.
        `tape` also keeps every input that went into the memory (for a decoder elsewhere)."""
        state = self.model.new_state(len(tasks))
        agents: list[list[AgentOutput]] = [[] for _ in tasks]
        for role in self.team.workers:
            state = self._think(role, tasks, state, agents, tape)
        return state, agents

    def final_prompt_ids(self, tasks: list[Task], state: SequenceState) -> list[list[int]]:
        """The final agent's prompt tokens, to be prefilled on top of `state`."""
        context = self.team.latent_note if state.length > 0 else ""
        return self._prompt_ids(self.team.final, tasks, context, state)

    def solve_batch(self, tasks: list[Task]) -> list[Answer]:
        if not tasks:
            return []
        from recursa.latent.replay import InputTape

        started = time.perf_counter()
        tape = InputTape(self.model, len(tasks)) if self.config.decoder == "vllm" else None
        state, agents = self.build_memory(tasks, tape)
        completions, decode_seconds, memory = self._answer(tasks, state, tape)
        seconds = (time.perf_counter() - started) / len(tasks)
        meta = {"preset": self.config.preset, "pattern": self.team.pattern, "latent_steps": self.latent_steps,
                "realign": self.realign, "transfer": self.transfer, "layout": self.layout,
                "prompts": self.config.prompts}
        answers = []
        for row, completion in enumerate(completions):
            agents[row].append(AgentOutput(
                self.team.final.name, completion.text, completion.prompt_tokens, completion.completion_tokens, 0,
                decode_seconds / len(tasks),
                extra={"memory_length": memory["length"], "memory_positions": int(memory["positions"][row]),
                       "memory_bytes": memory["bytes"] // len(tasks),
                       "finish_reason": completion.finish_reason, "model_calls": 1}))
            answers.append(Answer(text=completion.text, method=self.name, agents=agents[row], seconds=seconds,
                                  meta=dict(meta)))
        return answers

    def _think(self, role: Any, tasks: list[Task], state: SequenceState, agents: list[list[AgentOutput]],
               tape: InputTape | None = None) -> SequenceState:
        """One non-final agent: prefill its prompt on `state`, take m latent steps, record it; the state handed on."""
        from recursa.latent.rollout import hand_over, latent_rollout

        model, steps, batch = self.model, self.latent_steps, len(tasks)
        # Tell an agent about the latent memory only when it reads context and there is memory to read.
        context = self.team.latent_note if role.receives_context and state.length > 0 else ""
        ids = self._prompt_ids(role, tasks, context, state)
        with span("agent", role.name, method=self.name, batch_size=batch, latent_steps=steps,
                  transfer=self.transfer, realign=self.realign) as agent_span:
            rollout = latent_rollout(model, state, ids, steps, self.aligner, gist=self.gist,
                                     keep_latents=tape is not None)
            if tape is not None:
                tape.add_tokens(ids)
                if rollout.input_embeds is not None:
                    tape.add_latents(rollout.input_embeds)
                tape.hand_over(self.transfer)
            gists = [model.detokenize(row) for row in rollout.thought_tokens] if rollout.thought_tokens else None
            cache_bytes = state.nbytes()
            figures = dict(cache_length=state.length, cache_bytes=cache_bytes,
                           prefill_seconds=round(rollout.prefill_seconds, 4),
                           latent_seconds=round(rollout.latent_seconds, 4))
            record_latent(model.name, rollout.prefill_seconds + rollout.latent_seconds, latent_steps=steps * batch,
                          prompt_tokens=sum(rollout.prompt_tokens), model_calls=batch, agent=role.name,
                          batch_size=batch, **figures)
            state = hand_over(model, state, rollout, self.transfer)
            if agent_span is not None:
                agent_span.set(prompt_tokens=sum(rollout.prompt_tokens), handed_on_length=state.length, **figures,
                               **({"latent_gist": gists} if gists else {}))
        seconds = (rollout.prefill_seconds + rollout.latent_seconds) / batch
        for row, task_agents in enumerate(agents):
            task_agents.append(AgentOutput(
                role.name, "", rollout.prompt_tokens[row], 0, steps, seconds,
                extra={**figures, "cache_bytes": cache_bytes // batch, "handed_on_length": state.length,
                       "agent_positions": rollout.prompt_tokens[row] + steps, "model_calls": 1,
                       **({"latent_gist": gists[row]} if gists else {})}))
        if self.budget is not None:
            self.budget.charge(tokens=sum(rollout.prompt_tokens), calls=batch)
        return state

    def _answer(self, tasks: list[Task], state: SequenceState, tape: InputTape | None = None
                ) -> tuple[list[Completion], float, dict[str, Any]]:
        """The final agent prefills its prompt on the memory and decodes (here, or from `tape` on the remote
        decoder); consumes `state`."""
        batch = len(tasks)
        ids = self.final_prompt_ids(tasks, state)
        memory = {"length": state.length, "bytes": state.nbytes(),   # what the final agent reads
                  "positions": state.real_positions()}               # [B] real (unpadded) positions per row
        with span("agent", self.team.final.name, method=self.name, batch_size=batch, final=True,
                  cache_length=memory["length"], cache_bytes=memory["bytes"]) as final_span:
            began = time.perf_counter()
            if tape is None:
                completions = self.model.decode(state, ids, self.sampling)
            else:
                tape.add_tokens(ids)        # the server rebuilds the memory from its inputs
                completions = self.remote_decoder().complete_embeds(
                    tape.sequences(), self.sampling, stop_token_ids=sorted(getattr(self.model, "eos_set", ())))
            decode_seconds = time.perf_counter() - began
            if final_span is not None:
                final_span.set(prompt_tokens=sum(c.prompt_tokens for c in completions),
                               completion_tokens=sum(c.completion_tokens for c in completions))
        if self.budget is not None:
            self.budget.charge(tokens=sum(c.prompt_tokens + c.completion_tokens for c in completions), calls=batch)
        return completions, decode_seconds, memory

    def remote_decoder(self) -> Any:
        """decoder=vllm: the client of the server that decodes (`decoder_url`, else the running `recursa engine`
        that serves this model)."""
        if self._remote is None:
            from recursa.models import engines
            from recursa.models.openai_compat import OpenAIChatModel

            url = self.config.decoder_url
            if url is None:
                running = engines.find_running(self.model.name)
                if running is None:
                    raise ConfigError(f"latent-mas decoder=vllm: no running vLLM engine serves {self.model.name}; "
                                      f"start one with `recursa engine start vllm --model {self.model.name}` or "
                                      "give decoder_url")
                url = running.base_url
            self._remote = OpenAIChatModel(self.model.name, base_url=url)
        return self._remote
