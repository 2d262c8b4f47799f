"""rlm, rlm depth 0 and single (truncated) on the long-context tasks at several sizes, one model load.

    python bench/long_context.py --tasks s-niah,oolong-lite --sizes 32000,256000,1000000 --limit 2 \
        --methods "rlm[max_iterations=6],rlm[max_depth=0;max_iterations=6],single-truncated[max_context_tokens=8192]"

    python bench/long_context.py --model qwen2.5-coder-1.5b --tasks reading-posts,reading-logs,reading-tickets \
        --sizes 256000 --limit 2 --methods "rlm[max_iterations=6;max_seconds=480],rlm[max_depth=0;max_iterations=6]"

Each (task, size) is a resumable `recursa bench` folder under --out; `bench/long_context_report.py` makes the table.
Tasks: s-niah, oolong-lite, oolong-pairs-lite (grep answers them) and the reading tasks (reading-posts,
reading-posts-pairs, reading-logs, reading-tickets), where the class of each record must be read.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from recursa.eval.bench import parse_method_specs, run_bench
from recursa.eval.tasks import load_tasks
from recursa.models import registry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="s-niah,oolong-lite")
    parser.add_argument("--sizes", default="32000,256000,1000000")
    parser.add_argument("--limit", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default=None)
    parser.add_argument("--methods", default="rlm[max_iterations=6],rlm[max_depth=0;max_iterations=6],"
                                             "single-truncated[max_context_tokens=8192]")
    parser.add_argument("--max-tokens", type=int, default=384)
    parser.add_argument("--out", type=Path, default=Path("runs/long-context"))
    args = parser.parse_args()

    model = registry.load(args.model)
    specs = parse_method_specs(args.methods)
    for task_name in args.tasks.split(","):
        for size in (int(s) for s in args.sizes.split(",")):
            tasks = load_tasks(task_name, limit=args.limit, seed=args.seed, context_chars=size)
            out_dir = args.out / f"{task_name}-{size}"
            print(f"{task_name} @ {size:,} chars: {len(tasks)} tasks -> {out_dir}", flush=True)
            run_bench(model, tasks, specs, out_dir, task_name=task_name, batch_size=1,
                      base_options={"max_tokens": args.max_tokens, "temperature": 0.0},
                      seed=args.seed, task_options={"limit": args.limit, "context_chars": size}, show_progress=False)


if __name__ == "__main__":
    main()
