"""Typed method configuration: each method declares its options once, with types, defaults and a docstring each.

    class LatentMASConfig(MethodConfig):
        latent_steps: int = Field(4, ge=0)
        \"\"\"Latent steps per non-final agent (m).\"\"\"

The declaration is the single source of truth: the Python API, `recursa run` and `recursa bench` all build a
method's options through `MethodConfig.build`, so an unknown or misspelt option, or a mode outside its `Literal`,
is one `ConfigError` that names the valid choices. Values may arrive as strings (from the CLI or a bench spec);
pydantic's lax mode turns "4" into 4 and "true" into True.
"""

from __future__ import annotations

import difflib
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, ValidationError

from recursa.core.errors import ConfigError

_NULLS = ("none", "null")


class MethodConfig(BaseModel):
    """Base of every method's options. Frozen and strict about names: nothing is silently dropped."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True, validate_default=True)

    @classmethod
    def build(cls, method: str, options: Mapping[str, Any] | None = None) -> Self:
        """Validate `options` for `method`; raise one ConfigError naming what is wrong and what is valid."""
        options = {key.replace("-", "_"): value for key, value in (options or {}).items()}
        unknown = sorted(set(options) - set(cls.model_fields))
        if unknown:
            raise ConfigError(f"{method}: unknown option{'s' if len(unknown) > 1 else ''} "
                              f"{', '.join(_with_hint(name, cls.model_fields) for name in unknown)}; "
                              f"valid options: {', '.join(cls.model_fields)}")
        try:
            return cls(**{key: cls._null(key, value) for key, value in options.items()})
        except ValidationError as exc:
            raise ConfigError(f"{method}: {'; '.join(_explain(cls, error) for error in exc.errors())}") from None

    @classmethod
    def _null(cls, key: str, value: Any) -> Any:
        """'none' from a command line means None, unless the option has a mode literally named "none"."""
        if not (isinstance(value, str) and value.lower() in _NULLS):
            return value
        if "none" in choices(cls.model_fields[key].annotation):
            return value.lower()
        return None

    @classmethod
    def describe(cls) -> list[OptionDoc]:
        """One row per option: what `--help`, the README and error messages show."""
        return [OptionDoc(name, type_name(field.annotation), field.default, field.description or "",
                          choices(field.annotation))
                for name, field in cls.model_fields.items()]


@dataclass(frozen=True)
class OptionDoc:
    name: str
    type: str
    default: Any
    doc: str
    choices: tuple[str, ...]


def choices(annotation: Any) -> tuple[str, ...]:
    """The string values a `Literal[...]` (possibly inside `X | None`) allows; () for other types."""
    if typing.get_origin(annotation) is typing.Literal:
        return tuple(str(value) for value in typing.get_args(annotation))
    found: tuple[str, ...] = ()
    for arg in typing.get_args(annotation):
        found += choices(arg)
    return found


def type_name(annotation: Any) -> str:
    if choices(annotation):
        return " | ".join(choices(annotation))
    return getattr(annotation, "__name__", str(annotation).replace("typing.", ""))


def _with_hint(name: str, valid: Mapping[str, Any]) -> str:
    close = difflib.get_close_matches(name, list(valid), n=1)
    return f"'{name}' (did you mean '{close[0]}'?)" if close else f"'{name}'"


def _explain(cls: type[MethodConfig], error: Any) -> str:
    location = ".".join(str(part) for part in error.get("loc", ())) or "options"
    field = cls.model_fields.get(str(error.get("loc", ("",))[0]))
    allowed = choices(field.annotation) if field is not None else ()
    if allowed:
        close = difflib.get_close_matches(str(error.get("input")), list(allowed), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        return f"{location} must be one of {', '.join(allowed)}, got {error.get('input')!r}{hint}"
    return f"{location}: {error.get('msg', 'invalid')}, got {error.get('input')!r}"
