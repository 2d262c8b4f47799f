"""Which torch device and dtype a local model runs on: auto | cpu | cuda | cuda:N | mps; bf16 where supported."""

from __future__ import annotations

import torch

from recursa.core.errors import ConfigError

DTYPES = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16,
          "float32": torch.float32, "fp32": torch.float32}


def resolve_device(name: str | None) -> torch.device:
    """`auto` (or None) picks CUDA, then MPS, then the CPU; an explicit device must exist here."""
    name = (name or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        return torch.device("mps" if mps is not None and mps.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"unknown device '{name}'; use auto, cpu, cuda, cuda:N or mps") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device '{name}' asked for, but this torch build sees no CUDA GPU; use cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"device '{name}' does not exist: {torch.cuda.device_count()} CUDA device(s) here")
    elif device.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ConfigError("device 'mps' asked for, but Apple's Metal backend is not available here")
    elif device.type != "cpu":
        raise ConfigError(f"unsupported device '{name}'; use auto, cpu, cuda, cuda:N or mps")
    return device


def supports_bf16(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type in ("cpu", "mps")


def resolve_dtype(name: str | None, device: torch.device) -> torch.dtype:
    """`auto`: bf16 where the device supports it, else fp16 on GPUs and fp32 elsewhere."""
    name = (name or "auto").strip().lower()
    if name == "auto":
        if supports_bf16(device):
            return torch.bfloat16
        return torch.float16 if device.type == "cuda" else torch.float32
    if name not in DTYPES:
        raise ConfigError(f"unknown dtype '{name}'; use auto, {', '.join(DTYPES)}")
    return DTYPES[name]
