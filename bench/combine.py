"""One summary over several `recursa bench` folders of the same task and model (e.g. baselines and a latent sweep
that ran as separate processes), with ratios against the method you name.

    python bench/combine.py runs/issue4-gsm8k-all runs/issue3-gsm8k runs/issue4-gsm8k --first text-mas \
        [--only "text-mas,latent-mas[latent_steps=4;realign=soft]"]

Only problems that every listed method finished are compared (as in a single run's summary). The folders must
share task, model, seed and task options, or the numbers would not be comparable; a method present in more
than one folder is an error rather than a silent merge.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from recursa.eval.bench import MANIFEST, RESULTS, parse_method_specs, read_results
from recursa.eval.report import write_summary

SAME = ("task", "model", "seed", "task_options")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("folders", type=Path, nargs="+")
    parser.add_argument("--first", help="method label the ratios are taken against (default: the first found)")
    parser.add_argument("--only", help="comma-separated method labels to keep (default: all); use ';' inside [...]")
    args = parser.parse_args()

    manifests = [json.loads((folder / MANIFEST).read_text(encoding="utf-8")) for folder in args.folders]
    for key in SAME:
        values = {json.dumps(m.get(key), sort_keys=True) for m in manifests}
        if len(values) > 1:
            sys.exit(f"the folders differ in {key}: {sorted(values)}; they cannot be compared")
    records, owner = [], {}
    for folder in args.folders:
        for record in read_results(folder / RESULTS):
            if owner.setdefault(record["method"], folder) != folder:
                sys.exit(f"method {record['method']} appears in {owner[record['method']]} and {folder}")
            records.append(record)
    if args.only:
        wanted = [spec.label for spec in parse_method_specs(args.only)]
        missing = sorted(set(wanted) - {r["method"] for r in records})
        if missing:
            sys.exit(f"--only names methods not in the folders: {', '.join(missing)}")
        records = [r for r in records if r["method"] in wanted]
    methods = list(dict.fromkeys(r["method"] for r in records))
    if args.first:
        if args.first not in methods:
            sys.exit(f"--first {args.first!r} is not among the methods: {', '.join(methods)}")
        methods.remove(args.first)
        methods.insert(0, args.first)
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / RESULTS, "w", encoding="utf-8") as out:
        for record in records:
            out.write(json.dumps(record) + "\n")
    batch_sizes = sorted({m.get("batch_size") for m in manifests if m.get("batch_size")})
    manifest = {**{k: manifests[0].get(k) for k in SAME}, "methods": methods,
                "batch_size": "/".join(map(str, batch_sizes)), "options": manifests[0].get("options"),
                "combined_from": [str(f) for f in args.folders]}
    (args.out / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    write_summary(args.out)
    print((args.out / "summary.md").read_text(encoding="utf-8"))


if __name__ == "__main__":
    main()
