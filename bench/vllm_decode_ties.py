"""Where `latent-mas` decoded on vLLM (`decoder=vllm`) and decoded locally part, and how close the tie was there.

    python bench/vllm_decode_ties.py runs/i16/latent-local runs/i16/latent-vllm [--model qwen2.5-coder-0.5b]

For every problem whose two final texts differ, the working memory is rebuilt alone (one row, as the latent
rollout does), the local text is fed after the final prompt, and at the first token where the vLLM text parts,
the gap between the local logits' two best values is printed in bf16 rounding steps at their magnitude. Two
engines with different kernels may pick either token only where that gap is a step or two (models/invariance.py).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from recursa.eval.tasks import load_tasks
from recursa.methods.latent_mas import LatentMAS
from recursa.models import registry
from recursa.models.invariance import top_two_gap


def records(folder: Path) -> dict[str, dict]:
    return {r["id"]: r for r in map(json.loads, (folder / "results.jsonl").read_text().splitlines())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("local", type=Path)
    parser.add_argument("remote", type=Path)
    parser.add_argument("--model", default="qwen2.5-coder-0.5b")
    parser.add_argument("--task", default="gsm8k")
    args = parser.parse_args()
    local, remote = records(args.local), records(args.remote)
    tasks = {t.id: t for t in load_tasks(args.task)}
    model = registry.load(args.model)
    options = {k: v for k, v in next(iter(local.values()))["options"].items() if k != "decoder"}
    method = LatentMAS(model, max_tokens=384, **options)
    gaps = []
    for task_id, mine in local.items():
        theirs = remote[task_id]
        if mine["answer"] == theirs["answer"]:
            continue
        ids = model.tokenizer.encode(mine["answer"], add_special_tokens=False)
        other = model.tokenizer.encode(theirs["answer"], add_special_tokens=False)
        at = next((i for i, (a, b) in enumerate(zip(ids, other, strict=False)) if a != b), min(len(ids), len(other)))
        state, _ = method.build_memory([tasks[task_id]])
        prompt = method.final_prompt_ids([tasks[task_id]], state)[0]
        gap = top_two_gap(model, prompt, ids[:at], state)
        gaps.append(gap)
        print(json.dumps({"id": task_id, "parts_at_token": at, "of": len(ids), "gap_bf16_steps": round(gap, 2),
                          "same_extracted": mine["extracted"] == theirs["extracted"]}), flush=True)
    within = sum(g <= 2 for g in gaps)
    print(f"{len(local) - len(gaps)} of {len(local)} identical; of the {len(gaps)} that part, {within} part where "
          f"the two best logits are within 2 bf16 steps (max gap {max(gaps, default=0):.1f} steps)")


if __name__ == "__main__":
    main()
