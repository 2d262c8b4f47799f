"""Where each realignment puts a latent thought: near the model's token embeddings, or off them.

For a few GSM8K questions (the planner's prompt of `latent-mas`), take m latent steps with each realign mode and
measure, per step: the cosine of the fed vector to its nearest input-embedding row (a real token sits at 1.0),
its norm over the mean embedding norm, and how sure the model is of its next token at that point (top-1
probability). A thought far from every token is an input the model never saw in training.

    python bench/latent_realign_probe.py --model qwen2.5-coder-1.5b --modes ridge+norm,soft --steps 10
"""

from __future__ import annotations

import argparse
import statistics

import torch

from recursa.eval.tasks import load_tasks
from recursa.latent.align import Aligner
from recursa.models.registry import load


@torch.no_grad()
def probe(model, questions: list[str], mode: str, steps: int) -> list[dict[str, float]]:
    aligner = Aligner.for_model(model, mode)
    table = model.input_embedding_matrix().float()
    unit_table = table / table.norm(dim=-1, keepdim=True).clamp_min(1e-6)
    mean_norm = table.norm(dim=-1).mean().item()
    rows = []
    for question in questions:
        state = model.new_state(1)
        ids = model.chat_ids([{"role": "user", "content": f"Make a short plan to solve: {question}"}])
        hidden = model.prefill(state, [ids])
        for step in range(steps):
            embeds = aligner(hidden).float()                                         # [1, H]
            cosine = (embeds / embeds.norm(dim=-1, keepdim=True)) @ unit_table.T     # [1, V]
            hidden = model.step_embeds(state, embeds[:, None, :].to(model.dtype))
            top1 = torch.softmax(model.logits(hidden).float(), dim=-1).max().item()
            rows.append({"step": step + 1, "nearest_cosine": cosine.max().item(),
                         "norm_ratio": embeds.norm().item() / mean_norm, "next_top1": top1})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="qwen2.5-coder-0.5b")
    parser.add_argument("--modes", default="ridge+norm,soft")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--questions", type=int, default=4)
    args = parser.parse_args()
    model = load(args.model, device="cpu")
    questions = [t.question for t in load_tasks("gsm8k", limit=args.questions)]
    print(f"model {args.model}, {len(questions)} GSM8K planner prompts, {args.steps} latent steps each\n")
    print("| mode | steps | nearest-token cosine (mean, min) | norm / mean embedding norm | next-token top-1 p |")
    print("|---|---|---:|---:|---:|")
    for mode in args.modes.split(","):
        rows = probe(model, questions, mode, args.steps)
        for label, part in (("1", [r for r in rows if r["step"] == 1]), (f"2-{args.steps}",
                                                                        [r for r in rows if r["step"] > 1])):
            if not part:
                continue
            cos = [r["nearest_cosine"] for r in part]
            print(f"| {mode} | {label} | {statistics.mean(cos):.2f}, {min(cos):.2f} | "
                  f"{statistics.mean(r['norm_ratio'] for r in part):.2f} | "
                  f"{statistics.mean(r['next_top1'] for r in part):.2f} |")


if __name__ == "__main__":
    main()
