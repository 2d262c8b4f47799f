"""Latent rollout with the KV cache (recursive-mas) vs re-prefill of the whole prefix per step (release code).

    bench-slot python bench/recursive_mas_kv.py --steps 32 64 --batch 4 [--model qwen2.5-coder-0.5b]

Both run in this one process on the same prompts, with the same inner link (untrained, seeded: the cost does not
depend on the weights); prints seconds per rollout and the largest relative difference of the hidden states.
"""

from __future__ import annotations

import argparse
import time

import torch

from recursa.latent.links import InnerLink
from recursa.methods.recursive_mas import cached_rollout, embed_rows, reprefill_rollout
from recursa.methods.recursive_system import role_messages
from recursa.models import registry

QUESTIONS = ["A baker makes 14 loaves a day for 6 days and sells 70. How many are left?",
             "Sam reads 12 pages an hour. How many hours for a 180-page book?",
             "A tank holds 250 litres and leaks 3 litres a minute. How much is left after 40 minutes?",
             "Mia buys 7 pens at 3 dollars each and pays with 50 dollars. What is her change?"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="qwen2.5-coder-0.5b")
    parser.add_argument("--steps", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--batch", type=int, default=4)
    args = parser.parse_args()
    model = registry.load(args.model)
    torch.manual_seed(0)
    link = InnerLink(model.hidden_size).eval()
    convs = [role_messages("planner", q, "math", []) for q in (QUESTIONS * 4)[:args.batch]]
    rows, last, _ = embed_rows(model, convs, [])
    print("| m | batch | KV cache (s) | re-prefill (s) | speed-up | max rel. diff of h |")
    print("|---|---|---|---|---|---|")
    for steps in args.steps:
        began = time.perf_counter()
        cached = cached_rollout(model, rows, last, steps, link)
        mid = time.perf_counter()
        full = reprefill_rollout(model, rows, last, steps, link)
        end = time.perf_counter()
        diff = ((cached.float() - full.float()).norm(dim=-1) / full.float().norm(dim=-1)).max().item()
        print(f"| {steps} | {args.batch} | {mid - began:.2f} | {end - mid:.2f} | {(end - mid) / (mid - began):.1f}× "
              f"| {diff:.4f} |", flush=True)


if __name__ == "__main__":
    main()
