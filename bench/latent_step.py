"""One latent step against one decode step of the local backend, over the same cache, in one process.

    python bench/latent_step.py [--model NAME] [--batches 1,32] [--cached 600] [--steps 8] [--repeats 3]

A decode step is a forward of the last token, the LM head ([B, H] x [H, V], V = 151k rows for Qwen) and the
greedy choice. A latent step feeds the realigned hidden state back instead: `none`/`ridge+norm` skip the head
(only an [H, H] product at most), `soft` runs the head to take the expected embedding under its top 16 tokens.
Every measure starts from a copy of the same prefilled cache; the fastest of --repeats runs counts.
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from recursa.latent.align import Aligner  # noqa: E402
from recursa.models import registry  # noqa: E402


@torch.inference_mode()
def time_steps(step, state, first: torch.Tensor, steps: int, repeats: int) -> float:
    """Milliseconds per step, best of `repeats`, each from a fresh copy of `state` and its last hidden state."""
    best = float("inf")
    for _ in range(repeats):
        work, hidden = state.copy(), first
        began = time.perf_counter()
        for _ in range(steps):
            hidden = step(work, hidden)
        best = min(best, (time.perf_counter() - began) / steps * 1000)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None)
    parser.add_argument("--batches", default="1,32")
    parser.add_argument("--cached", type=int, default=600, help="positions already in the cache")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    model = registry.load(args.model)
    aligners = {mode: Aligner.for_model(model, mode) for mode in ("none", "ridge+norm", "soft")}
    rows = []
    for batch in (int(b) for b in args.batches.split(",")):
        state = model.new_state(batch)
        prompts = [[1000 + (row * 31 + i) % 20000 for i in range(args.cached)] for row in range(batch)]
        with torch.inference_mode():
            first = model.prefill(state, prompts)
        def decode_step(work, hidden):      # what HFModel.decode does per token (greedy): head, argmax, forward
            ids = model.logits(hidden).argmax(-1)
            return model.step_embeds(work, model.embed(ids)[:, None, :])   # the same forward as by ids (tested)

        measures = {"decode": time_steps(decode_step, state, first, args.steps, args.repeats)}
        for mode, aligner in aligners.items():
            def latent_step(work, hidden, _aligner=aligner):
                return model.step_embeds(work, _aligner(hidden)[:, None, :])
            measures[f"latent {mode}"] = time_steps(latent_step, state, first, args.steps, args.repeats)
        row = {"batch": batch, "cached": args.cached, "threads": torch.get_num_threads(),
               **{k: round(v, 1) for k, v in measures.items()}}
        rows.append(row)
        print(json.dumps(row), flush=True)
    decode = {r["batch"]: r["decode"] for r in rows}
    for r in rows:
        ratios = ", ".join(f"{k} {r[k] / decode[r['batch']]:.2f}x" for k in r if k.startswith("latent"))
        print(f"batch {r['batch']}: decode step {r['decode']} ms; latent step vs decode: {ratios}")


if __name__ == "__main__":
    main()
