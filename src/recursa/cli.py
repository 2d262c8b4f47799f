"""`recursa` command line: run, models, serve, bench, view."""

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

from recursa.console import console, fail
from recursa.core.errors import RecursaError

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # model hubs are unreachable; fail fast instead of retrying
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

app = typer.Typer(help="Multi-agent reasoning with language models.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
models_app = typer.Typer(help="List and prepare models.", invoke_without_command=True)
app.add_typer(models_app, name="models")
from recursa.engine.cli import engine_app  # noqa: E402  (a sub-app of its own module)

app.add_typer(engine_app, name="engine")


def load_chat_model(model: str | None, backend: str = "local", base_url: str | list[str] | None = None,
                    api_key: str | None = None, concurrency: int = 8, device: str | None = None):
    """A ChatModel for the CLI: the local transformers backend or an OpenAI-compatible server."""
    if backend == "local":
        from recursa.models import registry

        return registry.load(model, device=device)
    if backend == "openai":
        from recursa.models.openai_compat import OpenAIChatModel

        if not base_url and not os.environ.get("OPENAI_BASE_URL") and not os.environ.get("OPENAI_API_KEY"):
            fail("--backend openai needs --base-url URL (or OPENAI_BASE_URL / OPENAI_API_KEY)")
        chat = OpenAIChatModel(model=model or "default", base_url=base_url, api_key=api_key,
                               max_concurrency=concurrency)
        if model is None:
            chat.name = _served_model(chat)
        return chat
    fail(f"unknown backend '{backend}'; use 'local' or 'openai'")
    return None


def _served_model(chat) -> str:
    """No --model with --backend openai: the model the server serves, when it serves exactly one."""
    from recursa.core.errors import BackendError

    try:
        served = chat.served_models()
    except BackendError:
        served = []                     # the server lists nothing: let the first request say what is wrong
    if len(served) == 1:
        return served[0]
    if served:
        fail(f"{chat.base_url} serves {len(served)} models; name one with --model: {', '.join(served[:10])}")
    return "default"


def _doc(method: str, option: str) -> str:
    """--help text straight from the method's typed config (one source of truth)."""
    from recursa.methods.base import option_doc

    return f"{method}: {option_doc(method, option)}"


MethodOption = Annotated[str, typer.Option("--method", "-m", help="single | text-mas | latent-mas | rlm | "
                                           "single-truncated")]
# Options shared by several commands (run, bench, serve, demo).
ModelOption = Annotated[str | None, typer.Option(help="Model name, folder or hub id (see `recursa models`).")]
DeviceOption = Annotated[str | None, typer.Option(help="Local model device: auto | cpu | cuda | cuda:N | mps "
                                                  "(default: RECURSA_DEVICE, else auto).")]
BackendOption = Annotated[str, typer.Option(help="local | openai")]
BaseUrlOption = Annotated[str | None, typer.Option(help="OpenAI-compatible server URL (--backend openai); "
                                                  "several replicas: URL1,URL2.")]
BaseUrlsOption = Annotated[list[str] | None, typer.Option(
    "--base-url", help="OpenAI-compatible server URL (--backend openai); repeat it (or URL1,URL2) to spread the "
    "requests over replicas: a failed replica's requests go to another.")]
SetOption = Annotated[list[str] | None, typer.Option(
    "--option", "-o", help="Any option the method declares, as key=value (repeatable); see `recursa methods`.")]
# Method options: None = not given (the method's own default applies); each is validated against the method.
MaxTokensOption = Annotated[int | None, typer.Option(help="Max tokens each decoding agent generates.")]
TemperatureOption = Annotated[float | None, typer.Option(help="0 = greedy.")]
PatternOption = Annotated[str | None, typer.Option(help=_doc("latent-mas", "pattern"))]
LatentStepsOption = Annotated[int | None, typer.Option(help=_doc("latent-mas", "latent_steps"))]
RealignOption = Annotated[str | None, typer.Option(help=_doc("latent-mas", "realign"))]
LayoutOption = Annotated[str | None, typer.Option(help=_doc("latent-mas", "layout"))]
TransferOption = Annotated[str | None, typer.Option(help=_doc("latent-mas", "transfer"))]
DecoderOption = Annotated[str | None, typer.Option(help=_doc("latent-mas", "decoder"))]
MaxDepthOption = Annotated[int | None, typer.Option(help=_doc("rlm", "max_depth"))]
MaxIterationsOption = Annotated[int | None, typer.Option(help=_doc("rlm", "max_iterations"))]


def method_options(flags: dict[str, Any], pairs: list[str] | None) -> dict[str, Any]:
    """The options a user gave: flags that are set, plus `--option key=value` pairs (strings; the method's
    config converts and validates them)."""
    options = {key: value for key, value in flags.items() if value is not None}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            fail(f"--option {pair!r}: write key=value")
        options[key.strip().replace("-", "_")] = value.strip()
    return options


def read_context(context: Path | None) -> Any:
    """--context FILE: text, or the parsed value of a .json file."""
    if context is None:
        return None
    if not context.is_file():
        fail(f"--context {context}: no such file")
    raw = context.read_text(encoding="utf-8", errors="replace")
    if context.suffix != ".json":
        return raw
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        fail(f"--context {context}: invalid JSON ({exc})")
    return None


@app.command()
def run(
    question: Annotated[str, typer.Argument(help="The question or instruction.")],
    method: MethodOption = "single",
    model: ModelOption = None,
    device: DeviceOption = None,
    backend: BackendOption = "local",
    base_url: BaseUrlOption = None,
    option: SetOption = None,
    max_tokens: MaxTokensOption = None,
    temperature: TemperatureOption = None,
    pattern: PatternOption = None,
    latent_steps: LatentStepsOption = None,
    system: Annotated[str | None, typer.Option(help="recursive-mas: system file (YAML); default: the packaged "
                                               "one.")] = None,
    rounds: Annotated[int | None, typer.Option(help="recursive-mas: rounds R.")] = None,
    realign: RealignOption = None,
    transfer: TransferOption = None,
    layout: LayoutOption = None,
    decoder: DecoderOption = None,
    context: Annotated[Path | None, typer.Option(help="rlm: file holding the context (text or JSON).")] = None,
    workspace: Annotated[str | None, typer.Option(help=_doc("aime", "workspace"))] = None,
    knowledge: Annotated[str | None, typer.Option(help=_doc("aime", "knowledge"))] = None,
    resume: Annotated[str | None, typer.Option(help=_doc("aime", "resume"))] = None,
    max_depth: MaxDepthOption = None,
    max_iterations: MaxIterationsOption = None,
    sub_model: Annotated[str | None, typer.Option(help="rlm: model for sub-calls (default: --model).")] = None,
    max_seconds: Annotated[float | None, typer.Option(help="Budget: wall seconds.")] = None,
    max_calls: Annotated[int | None, typer.Option(help="Budget: model calls.")] = None,
    max_total_tokens: Annotated[int | None, typer.Option(help="Budget: prompt + completion tokens.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    runs_dir: Annotated[Path, typer.Option(help="Where the trace goes.")] = Path("runs"),
) -> None:
    """Answer one question with one method."""
    from recursa.core.budget import Budget
    from recursa.methods import base as methods
    from recursa.view.links import note_run

    flags = dict(max_tokens=max_tokens, temperature=temperature, pattern=pattern, latent_steps=latent_steps,
                 realign=realign, transfer=transfer, layout=layout, decoder=decoder, max_depth=max_depth,
                 max_iterations=max_iterations, system=system, rounds=rounds, workspace=workspace,
                 knowledge=knowledge, resume=resume)
    try:
        cls = methods.method_class(method)
        options = method_options(flags, option)
        config = cls.Config.build(method, options)          # fails on a typo before any model loads
        task_context = read_context(context)
        chat_model = load_chat_model(model, backend, base_url, device=device)
        budget = Budget(max_tokens=max_total_tokens, max_calls=max_calls, max_seconds=max_seconds,
                        max_depth=getattr(config, "max_depth", None),
                        max_iterations=getattr(config, "max_iterations", None))
        extra = {"sub_model": load_chat_model(sub_model, backend, base_url, device=device)} if sub_model else {}
        if method == "aime" and not json_out:   # the board, redrawn live as it changes
            from recursa.methods.aime.live import LiveBoard

            extra["display"] = LiveBoard(console)
        answer = cls(chat_model, config, budget=budget, **extra).run(question, context=task_context,
                                                                    runs_dir=runs_dir)
    except RecursaError as exc:
        fail(str(exc))
        return
    _print_answer(answer, method, chat_model.name, json_out)
    if link := note_run(answer):
        console.print(f"view: {link}")


def _print_answer(answer: Any, method: str, model_name: str, json_out: bool) -> None:
    usage = answer.meta.get("usage") or answer.usage
    # latent-mas: each agent's thoughts read as the LM head's top token per step
    gists = {a.role: a.extra["latent_gist"] for a in answer.agents if a.extra.get("latent_gist")}
    result = {"answer": answer.text, "extracted": answer.extracted, "method": method, "model": model_name,
              "usage": usage, "seconds": round(answer.seconds, 3), "trace": answer.trace_path,
              "stopped": answer.stopped, **({"latent_gist": gists} if gists else {})}
    if json_out:
        sys.stdout.write(json.dumps(result) + "\n")
        return
    console.print(f"[bold]{method}[/] on [bold]{escape(model_name)}[/] in {answer.seconds:.1f}s; usage {usage}")
    if answer.stopped:
        console.print(f"[yellow]stopped early:[/] {escape(answer.stopped)}")
    for role, gist in gists.items():
        console.print(f"[dim]{role} thought ≈[/] {escape(repr(gist))}")
    print(answer.text)
    console.print(f"trace: {answer.trace_path}")


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
    weights: Annotated[str | None, typer.Option(help="auto | int8: weight-only int8, quantised once and cached "
                                                "(default: RECURSA_WEIGHTS, else auto).")] = None,
) -> None:
    """Serve a local model over the OpenAI chat-completions API: streaming, and continuous batching (a request joins
    the running batch at the next decode step; one whose client disconnects stops)."""
    from recursa.core.allocator import limit_kernel_cache

    limit_kernel_cache()
    from recursa.server import serve as run_server

    if max_batch < 1:
        fail(f"--max-batch must be >= 1, got {max_batch}")
    try:
        run_server(model, host=host, port=port, max_batch=max_batch, weights=weights)
    except RecursaError as exc:
        fail(str(exc))


@app.command()
def view(
    runs_dir: Annotated[Path | None, typer.Argument(help="Folder of runs and bench folders (default: "
                                                    "RECURSA_RUNS_DIR, else ./runs).")] = None,
    port: Annotated[int, typer.Option(help="TCP port.")] = 8765,
    host: Annotated[str, typer.Option(help="Interface to listen on (loopback unless you say otherwise).")]
    = "127.0.0.1",
) -> None:
    """Browse runs (trace trees, answers, Aime boards) and benchmarks in a local web page."""
    from recursa.core.config import settings
    from recursa.view.server import serve as serve_viewer

    try:
        serve_viewer(runs_dir or settings().runs_dir, host=host, port=port)
    except RecursaError as exc:
        fail(str(exc))


@app.command()
def bench(
    task: Annotated[str, typer.Option(help="gsm8k | gsm-symbolic | humaneval | champ | rg:<generator> | FILE.jsonl")]
    = "gsm8k",
    methods_spec: Annotated[str, typer.Option("--methods", help="Comma-separated method specs, each optionally with "
                                              "options: 'single,text-mas\\[pattern=hierarchical]'.")] = "single",
    limit: Annotated[int | None, typer.Option(help="At most this many problems.")] = None,
    model: ModelOption = None,
    device: DeviceOption = None,
    seed: Annotated[int, typer.Option(help="Seed of generated task sets and of sampling.")] = 0,
    out: Annotated[Path | None, typer.Option(help="Results folder (default runs/bench-<task>-<time>); an "
                                             "existing folder is resumed.")] = None,
    batch_size: Annotated[int, typer.Option(help="Problems per batched model call.")] = 4,
    backend: BackendOption = "local",
    base_url: BaseUrlsOption = None,
    max_tokens: Annotated[int, typer.Option(help="Max tokens each decoding agent generates (every method that "
                                            "has the option).")] = 384,
    temperature: Annotated[float, typer.Option(help="0 = greedy (every method that has the option).")] = 0.0,
    option: Annotated[list[str] | None, typer.Option(
        "--option", "-o", help="key=value for every listed method that declares the option (repeatable); "
        "per-method options go in the spec: latent-mas\\[latent_steps=8].")] = None,
    context_chars: Annotated[int | None, typer.Option(help="Long-context tasks: context characters.")] = None,
) -> None:
    """Run methods × tasks in batches; write results.jsonl, summary.md/json/png; resume an interrupted run."""
    from recursa.eval.bench import parse_method_specs, run_bench, shared_options
    from recursa.eval.report import write_summary
    from recursa.eval.tasks import load_tasks

    try:
        specs = parse_method_specs(methods_spec)
        options = shared_options(specs, {"max_tokens": max_tokens, "temperature": temperature, "seed": seed},
                                 method_options({}, option))
        task_options: dict[str, Any] = {"limit": limit}
        if context_chars is not None:
            task_options["context_chars"] = context_chars
        tasks = load_tasks(task, seed=seed, **task_options)
        chat_model = load_chat_model(model, backend, base_url, device=device)
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
    Console().print(_summary_table(summary))
    replicas = getattr(chat_model, "replica_stats", list)()
    if len(replicas) > 1:   # client-side balancing: where the requests went
        console.print("replicas: " + "; ".join(f"{r['base_url']} answered {r['served']}, failed {r['failed']}"
                                               for r in replicas))
    console.print(f"results: {out_dir / 'results.jsonl'}; summary: {out_dir / 'summary.md'}")


def _summary_table(summary: dict[str, Any]) -> Table:
    table = Table("method", "n", "accuracy", "95% CI", "compl. tok", "s/problem", "tok ×", "time ×")
    for row in summary["methods"]:
        vs = row["vs_first"]
        table.add_row(escape(row["method"]), str(row["n"]), f"{row['accuracy']:.1%}",
                      f"{row['ci95'][0]:.0%}–{row['ci95'][1]:.0%}", f"{row['completion_tokens']:.0f}",
                      f"{row['seconds']:.1f}", f"{vs['completion_tokens'] or 0:.2f}", f"{vs['seconds'] or 0:.2f}")
    return table


@app.command("methods")
def methods_list(name: Annotated[str | None, typer.Argument(help="One method (default: all).")] = None) -> None:
    """The methods and every option each declares (type, default, what it does)."""
    from recursa.methods import base as methods

    try:
        names = [methods.method_class(name).name] if name else methods.method_names()
    except RecursaError as exc:
        fail(str(exc))
        return
    for method in names:
        table = Table("option", "type", "default", "what it does", title=method, title_justify="left")
        for doc in methods.config_class(method).describe():
            table.add_row(doc.name, escape(doc.type), escape(repr(doc.default)), escape(doc.doc))
        Console().print(table)


@app.command()
def demo(
    problems: Annotated[int, typer.Option(help="How many GSM8K problems (the shortest ones).")] = 3,
    model: ModelOption = None,
    max_tokens: Annotated[int, typer.Option(help="Max tokens each decoding agent generates.")] = 256,
    long_context_chars: Annotated[int, typer.Option(help="rlm part: document size in characters (0 skips it).")]
    = 400_000,
) -> None:
    """The methods side by side on a few GSM8K problems, then rlm on a document beyond the model's window."""
    from recursa.eval.demo import demo_tasks, run_demo

    try:
        tasks = demo_tasks(problems)
        chat_model = load_chat_model(model)
        console.print(f"{len(tasks)} GSM8K problems on {chat_model.name}, each method runs them as one batch:")
        for i, task in enumerate(tasks, 1):
            console.print(f"  [bold]{i}.[/] {escape(task.question)}  [dim](gold {task.answer})[/]")
        rows = run_demo(chat_model, tasks, max_tokens, on_row=lambda r: console.print(
            f"  {escape(r.label)} done in {r.seconds:.1f}s"), on_skip=lambda label, why: console.print(
            f"  [yellow]{escape(label)} skipped:[/] {escape(why)}"))
    except RecursaError as exc:
        fail(str(exc))
        return
    _demo_table(rows, tasks)
    if long_context_chars:
        _demo_long_context(chat_model, long_context_chars)


def _demo_table(rows: list[Any], tasks: list[Any]) -> None:
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


def _demo_long_context(chat_model: Any, chars: int) -> None:
    from recursa.eval.demo import run_long_context_demo

    window = getattr(chat_model, "context_window", None)
    console.print(f"\n[bold]rlm[/]: a {chars:,}-character document" + (f" (the window is {window:,} tokens)"
                  if window else "") + "; it stays a REPL variable that the model searches with code.")
    try:
        row = run_long_context_demo(chat_model, chars)
    except RecursaError as exc:
        fail(str(exc))
        return
    mark = "[green]✓[/]" if row.correct else "[red]✗[/]"
    console.print(f"  {escape(row.question)}  [dim](gold {row.gold})[/]\n  {mark} {escape(row.answer)} in "
                  f"{row.seconds:.1f}s: {row.iterations} iterations, {row.code_blocks} code blocks, "
                  f"{row.sub_calls} sub-calls; the largest prompt was {row.largest_prompt_tokens:,} tokens")


from recursa.cli_train import train_links  # noqa: E402  (defined apart; registered here)

app.command("train-links")(train_links)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
