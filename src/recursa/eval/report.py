"""Summaries of a bench run: `summary.json`, `summary.md` and `summary.png` next to `results.jsonl`.

Methods are compared on the problems every method finished (a partial run stays a like-for-like comparison);
accuracy carries a 95% Wilson score interval; ratios are against the first method listed.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from recursa.eval.bench import MANIFEST, RESULTS, read_results


def wilson_interval(correct: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval for a binomial proportion (well-behaved at 0 %, 100 % and small n)."""
    if n == 0:
        return 0.0, 0.0
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def summarize(records: list[dict[str, Any]], order: list[str] | None = None) -> dict[str, Any]:
    labels = list(dict.fromkeys((order or []) + [r["method"] for r in records]))
    labels = [lab for lab in labels if any(r["method"] == lab for r in records)]
    ids_by_method = {lab: {r["id"] for r in records if r["method"] == lab} for lab in labels}
    common = set.intersection(*ids_by_method.values()) if labels else set()
    rows = []
    for label in labels:
        rs = [r for r in records if r["method"] == label and r["id"] in common]
        correct = sum(bool(r["correct"]) for r in rs)
        low, high = wilson_interval(correct, len(rs))
        agents: dict[str, list[int]] = {}
        for r in rs:
            for a in r.get("agents", []):
                agents.setdefault(a["role"], []).append(a["completion_tokens"])
        rows.append({
            "method": label, "n": len(rs), "finished": len(ids_by_method[label]), "correct": correct,
            "accuracy": correct / len(rs) if rs else 0.0, "ci95": [low, high],
            "prompt_tokens": _mean([r["prompt_tokens"] for r in rs]),
            "completion_tokens": _mean([r["completion_tokens"] for r in rs]),
            "total_tokens": _mean([r["prompt_tokens"] + r["completion_tokens"] for r in rs]),
            "latent_steps": _mean([r["latent_steps"] for r in rs]),
            "seconds": _mean([r["seconds"] for r in rs]),
            "errors": sum(1 for r in rs if r.get("error")), "stopped": sum(1 for r in rs if r.get("stopped")),
            "no_answer": sum(1 for r in rs if r.get("extracted") is None),
            "batch_size": max((r.get("batch_size", 0) for r in rs), default=0),
            "agent_completion_tokens": {role: _mean(v) for role, v in agents.items()},
        })
    if rows:
        base = rows[0]
        for row in rows:
            row["vs_first"] = {
                "accuracy_pp": 100 * (row["accuracy"] - base["accuracy"]),
                "completion_tokens": _ratio(row["completion_tokens"], base["completion_tokens"]),
                "total_tokens": _ratio(row["total_tokens"], base["total_tokens"]),
                "seconds": _ratio(row["seconds"], base["seconds"]),
            }
    return {"problems": len(common), "methods": rows}


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def write_summary(out_dir: Path) -> dict[str, Any]:
    """Write summary.json, summary.md and summary.png for the run in `out_dir`; return the summary."""
    records = read_results(out_dir / RESULTS)
    manifest_path = out_dir / MANIFEST
    manifest = json.loads(manifest_path.read_text(encoding="utf-8")) if manifest_path.is_file() else {}
    summary = {**{k: manifest.get(k) for k in ("task", "model", "seed", "batch_size", "options")},
               **summarize(records, manifest.get("methods"))}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    (out_dir / "summary.md").write_text(markdown(summary), encoding="utf-8")
    if summary["methods"]:
        plot(summary, out_dir / "summary.png")
    return summary


def markdown(summary: dict[str, Any]) -> str:
    rows = summary["methods"]
    lines = [f"# Bench: {summary.get('task')} on {summary.get('model')}", "",
             f"{summary['problems']} problems finished by every method (seed {summary.get('seed')}, "
             f"batch size {summary.get('batch_size')}). Accuracy with a 95% Wilson interval; tokens and seconds "
             f"are means per problem (seconds = the problem's share of its batch's wall time); ratios are against "
             f"`{rows[0]['method'] if rows else '-'}`.", "",
             "| method | n | accuracy | 95% CI | completion tok | prompt tok | s/problem | Δacc (pp) | tok × | time × |"
             " no answer | errors |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        vs = r.get("vs_first", {})
        lines.append(f"| `{r['method']}` | {r['n']} | {r['accuracy']:.1%} | {r['ci95'][0]:.1%}–{r['ci95'][1]:.1%} | "
                     f"{r['completion_tokens']:.0f} | {r['prompt_tokens']:.0f} | {r['seconds']:.1f} | "
                     f"{vs.get('accuracy_pp', 0):+.1f} | {_fmt_ratio(vs.get('completion_tokens'))} | "
                     f"{_fmt_ratio(vs.get('seconds'))} | {r['no_answer']} | {r['errors']} |")
    lines += ["", "Completion tokens per agent:", ""]
    for r in rows:
        parts = ", ".join(f"{role} {tok:.0f}" for role, tok in r["agent_completion_tokens"].items())
        lines.append(f"- `{r['method']}`: {parts or '-'}")
    partial = [r for r in rows if r["finished"] > r["n"]]
    if partial:
        lines += ["", "Finished but not yet shared by all methods (not in the table): "
                  + ", ".join(f"`{r['method']}` +{r['finished'] - r['n']}" for r in partial)]
    return "\n".join(lines) + "\n"


def _fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def plot(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = summary["methods"]
    labels = [r["method"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(4 + 2.2 * len(rows), 4))
    acc = [100 * r["accuracy"] for r in rows]
    # clamped: at 100 % the Wilson upper bound can round to just below the accuracy (matplotlib rejects it)
    err = [[max(0.0, 100 * (r["accuracy"] - r["ci95"][0])) for r in rows],
           [max(0.0, 100 * (r["ci95"][1] - r["accuracy"])) for r in rows]]
    axes[0].bar(labels, acc, yerr=err, capsize=4, color="tab:green")
    axes[0].set_ylabel("accuracy % (95% CI)")
    axes[1].bar(labels, [r["completion_tokens"] for r in rows], color="tab:blue", label="completion")
    axes[1].bar(labels, [r["prompt_tokens"] for r in rows], bottom=[r["completion_tokens"] for r in rows],
                color="tab:gray", alpha=0.5, label="prompt")
    axes[1].set_ylabel("tokens / problem")
    axes[1].legend(fontsize=8)
    axes[2].bar(labels, [r["seconds"] for r in rows], color="tab:orange")
    axes[2].set_ylabel("seconds / problem")
    for ax in axes:
        ax.tick_params(axis="x", rotation=30, labelsize=7)
        for tick in ax.get_xticklabels():
            tick.set_horizontalalignment("right")
    fig.suptitle(f"{summary.get('task')} · {summary.get('model')} · {summary['problems']} problems")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
