"""`recursa train-links SYSTEM.yaml`: role targets from text-mas, then the two link-training stages.

    recursa train-links                                   # the default system → its packaged links folder
    recursa train-links my.yaml --problems 32 --steps 60 --max-minutes 30 --init ridge --out runs/links

Trajectories: `text-mas` (sequential, on the system's final agent's model) runs on GSM-Symbolic problems of the
training templates (`recursa.link_data`: templates % 4 == 3 are held out for evaluation) and only correct
trajectories are kept; `--trajectories FILE` reuses a file. Everything resumes: rerun the same command after a kill.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from recursa.core.errors import RecursaError


def train_links(
    system: Annotated[Path | None, typer.Argument(help="System file (default: the packaged default system).")] = None,
    out: Annotated[Path | None, typer.Option(help="Output folder (default: the system's links folder).")] = None,
    trajectories: Annotated[Path | None, typer.Option(help="text-mas trajectories JSONL (default: OUT/"
                                                      "trajectories.jsonl, collected if missing).")] = None,
    problems: Annotated[int, typer.Option(help="Training problems to run text-mas on.")] = 32,
    rounds: Annotated[int | None, typer.Option(help="Rounds R to unroll (default: the system's).")] = None,
    steps: Annotated[int, typer.Option(help="Stage-2 optimizer steps (one example each).")] = 60,
    max_minutes: Annotated[float, typer.Option(help="Stage-2 time budget in minutes (checkpoint and stop).")] = 30.0,
    init: Annotated[str, typer.Option(help="Outer-link start: ridge | random.")] = "ridge",
    lr: Annotated[float, typer.Option(help="Stage-2 learning rate (AdamW, warm-up + cosine).")] = 3e-4,
    bf16: Annotated[bool, typer.Option(help="Write the link weights in bf16 (half the size).")] = False,
    device: Annotated[str | None, typer.Option(help="Device of the models.")] = None,
) -> None:
    """Train a RecursiveMAS system's links (base models frozen), resumable; writes losses.png."""
    import torch
    from tqdm import tqdm

    from recursa.console import console, fail
    from recursa.latent.train import TrainSettings
    from recursa.link_data import collect_trajectories, gsm_symbolic_split, read_trajectories
    from recursa.methods.recursive_system import load_models, load_system
    from recursa.methods.recursive_train import examples_from, train_system

    if init not in ("ridge", "random"):
        fail(f"--init must be ridge or random, got {init!r}")
    try:
        spec = load_system(system, rounds=rounds)
        out_dir = out or spec.links_dir()
        if out_dir is None:
            fail("the system names no links folder: pass --out")
            return
        models = load_models(spec, device=device)
        path = trajectories or out_dir / "trajectories.jsonl"
        if trajectories is None:
            tasks = gsm_symbolic_split("train", problems)
            console.print(f"text-mas on {len(tasks)} training-template problems → {path}")
            collect_trajectories(models[spec.final.name], tasks, path, batch_size=16)
        examples = examples_from([t for t in read_trajectories(path) if t.get("correct")], spec)
        settings = TrainSettings(rounds=spec.rounds, latent_tokens=spec.latent_steps, outer_steps=steps,
                                 max_minutes=max_minutes, init=init, outer_lr=lr)
        console.print(f"{len(examples)} correct trajectories; system {spec.name} ({spec.pattern}, R={spec.rounds}, "
                      f"m={spec.latent_steps}) → {out_dir}")
        bar = tqdm(total=steps, desc="outer links", unit="step")

        def progress(phase: str, step: int, loss: float) -> None:
            bar.set_postfix_str(f"{phase} loss {loss:.3f}")
            if phase == "outer":
                bar.n = step
                bar.refresh()

        summary = train_system(spec, models, examples, out_dir, settings, progress=progress,
                               dtype=torch.bfloat16 if bf16 else torch.float32)
        bar.close()
    except RecursaError as exc:
        fail(str(exc))
        return
    console.print(f"trained {summary['steps']} steps in {summary['minutes']:.1f} min; trainable parameters "
                  f"{summary['trainable_parameters']}; links and losses.png in {out_dir}")
