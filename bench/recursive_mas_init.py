"""Outer links: random (PyTorch default) vs ridge-bridge start.

    bench-slot python bench/recursive_mas_init.py --trajectories runs/rmas/links/trajectories.jsonl \
        --links runs/rmas/links [--steps 6]

1. Regression error on held-out text: for each edge of the default system, fit the ridge bridge on the words of
   75% of the trajectories' texts (plans and answers) and measure relative MSE and cosine of link(x) against the
   target's input embeddings on the other 25%, against a random link. Features are the source's raw last hidden
   states (no inner link: the bridge alone).
2. Stage-2 loss: the system's CE on its training examples at step 0, and after `--steps` stage-2 steps, from each
   start (inner links: the trained ones in --links).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from recursa.latent.links import InnerLink, OuterLink, load_link, regression_error, ridge_bridge, text_pairs
from recursa.latent.train import TrainSettings
from recursa.link_data import read_trajectories
from recursa.methods.recursive_system import load_models, load_system
from recursa.methods.recursive_train import LinkTrainer, examples_from, mean_loss


def regression(spec, models, texts: list[str]) -> None:
    cut = len(texts) * 3 // 4
    print("| edge | start | held-out rel. MSE | held-out cosine | pairs fit / held out |")
    print("|---|---|---|---|---|")
    for source, target, _ in spec.edges():
        x, y = text_pairs(models[source], models[target], texts[:cut])
        hx, hy = text_pairs(models[source], models[target], texts[cut:])
        torch.manual_seed(0)
        random_link = OuterLink(models[source].hidden_size, models[target].hidden_size)
        bridge = ridge_bridge(OuterLink(models[source].hidden_size, models[target].hidden_size), x, y)
        for label, link in (("random", random_link), ("ridge", bridge)):
            err = regression_error(link, hx, hy)
            print(f"| {source}→{target} | {label} | {err['relative_mse']:.3f} | {err['cosine']:.3f} | "
                  f"{len(x)} / {len(hx)} |", flush=True)


def stage2(spec, models, examples, links: Path, steps: int) -> None:
    print("\n| start | CE at step 0 | CE after steps | steps |")
    print("|---|---|---|---|")
    for init in ("random", "ridge"):
        with tempfile.TemporaryDirectory() as folder:
            settings = TrainSettings(rounds=spec.rounds, latent_tokens=spec.latent_steps, outer_steps=steps,
                                     init=init, checkpoint_every=10_000, max_minutes=1e9)
            trainer = LinkTrainer(spec, models, examples, Path(folder), settings)
            trainer.done = {a.name for a in spec.agents}          # reuse the trained inner links
            for agent in spec.agents:
                trained = load_link(links / f"inner-{agent.name}.safetensors", models[agent.name],
                                    models[agent.name])
                assert isinstance(trained, InnerLink)
                trainer.inner[agent.name].load_state_dict(trained.state_dict())
            trainer.stage1()                                       # only the outer start (ridge or not)
            before = mean_loss(trainer.unroll, examples)
            trainer.stage2()
            after = mean_loss(trainer.unroll, examples)
            print(f"| {init} | {before:.3f} | {after:.3f} | {steps} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trajectories", type=Path, required=True)
    parser.add_argument("--links", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--examples", type=int, default=8)
    args = parser.parse_args()
    spec = load_system(None)
    models = load_models(spec)
    good = [t for t in read_trajectories(args.trajectories) if t["correct"]]
    texts = [t[k] for t in good for k in ("plan", "refined_plan", "answer") if t.get(k)]
    regression(spec, models, texts)
    if args.steps > 0:
        stage2(spec, models, examples_from(good, spec)[:args.examples], args.links, args.steps)


if __name__ == "__main__":
    main()
