"""Settings read from `RECURSA_*` environment variables (pydantic-settings)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from platformdirs import user_cache_dir
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RECURSA_", extra="ignore")

    home: Path = Field(default_factory=lambda: Path(user_cache_dir("recursa")),
                       description="Cache for converted models, realignment matrices and data sets.")
    runs_dir: Path = Field(default=Path("runs"), description="Where trace files and bench results go.")
    default_model: str = "qwen2.5-coder-0.5b"
    threads: int | None = Field(default=None, description="torch threads; default: all cores.")
    device: str = Field(default="auto", description="Local models' device: auto (CUDA, then MPS, then CPU), cpu, "
                        "cuda, cuda:N or mps.")
    attention: Literal["eager", "grouped", "sdpa"] = Field(
        default="grouped", description="local attention: grouped (default: eager's arithmetic without copying the "
        "key/value heads; faster batched decode on long caches); eager (transformers' own); sdpa (torch's fused "
        "kernel, faster long prefills, but its rounding depends on the padding, so a row's tokens can change with "
        "its batch beyond rounding ties). Measurements: bench/results/.")
    weights: Literal["auto", "int8"] = Field(
        default="auto", description="local weights: auto (the model's dtype, bf16 on CPU) or int8 (weight-only, per "
        "channel, quantised once and cached under RECURSA_HOME/int8; reads half the bytes per decode step).")
    prefix_cache_tokens: int = Field(
        default=256, ge=0, description="local backend: a single-row request whose prompt shares at least this many "
        "tokens with the previous one reuses that prompt's KV cache (0 = off).")
    otel: bool = Field(default=False, description="Also export trace events to OpenTelemetry.")
    allow_unsandboxed: bool = Field(default=False,
                                    description="Run model-written code without bubblewrap isolation.")

    @property
    def models_dir(self) -> Path:
        return self.home / "models"


@lru_cache(maxsize=1)
def settings() -> Settings:
    return Settings()
