"""`recursa engine start|stop|status`: a vLLM server managed by Recursa (own venv, loopback, recorded pid/port)."""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.markup import escape

from recursa.console import console, fail
from recursa.core.errors import RecursaError

engine_app = typer.Typer(help="Start, list and stop model engines (vLLM) that serve Recursa over HTTP.",
                         no_args_is_help=True)
KINDS = ("vllm",)


@engine_app.command("start", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def start_command(
    ctx: typer.Context,
    kind: Annotated[str, typer.Argument(help="The engine: vllm.")],
    model: Annotated[str | None, typer.Option(help="Model name or folder (see `recursa models`); default: the "
                                              "embedded model.")] = None,
    port: Annotated[int, typer.Option(help="TCP port.")] = 8011,
    host: Annotated[str, typer.Option(help="Interface (loopback unless you say otherwise).")] = "127.0.0.1",
    device: Annotated[str, typer.Option(help="auto | cpu | cuda: which vLLM build (auto: cuda where an NVIDIA "
                                        "GPU answers).")] = "auto",
    kv_cache_gib: Annotated[float, typer.Option(help="CPU build: GiB of KV cache (VLLM_CPU_KVCACHE_SPACE).")] = 4.0,
    max_model_len: Annotated[int, typer.Option(help="Context length the server accepts.")] = 8192,
    enforce_eager: Annotated[bool, typer.Option(help="Skip torch.compile: starts ~3x faster, decodes slower.")]
    = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the server to answer.")] = 900.0,
) -> None:
    """Start an engine in the background and print its base URL. Arguments after `--` go to vLLM as they are
    (e.g. `-- --tensor-parallel-size 2`)."""
    from recursa.core.config import settings
    from recursa.engine import vllm
    from recursa.engine.install import vllm_build
    from recursa.models import engines, registry

    if kind not in KINDS:
        fail(f"unknown engine '{kind}'; available: {', '.join(KINDS)}")
    try:
        name = registry.canonical_name(model or settings().default_model)
        folder = registry.resolve_path(name)
        if isinstance(folder, str):
            fail(f"model '{name}' is not on disk; engines load local folders (see `recursa models`)")
        taken = next((r for r in engines.records() if r.port == port and engines.is_alive(r.pid)), None)
        if taken is not None:
            fail(f"port {port} already serves {taken.model} (pid {taken.pid}); `recursa engine stop --port {port}` "
                 "or choose another --port")
        options = vllm.VllmOptions(port=port, host=host, kv_cache_gib=kv_cache_gib, max_model_len=max_model_len,
                                   enforce_eager=enforce_eager, start_timeout=timeout, extra_args=list(ctx.args))
        record = vllm.start(vllm_build(device), folder, name, options,
                            say=lambda line: console.print(escape(line)))
    except RecursaError as exc:
        fail(str(exc))
        return
    print(record.base_url)


@engine_app.command("stop")
def stop_command(port: Annotated[int | None, typer.Option(help="Only the engine on this port.")] = None) -> None:
    """Stop the engines Recursa started (all of them, or the one on --port)."""
    from recursa.engine import vllm
    from recursa.models import engines

    chosen = [r for r in engines.records() if port is None or r.port == port]
    if not chosen:
        console.print("no engine is running" + (f" on port {port}" if port is not None else ""))
        return
    for record in chosen:
        vllm.stop(record)
        console.print(f"stopped {record.kind} on port {record.port} (pid {record.pid}, {escape(record.model)})")


@engine_app.command("status")
def status_command() -> None:
    """The engines Recursa started: model, base URL, pid, uptime, health (dead ones are forgotten)."""
    from recursa.engine import vllm
    from recursa.models import engines

    rows = [(r, vllm.status(r)) for r in engines.records()]
    if not rows:
        console.print("no engine is running; start one with `recursa engine start vllm`")
        return
    for record, health in rows:   # one plain line each (no table: scripts read it, and URLs must not wrap)
        print(f"{record.kind}\t{record.model}\t{record.base_url}\tpid {record.pid}\t"
              f"up {(time.time() - record.started_at) / 60:.0f} min\t{health}\tlog {record.log}")
