"""Role prompts as data: `recursa/prompts/<pattern>.yaml` → a `Team` of `Role`s.

Text and latent methods share these prompts, so a comparison between them isolates the channel. A role's
instruction template has three placeholders, replaced literally (so `\\boxed{}` needs no escaping):
`{question}`, `{answer_format}` (the task kind's answer instructions from `answer_formats.yaml`) and `{context}`
(what the earlier agents did: `Team.text_context(...)` for text hand-offs, `Team.latent_note` when their work
is in the KV cache, or "" for none). A role may also carry a `latent_instruction`, written for agents that think
in latent steps (no output format to restate); `latent-mas[prompts=latent]` uses it.

    team = load_team("sequential")
    conv = team.roles[0].messages(task.question, answer_format="math")
    conv = judger.messages(q, "math", context=team.text_context([(planner, text1), (critic, text2)]))
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache, lru_cache
from importlib import resources
from typing import Any

import yaml

from recursa.core.errors import ConfigError
from recursa.models.base import Conversation

_PLACEHOLDER = re.compile(r"\{(question|context|answer_format|entries|label|text)\}")


def fill(template: str, **values: str) -> str:
    """Replace `{name}` placeholders in one pass (values are never re-scanned; other braces stay as they are)."""
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)] if m.group(1) in values else m.group(0), template)


@dataclass(frozen=True)
class Role:
    name: str                 # machine name, e.g. "planner"
    label: str                # how other agents see it, e.g. "Planner"
    system: str
    instruction: str          # template: {question} {answer_format} {context}
    receives_context: bool = False  # in the text pattern, does it read the earlier agents' work?
    final: bool = False       # the role whose text is the team's answer
    latent_instruction: str = ""  # optional template for agents whose work is handed on as latents, not text

    def user_prompt(self, question: str, answer_format: str = "math", context: str = "",
                    latent: bool = False) -> str:
        """The filled instruction; `latent` picks `latent_instruction` where the role has one."""
        template = self.latent_instruction if latent and self.latent_instruction else self.instruction
        return fill(template, question=question.strip(), answer_format=answer_format_text(answer_format),
                    context=context).strip()

    def messages(self, question: str, answer_format: str = "math", context: str = "",
                 latent: bool = False) -> Conversation:
        return [{"role": "system", "content": self.system},
                {"role": "user", "content": self.user_prompt(question, answer_format, context, latent)}]


@dataclass(frozen=True)
class Team:
    pattern: str
    roles: tuple[Role, ...]
    entry_template: str = "[{label}]:\n{text}"
    text_template: str = "{entries}\n\n"
    latent_note: str = ""

    @property
    def final(self) -> Role:
        return next(r for r in self.roles if r.final)

    @property
    def workers(self) -> tuple[Role, ...]:
        """Every role except the final one (the agents whose work is handed on)."""
        return tuple(r for r in self.roles if not r.final)

    def text_context(self, outputs: list[tuple[Role, str]], max_chars: int | None = None) -> str:
        """The `{context}` block for text hand-offs: each earlier agent's output under its label."""
        if not outputs:
            return ""
        entries = "\n\n".join(fill(self.entry_template, label=role.label, text=text.strip()) for role, text in outputs)
        if max_chars is not None and len(entries) > max_chars:
            entries = entries[-max_chars:]  # keep the latest work; the oldest is dropped first
        return _as_block(fill(self.text_template, entries=entries))


def _read_yaml(filename: str) -> dict[str, Any]:
    try:
        text = resources.files("recursa.prompts").joinpath(filename).read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"prompt file recursa/prompts/{filename} not found; patterns: {', '.join(patterns())}") \
            from exc
    data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ConfigError(f"recursa/prompts/{filename} must hold a mapping")
    return data


def patterns() -> list[str]:
    names = [p.name for p in resources.files("recursa.prompts").iterdir() if p.name.endswith(".yaml")]
    return sorted(n.removesuffix(".yaml") for n in names if n != "answer_formats.yaml")


@cache
def load_team(pattern: str) -> Team:
    """The roles of `pattern` ("single", "sequential", "hierarchical") in the order they act."""
    if pattern not in patterns():
        raise ConfigError(f"unknown prompt pattern '{pattern}'; available: {', '.join(patterns())}")
    data = _read_yaml(f"{pattern}.yaml")
    system = data.get("system", "You are a helpful assistant.")
    roles = []
    for i, raw in enumerate(data.get("roles") or []):
        try:
            roles.append(Role(name=raw["name"], label=raw.get("label", raw["name"]), system=raw.get("system", system),
                              instruction=raw["instruction"], receives_context=bool(raw.get("receives_context")),
                              final=bool(raw.get("final")), latent_instruction=raw.get("latent_instruction", "")))
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"recursa/prompts/{pattern}.yaml role #{i + 1} needs 'name' and 'instruction'") from exc
    if not roles:
        raise ConfigError(f"recursa/prompts/{pattern}.yaml defines no roles")
    if not any(r.final for r in roles):  # a one-role pattern (single): that role answers
        roles[-1] = Role(**{**roles[-1].__dict__, "final": True})
    context = data.get("context") or {}
    return Team(pattern=pattern, roles=tuple(roles), entry_template=context.get("entry", Team.entry_template),
                text_template=context.get("text", Team.text_template),
                latent_note=_as_block(context.get("latent", "")))


def _as_block(text: str) -> str:
    """A context block is followed by one blank line, so templates can write `{context}Question: ...`."""
    return text.strip() + "\n\n" if text.strip() else ""


def load_roles(pattern: str) -> list[Role]:
    return list(load_team(pattern).roles)


@lru_cache(maxsize=1)
def _answer_formats() -> dict[str, str]:
    return {str(k): str(v).strip() for k, v in _read_yaml("answer_formats.yaml").items()}


def answer_format_text(kind: str) -> str:
    formats = _answer_formats()
    if kind not in formats:
        raise ConfigError(f"unknown answer format '{kind}'; available: {', '.join(sorted(formats))}")
    return formats[kind]


def answer_format_of(meta: dict[str, Any]) -> str:
    """The answer format a task asks for (Task.meta["answer_format"], default "math")."""
    return str(meta.get("answer_format") or "math")
