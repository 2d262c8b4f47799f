"""Speed benchmark of the local backend (decode/prefill tok/s vs the memory-bandwidth limit).

    python bench/speed.py [--model NAME] [--new-tokens 128] [--out runs/speed.json] [--no-profile]
"""

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from rich.console import Console  # noqa: E402

from recursa.eval.speed import render, run_speed_bench  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model name (default: the embedded default model)")
    parser.add_argument("--new-tokens", type=int, default=128, help="decoded tokens per row")
    parser.add_argument("--batches", default="1,8", help="comma-separated decode batch sizes")
    parser.add_argument("--prompt-tokens", type=int, default=512, help="prefill prompt length")
    parser.add_argument("--repeats", type=int, default=2, help="runs per measure; the fastest counts")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: RECURSA_THREADS or all)")
    parser.add_argument("--no-profile", action="store_true", help="skip the torch.profiler breakdown")
    parser.add_argument("--no-generate", action="store_true", help="skip the transformers generate() comparison")
    parser.add_argument("--out", type=Path, default=Path("runs") / f"speed-{time.strftime('%Y%m%d-%H%M%S')}.json")
    args = parser.parse_args()
    console = Console(stderr=True)
    results = run_speed_bench(args.model, new_tokens=args.new_tokens,
                              batches=tuple(int(b) for b in args.batches.split(",")),
                              prompt_tokens=args.prompt_tokens, repeats=args.repeats, profile=not args.no_profile,
                              compare_generate=not args.no_generate,
                              threads=args.threads, out=args.out, progress=lambda m: console.log(m))
    Console().print(render(results))
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
