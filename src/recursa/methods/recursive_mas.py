"""`recursive-mas`: different models in a recursive loop, joined by trained latent links (RecursiveMAS, arXiv
2604.25917); and `recursive-text-mas`, the same agents, rounds and slots with text in them (its main baseline).

One round of the sequential pattern (a system file names the agents; `methods/recursive_system.py`):

    planner  prompt[ feedback slot ] ─prefill_embeds─▶ m latent steps (inner link) ─▶ H [B, m, a]
                                                     outer(inner(H)) [B, m, b] ──▶ critic's slot ──▶ … ──▶ solver
    solver   round < R: m latent steps → outer link → the planner's feedback slot next round
             round = R: decodes the answer (the only text of the whole run)

Each agent starts a fresh KV cache per round (nothing but the m vectors crosses); its prompt is chat-rendered
text with the incoming latents spliced in at slots, prefilled as embeddings (left padding, per-row masks and
positions: rows of a batch stay independent). Latent steps use the KV cache (one forward per step). Each latent
message is read back as the receiver's nearest input-embedding rows (cosine): what the channel carried.
"""

from __future__ import annotations

import time
from typing import Any, Literal

import torch
from pydantic import Field

from recursa.core.budget import Budget
from recursa.core.errors import ConfigError
from recursa.core.trace import record_latent, span
from recursa.latent.rollout import latent_rollout
from recursa.methods.base import AgentOutput, Answer, MethodBase, Task, register
from recursa.methods.prompts import answer_format_of
from recursa.methods.recursive_system import (
    Message,
    SystemSpec,
    fresh_links,
    load_links,
    load_models,
    load_system,
    role_messages,
    split_at_slots,
)
from recursa.methods.single import SamplingOptions
from recursa.models.base import Completion


class RecursiveOptions(SamplingOptions):
    """Options shared by `recursive-mas` and `recursive-text-mas`."""

    system: str | None = None
    """System file (YAML: agents, models, pattern, links); None: the packaged default system."""
    rounds: int | None = Field(None, ge=1)
    """Rounds R (None: the system file's)."""
    max_tokens: int = Field(384, ge=1)
    """Most tokens each decoding agent generates."""


class RecursiveMASConfig(RecursiveOptions):
    """`recursive-mas`: different models in a loop, passing latent thoughts through trained links."""

    latent_steps: int | None = Field(None, ge=1)
    """Latent steps per agent and round (m; None: the system file's)."""
    links: Literal["trained", "random"] = "trained"
    """trained: the system's link checkpoints; random: untrained links (an ablation of the channel)."""
    readback: bool = True
    """Read each latent message back as the receiver's nearest tokens (trace, `latent_gist`)."""


def nearest_tokens(model: Any, vectors: torch.Tensor, chunk: int = 32768) -> list[list[int]]:
    """[B, m, H] vectors → [B][m] ids of the model's input-embedding rows nearest by cosine."""
    weight = model.input_embedding_matrix()                               # [V, H]
    query = torch.nn.functional.normalize(vectors.float(), dim=-1).to(weight.dtype)
    best = torch.full(vectors.shape[:2], -2.0)
    ids = torch.zeros(vectors.shape[:2], dtype=torch.long)
    for start in range(0, weight.shape[0], chunk):
        rows = weight[start:start + chunk]
        sims = (query @ rows.T).float() / rows.float().norm(dim=-1).clamp(min=1e-6)   # [B, m, chunk]
        value, index = sims.max(dim=-1)
        better = value.cpu() > best
        best = torch.where(better, value.cpu(), best)
        ids = torch.where(better, index.cpu() + start, ids)
    return ids.tolist()


def embed_rows(model: Any, conversations: list[list[dict[str, str]]],
               latents: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[list[int]], list[int]]:
    """Each row's prompt as input embeddings with the latent messages ([B, m, H] each) at its slots.

    → rows [L_b − 1, H] (all but the last prompt token), last token ids [[id]] per row, prompt lengths L_b.
    The last token is prefilled separately, as the rollout's or the decoder's first input."""
    rows, last_ids, lengths = [], [], []
    for b, conversation in enumerate(conversations):
        pieces = split_at_slots(model, conversation)
        if len(pieces) != len(latents) + 1:
            raise ConfigError(f"prompt has {len(pieces) - 1} slots for {len(latents)} latent messages")
        *pieces, last = pieces
        parts = []
        for k, piece in enumerate(pieces):
            parts.append(model.embed(torch.tensor(piece, dtype=torch.long, device=model.device)))
            parts.append(latents[k][b].to(model.device, model.dtype))
        parts.append(model.embed(torch.tensor(last[:-1], dtype=torch.long, device=model.device)))
        rows.append(torch.cat(parts))
        last_ids.append(last[-1:])
        lengths.append(int(rows[-1].shape[0]) + 1)
    return rows, last_ids, lengths


class _RecursiveBase(MethodBase):
    """Loads the system once per instance: its models (reusing the given one) and, for latents, its links."""

    def __init__(self, model: Any, config: Any = None, *, budget: Budget | None = None, **options: Any):
        super().__init__(model, config, budget=budget, **options)
        cfg = self.config
        self.spec: SystemSpec = load_system(cfg.system, rounds=cfg.rounds,
                                            latent_steps=getattr(cfg, "latent_steps", None))
        self.models = load_models(self.spec, model)
        self.sampling = cfg.sampling()

    def _messages(self, task: Task, agent: str, inbox: list[Message]) -> list[dict[str, str]]:
        return role_messages(self.spec.agent(agent).role, task.question, answer_format_of(task.meta), inbox)

    def _deliver(self, sender: str) -> list[tuple[str, str, Message]]:
        """(target, when, message) for each outer edge leaving `sender`."""
        return [(t, when, Message(sender, self.spec.label(sender, feedback=when == "next")))
                for s, t, when in self.spec.edges() if s == sender]

    def _answers(self, tasks: list[Task], completions: list[Completion], agents: list[list[AgentOutput]],
                 started: float) -> list[Answer]:
        if self.budget is not None:
            self.budget.charge(tokens=sum(c.prompt_tokens + c.completion_tokens for c in completions),
                               calls=len(completions))
        seconds = (time.perf_counter() - started) / len(tasks)
        meta = {"system": self.spec.name, "pattern": self.spec.pattern, "rounds": self.spec.rounds,
                "agents": {a.name: a.model for a in self.spec.agents}}
        return [Answer(text=c.text, method=self.name, agents=agents[b], seconds=seconds, meta=dict(meta))
                for b, c in enumerate(completions)]


@register
class RecursiveMAS(_RecursiveBase):
    """Different models in a recursive loop; latent thoughts cross through trained links; one agent decodes."""

    name = "recursive-mas"
    Config = RecursiveMASConfig

    def __init__(self, model: Any, config: RecursiveMASConfig | None = None, *, budget: Budget | None = None,
                 **options: Any):
        super().__init__(model, config, budget=budget, **options)
        links = load_links if self.config.links == "trained" else fresh_links
        self.inner, self.outer = links(self.spec, self.models)
        for link in [*self.inner.values(), *self.outer.values()]:
            link.eval().requires_grad_(False)
        self.final_inputs: tuple[list[torch.Tensor], list[list[int]]] | None = None

    @torch.inference_mode()
    def solve_batch(self, tasks: list[Task]) -> list[Answer]:
        if not tasks:
            return []
        spec, steps, batch = self.spec, self.spec.latent_steps, len(tasks)
        started = time.perf_counter()
        agents: list[list[AgentOutput]] = [[] for _ in tasks]
        inbox: dict[str, list[tuple[Message, torch.Tensor]]] = {a.name: [] for a in spec.agents}
        for round_ in range(1, spec.rounds + 1):
            feedback: dict[str, list[tuple[Message, torch.Tensor]]] = {a.name: [] for a in spec.agents}
            for stage in spec.stages():
                for name in stage:
                    model = self.models[name]
                    convs = [self._messages(t, name, [m for m, _ in inbox[name]]) for t in tasks]
                    rows, last_ids, lengths = embed_rows(model, convs, [lat for _, lat in inbox[name]])
                    state = model.new_state(batch)
                    model.prefill_embeds(state, rows)
                    if round_ == spec.rounds and name == spec.final.name:
                        self.final_inputs = (rows, last_ids)     # what the decoder read (tests check ties on it)
                        return self._decode(tasks, name, state, last_ids, lengths, agents, started)
                    with span("agent", name, method=self.name, round=round_, model=model.name, batch_size=batch,
                              latent_steps=steps) as agent_span:
                        rollout = latent_rollout(model, state, last_ids, steps, self.inner[name], keep_latents=True)
                        gists = self._send(name, rollout.input_embeds, inbox, feedback)
                        record_latent(model.name, rollout.prefill_seconds + rollout.latent_seconds,
                                      latent_steps=steps * batch, prompt_tokens=sum(lengths), model_calls=batch,
                                      agent=name, round=round_, batch_size=batch)
                        if agent_span is not None:
                            agent_span.set(prompt_tokens=sum(lengths), latent_gist=gists)
                    seconds = (rollout.prefill_seconds + rollout.latent_seconds) / batch
                    for b in range(batch):
                        agents[b].append(AgentOutput(name, "", lengths[b], 0, steps, seconds, extra={
                            "round": round_, "model": model.name, "model_calls": 1,
                            "latent_gist": {t: g[b] for t, g in gists.items()}}))
            inbox = feedback
        raise AssertionError("unreachable: the final agent decodes in the last round")

    def _send(self, sender: str, thoughts: torch.Tensor, inbox: dict[str, list[tuple[Message, torch.Tensor]]],
              feedback: dict[str, list[tuple[Message, torch.Tensor]]]) -> dict[str, list[str]]:
        """Map the sender's thoughts inner(H) [B, m, a] through each outer link into its target's inbox; return
        what each target reads in them (nearest tokens per row)."""
        gists: dict[str, list[str]] = {}
        for target, when, message in self._deliver(sender):
            latents = self.outer[(sender, target)](thoughts)                 # [B, m, b] fp32
            (inbox if when == "same" else feedback)[target].append((message, latents))
            if self.config.readback:
                receiver = self.models[target]
                gists[target] = [receiver.detokenize(ids) for ids in nearest_tokens(receiver, latents)]
        return gists

    def _decode(self, tasks: list[Task], name: str, state: Any, last_ids: list[list[int]], lengths: list[int],
                agents: list[list[AgentOutput]], started: float) -> list[Answer]:
        model = self.models[name]
        with span("agent", name, method=self.name, round=self.spec.rounds, model=model.name, final=True,
                  batch_size=len(tasks)) as final_span:
            began = time.perf_counter()
            completions = model.decode(state, last_ids, self.sampling)
            seconds = (time.perf_counter() - began) / len(tasks)
            if final_span is not None:
                final_span.set(completion_tokens=sum(c.completion_tokens for c in completions))
        for b, c in enumerate(completions):
            agents[b].append(AgentOutput(name, c.text, lengths[b], c.completion_tokens, 0, seconds, extra={
                "round": self.spec.rounds, "model": model.name, "finish_reason": c.finish_reason, "model_calls": 1}))
        return self._answers(tasks, completions, agents, started)


class RecursiveTextMASConfig(RecursiveOptions):
    """`recursive-text-mas`: the same agents, rounds and slots as `recursive-mas`, with text in the slots."""


@register
class RecursiveTextMAS(_RecursiveBase):
    """The same agents, rounds and slots as `recursive-mas`, each agent's text in the receivers' slots."""

    name = "recursive-text-mas"
    Config = RecursiveTextMASConfig

    def solve_batch(self, tasks: list[Task]) -> list[Answer]:
        if not tasks:
            return []
        spec, batch = self.spec, len(tasks)
        started = time.perf_counter()
        agents: list[list[AgentOutput]] = [[] for _ in tasks]
        inbox: dict[str, list[list[Message]]] = {a.name: [[] for _ in tasks] for a in spec.agents}
        for round_ in range(1, spec.rounds + 1):
            feedback: dict[str, list[list[Message]]] = {a.name: [[] for _ in tasks] for a in spec.agents}
            for stage in spec.stages():
                for name in stage:
                    model = self.models[name]
                    convs = [self._messages(t, name, inbox[name][b]) for b, t in enumerate(tasks)]
                    with span("agent", name, method=self.name, round=round_, model=model.name, batch_size=batch):
                        began = time.perf_counter()
                        completions = model.generate(convs, self.sampling)
                        seconds = (time.perf_counter() - began) / batch
                    for b, c in enumerate(completions):
                        agents[b].append(AgentOutput(name, c.text, c.prompt_tokens, c.completion_tokens, 0, seconds,
                                                     extra={"round": round_, "model": model.name,
                                                            "finish_reason": c.finish_reason}))
                    if round_ == spec.rounds and name == spec.final.name:
                        return self._answers(tasks, completions, agents, started)
                    for target, when, message in self._deliver(name):
                        box = inbox if when == "same" else feedback
                        for b, c in enumerate(completions):
                            box[target][b].append(Message(message.sender, message.label, c.text))
            inbox = feedback
        raise AssertionError("unreachable: the final agent decodes in the last round")


@torch.inference_mode()
def reprefill_rollout(model: Any, rows: list[torch.Tensor], last_ids: list[list[int]], steps: int,
                      aligner: Any) -> torch.Tensor:
    """The release code's rollout, for comparison: every latent step re-runs the whole growing prefix without a
    KV cache (quadratic in m). Same inputs as `embed_rows` gives; → hidden states h_0..h_{m−1} [B, m, H]."""
    sequences = [torch.cat([row.to(model.dtype), model.embed(torch.tensor(last, device=model.device))])
                 for row, last in zip(rows, last_ids, strict=True)]
    hiddens = []
    for _ in range(steps):
        hidden = model.prefill_embeds(model.new_state(len(rows)), sequences)       # [B, H]
        hiddens.append(hidden)
        fed = aligner(hidden).to(model.dtype)                                      # [B, H]
        sequences = [torch.cat([seq, fed[b:b + 1]]) for b, seq in enumerate(sequences)]
    return torch.stack(hiddens, dim=1)


@torch.inference_mode()
def cached_rollout(model: Any, rows: list[torch.Tensor], last_ids: list[list[int]], steps: int,
                   aligner: Any) -> torch.Tensor:
    """What `recursive-mas` does: prefill once, then one forward per latent step on the KV cache → [B, m, H]."""
    state = model.new_state(len(rows))
    model.prefill_embeds(state, rows)
    return latent_rollout(model, state, last_ids, steps, aligner, keep_latents=True).hidden_states
