"""Ridge bridge vs random outer link on held-out prose, both directions between SmolLM2-135M and Qwen 0.5B.

    python bench/recursive_mas_ridge_text.py      # ~1 minute: fit on DESIGN.md + research notes, judge on README.md

Pairs are words (both tokenizations mean-pooled per whitespace word): X = the source's last hidden states, Y = the
target's input embeddings. Prints relative MSE (‖ŷ − y‖² / ‖y − ȳ‖²) and mean cosine, against the mean fit target.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from recursa.latent.links import OuterLink, regression_error, ridge_bridge, text_pairs
from recursa.models import registry


def paragraphs(path: str) -> list[str]:
    out = [re.sub(r"\s+", " ", p).strip() for p in Path(path).read_text(encoding="utf-8").split("\n\n")]
    return [p for p in out if len(p) > 200 and not p.startswith(("```", "|", "#"))]


def main() -> None:
    fit = paragraphs("../shared/DESIGN.md") + paragraphs("../shared/research/recursivemas.md")
    held = paragraphs("README.md")
    smol, qwen = registry.load("smollm2-135m"), registry.load("qwen2.5-coder-0.5b")
    print(f"fit: {len(fit)} paragraphs (DESIGN.md, research/recursivemas.md); held out: {len(held)} (README.md)")
    print("| edge | start | held-out rel. MSE | held-out cosine | word pairs fit / held out |")
    print("|---|---|---|---|---|")
    for source, target in ((smol, qwen), (qwen, smol)):
        edge = f"{source.name}→{target.name}"
        x, y = text_pairs(source, target, fit)
        hx, hy = text_pairs(source, target, held)
        mean_cos = torch.nn.functional.cosine_similarity(y.mean(0).expand_as(hy), hy, dim=-1).mean()
        print(f"| {edge} | mean of fit targets | – | {mean_cos:.3f} | |")
        torch.manual_seed(0)
        links = [("random", OuterLink(source.hidden_size, target.hidden_size))]
        links += [(f"ridge λ={r:g}", ridge_bridge(OuterLink(source.hidden_size, target.hidden_size), x, y, ridge=r))
                  for r in (1e-2, 1e-1, 1.0)]
        for label, link in links:
            err = regression_error(link, hx, hy)
            print(f"| {edge} | {label} | {err['relative_mse']:.3f} | {err['cosine']:.3f} | {len(x)} / {len(hx)} |")


if __name__ == "__main__":
    main()
