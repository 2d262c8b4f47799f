"""Ratios and tables of a bench/speed.py run: a rich table for the terminal, Markdown for bench/results/."""

from __future__ import annotations

from typing import Any

FORMATS = {"bf16-modules": "bf16", "bf16-fused": "bf16", "int8": "int8"}
BASELINE = "bf16-modules"


def _one(path: dict[str, Any]) -> float | None:
    return path.get("decode", {}).get("1", {}).get("tokens_per_s")


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    """Limits per weight format, and per path: its share of its limit, batch scaling, gains over the baseline."""
    bandwidth = results["bandwidth"]["copy_gb_s"] * 1e9
    weights = results["weight_bytes"]
    summary: dict[str, Any] = {"limit_tok_s": {fmt: bandwidth / w["read_per_step"] for fmt, w in weights.items()},
                               "paths": {}}
    base = results["paths"].get(BASELINE, {})
    for name, path in results["paths"].items():
        fmt, one, row = FORMATS.get(name, "bf16"), _one(path), {}
        if one and fmt in weights:
            row["batch1_fraction_of_limit"] = one / summary["limit_tok_s"][fmt]
            row["achieved_gb_s_batch1"] = one * weights[fmt]["read_per_step"] / 1e9
        for batch, decoded in path.get("decode", {}).items():
            if one and batch != "1":
                row[f"batch{batch}_over_batch1"] = decoded["tokens_per_s"] / one
            if base.get("decode", {}).get(batch):
                row[f"batch{batch}_over_{BASELINE}"] = decoded["tokens_per_s"] / base["decode"][batch]["tokens_per_s"]
        if path.get("prefill") and base.get("prefill"):
            row[f"prefill_over_{BASELINE}"] = path["prefill"]["tokens_per_s"] / base["prefill"]["tokens_per_s"]
        summary["paths"][name] = row
    fused_one = _one(results["paths"].get("bf16-fused", {}))
    if results.get("plain_generate") and fused_one:
        summary["bf16_fused_over_plain_generate"] = fused_one / results["plain_generate"]["tokens_per_s"]
    summary["llama_cpp"] = _llama_summary(results, bandwidth)
    serve = results.get("serve", {})
    for streams in ("1", "8"):
        if streams in serve.get("static", {}) and streams in serve.get("continuous", {}):
            summary[f"serve_{streams}_streams_continuous_over_static"] = (
                serve["continuous"][streams]["tokens_per_s"] / serve["static"][streams]["tokens_per_s"])
    return summary


def _llama_summary(results: dict[str, Any], bandwidth: float) -> dict[str, Any]:
    """Per llama.cpp variant: its limit (file bytes per step), batch 1's share of it, and our paths against it at
    batch 1 and at the largest batch (llama.cpp's parallel sequences)."""
    summary = {}
    for label, variant in (results.get("llama_cpp") or {}).items():
        if "error" in variant:
            continue
        limit = bandwidth / variant["gguf_bytes"]
        row = {"limit_tok_s": limit, "batch1_fraction_of_limit": variant["batch1"]["tokens_per_s"] / limit}
        for name, path in results["paths"].items():
            decode = path.get("decode", {})
            if "1" in decode:
                row[f"{name}_batch1_over_llama"] = decode["1"]["tokens_per_s"] / variant["batch1"]["tokens_per_s"]
            parallel = decode.get(str(variant["parallel"]["sequences"]))
            if parallel:
                row[f"{name}_parallel_over_llama"] = parallel["tokens_per_s"] / variant["parallel"]["tokens_per_s"]
        summary[label] = row
    return summary


def _llama_rows(results: dict[str, Any], batches: list[str]) -> list[list[str]]:
    """llama.cpp's variants as rows of the paths table (batch 1 and its parallel sequences)."""
    rows = []
    for label, variant in (results.get("llama_cpp") or {}).items():
        if "error" in variant:
            rows.append([f"llama.cpp {label}", variant["error"][:80], *["-"] * (len(batches) + 3)])
            continue
        by_batch = {"1": variant["batch1"], str(variant["parallel"]["sequences"]): variant["parallel"]}
        ratio = results["summary"]["llama_cpp"][label]
        cells = [f"llama.cpp {label}"]
        for batch in batches:
            cells.append(f"{by_batch[batch]['tokens_per_s']:.1f}" if batch in by_batch else "-")
        one = variant["batch1"]["tokens_per_s"]
        cells += [f"{ratio['batch1_fraction_of_limit']:.0%}",
                  f"{variant['parallel']['tokens_per_s'] / one:.2f}×", f"{variant['prefill']['tokens_per_s']:.0f}", "-"]
        base = results["paths"].get(BASELINE, {})
        if base.get("decode", {}).get("1") and base.get("prefill"):
            cells.append(f"{one / base['decode']['1']['tokens_per_s']:.2f}× / "
                         f"{variant['prefill']['tokens_per_s'] / base['prefill']['tokens_per_s']:.2f}×")
        else:
            cells.append("-")
        rows.append(cells)
    return rows


def _path_rows(results: dict[str, Any]) -> list[list[str]]:
    summary, rows = results["summary"], []
    batches = sorted({b for p in results["paths"].values() for b in p.get("decode", {})}, key=int)
    for name, path in results["paths"].items():
        ratio = summary["paths"].get(name, {})
        cells = [name]
        for batch in batches:
            decoded = path.get("decode", {}).get(batch)
            cells.append(f"{decoded['tokens_per_s']:.1f} ({decoded['ms_per_step']:.0f} ms/step)" if decoded else "-")
        cells.append(f"{ratio['batch1_fraction_of_limit']:.0%}" if "batch1_fraction_of_limit" in ratio else "-")
        last = batches[-1] if batches else "1"
        cells.append(f"{ratio[f'batch{last}_over_batch1']:.2f}×" if f"batch{last}_over_batch1" in ratio else "-")
        cells.append(f"{path['prefill']['tokens_per_s']:.0f}" if path.get("prefill") else "-")
        cells.append(f"{path['prefill_after_cache']['tokens_per_s']:.0f}" if path.get("prefill_after_cache") else "-")
        cells.append(f"{ratio.get(f'batch1_over_{BASELINE}', 1.0):.2f}× / "
                     f"{ratio.get(f'prefill_over_{BASELINE}', 1.0):.2f}×")
        rows.append(cells)
    rows += _llama_rows(results, batches)
    header = ["path", *[f"decode batch {b} tok/s" for b in batches], "batch 1 / its limit",
              f"batch {batches[-1] if batches else 1} / batch 1", "prefill tok/s", "prefill after 2048 cached",
              f"vs {BASELINE} (b1 / prefill)"]
    return [header, *rows]


def _kernel_rows(results: dict[str, Any]) -> list[list[str]]:
    rows = [["matmul routine (weights streamed per step)", "1 row", "2 rows"]]
    for name, measured in (results.get("matmul_candidates") or {}).items():
        if "error" in measured:
            rows.append([name, measured["error"], ""])
            continue
        rows.append([name, *[f"{measured[k]['gb_s']:.1f} GB/s ({measured[k]['ms']:.0f} ms)"
                             for k in ("rows=1", "rows=2") if k in measured]])
    return rows


def _attention_rows(results: dict[str, Any]) -> list[list[str]]:
    rows = [["attention of one prefill chunk, all layers", "queries / cached keys", "ms"]]
    for name, measured in (results.get("attention_candidates") or {}).items():
        rows.append([name, f"{measured['new_tokens']} / {measured['cached_tokens']}",
                     f"{measured['ms_all_layers']:.0f}"])
    return rows


def _serve_rows(results: dict[str, Any]) -> list[list[str]]:
    rows = [["recursa serve", "streams", "tok/s", "first token (mean)", "largest batch", "joined mid-batch"]]
    for mode, by_streams in (results.get("serve") or {}).items():
        for streams, measured in by_streams.items():
            rows.append([f"{mode} batching", streams, f"{measured['tokens_per_s']:.1f}",
                         f"{measured['mean_first_token_s']:.2f} s", str(measured["largest_batch"]),
                         str(measured["joined_running"])])
    return rows


def _profile_rows(results: dict[str, Any]) -> list[list[str]]:
    profiled = {name: p["profile_batch1"] for name, p in results["paths"].items() if p.get("profile_batch1")}
    if not profiled:
        return []
    keys = ["linear_layers", "lm_head", "attention", "other_ops", "python_and_dispatch", "ms_per_step"]
    rows = [["batch-1 step profile", *profiled]]
    for key in keys:
        rows.append([key.replace("_", " "), *[f"{p[key]:.1f}" if key == "ms_per_step" else f"{p[key]:.0%}"
                                              for p in profiled.values()]])
    return rows


def _facts(results: dict[str, Any]) -> list[list[str]]:
    bw, summary = results["bandwidth"], results["summary"]
    rows = [["measure", "value"],
            ["memory copy bandwidth", f"{bw['copy_gb_s']:.1f} GB/s (read-only sum: {bw['read_gb_s']:.1f} GB/s)"]]
    for fmt, weights in results["weight_bytes"].items():
        rows.append([f"{fmt}: bytes read per step → limit", f"{weights['read_per_step'] / 1e9:.3f} GB → "
                                                            f"{summary['limit_tok_s'][fmt]:.1f} tok/s"])
    if results.get("plain_generate"):
        rows.append(["transformers generate(), batch 1", f"{results['plain_generate']['tokens_per_s']:.1f} tok/s"])
    llama = results.get("llama_cpp")
    if not llama:
        rows.append(["llama.cpp", "not installed (`make llamacpp`)"])
    for label, variant in (llama or {}).items():
        if label in summary["llama_cpp"]:
            rows.append([f"llama.cpp {label}: file bytes per step → limit",
                         f"{variant['gguf_bytes'] / 1e9:.3f} GB → {summary['llama_cpp'][label]['limit_tok_s']:.1f} "
                         f"tok/s ({variant['runner']})"])
    for key, value in summary.items():
        if key.startswith("serve_"):
            rows.append([key.replace("_", " "), f"{value:.2f}×"])
    return rows


def _latent_rows(results: dict[str, Any]) -> list[list[str]]:
    rows = [["latent-mas, one GSM8K batch", "s/problem", "correct", "same text as the first path"]]
    for name, measured in (results.get("latent_mas") or {}).items():
        n = measured["problems"]
        rows.append([name, f"{measured['seconds_per_problem']:.1f}", f"{measured['correct']}/{n}",
                     f"{measured['same_text_as_first_path']}/{n}"])
    return rows


def tables(results: dict[str, Any]) -> list[list[list[str]]]:
    return [t for t in (_facts(results), _path_rows(results), _kernel_rows(results), _attention_rows(results),
                        _profile_rows(results), _serve_rows(results), _latent_rows(results)) if len(t) > 1]


def render(results: dict[str, Any]):
    """The tables for a terminal (rich)."""
    from rich.console import Group
    from rich.table import Table

    title = (f"speed: {results['model']} ({results['threads']} threads, best of {results['repeats']}, load average "
             f"{results['load_average_at_start']:.1f} → {results.get('load_average_at_end', 0):.1f})")
    rendered = []
    for i, rows in enumerate(tables(results)):
        table = Table(*rows[0], title=title if i == 0 else None)
        for row in rows[1:]:
            table.add_row(*row)
        rendered.append(table)
    return Group(*rendered)


def markdown(results: dict[str, Any], command: str) -> str:
    """The same tables as Markdown, with how they were measured."""
    lines = [f"# Speed: {results['model']}", "",
             f"Command: `{command}`. {results['threads']} torch threads, torch {results['torch']}, best of "
             f"{results['repeats']} runs per figure, {results['new_tokens']} decoded tokens per row; load average "
             f"{results['load_average_at_start']:.1f} at the start and {results.get('load_average_at_end', 0):.1f} at "
             f"the end; backend sha {results['backend_sha256']}.", ""]
    for rows in tables(results):
        lines += ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
        lines += ["| " + " | ".join(row) + " |" for row in rows[1:]]
        lines.append("")
    return "\n".join(lines)
