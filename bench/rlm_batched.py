"""`llm_query_batched` over 16 chunks vs 16 sequential `llm_query` calls, both from code inside the RLM's REPL.

    python bench/rlm_batched.py [--chunks 16] [--chunk-chars 1500] [--max-tokens 32] [--model qwen2.5-coder-0.5b]

Same process, same prompts, same sandbox path (REPL -> callback -> ChatModel.generate); the order of the two runs
alternates per repeat so that load drift on a shared machine hits both.
"""

from __future__ import annotations

import argparse
import json
import time

from recursa.eval.long_context import s_niah
from recursa.methods.rlm.loop import RecursiveLM
from recursa.models import registry

QUESTIONS = {"yes-no": "Does this text mention a special magic number? Reply with yes or no only.\n\nText:\n",
             "summary": "Summarise this text in two sentences.\n\nText:\n"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=16)
    parser.add_argument("--chunk-chars", type=int, default=1500)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--model", default=None)
    parser.add_argument("--question", choices=sorted(QUESTIONS), default="yes-no",
                        help="yes-no: prefill-bound (short answers); summary: decode-bound (long answers)")
    args = parser.parse_args()

    model = registry.load(args.model)
    task = s_niah(n=1, context_chars=args.chunks * args.chunk_chars, seed=0)[0]
    rlm = RecursiveLM(model, sub_max_tokens=args.max_tokens)
    question = QUESTIONS[args.question]
    setup = f"prompts = [{question!r} + p for p in chunks({args.chunk_chars})][:{args.chunks}]\nprint(len(prompts))"
    codes = {"batched": "t = __import__('time').perf_counter()\nr = llm_query_batched(prompts)\n"
                        "print(round(__import__('time').perf_counter() - t, 3))",
             "sequential": "t = __import__('time').perf_counter()\nr = [llm_query(p) for p in prompts]\n"
                           "print(round(__import__('time').perf_counter() - t, 3))"}
    results: dict[str, list[float]] = {"batched": [], "sequential": []}
    calls: dict[str, int] = {}
    with rlm.open_repl(task.context, chunk_chars=args.chunk_chars) as repl:
        print("chunks:", repl.execute(setup).text())
        for repeat in range(args.repeats):
            order = ["sequential", "batched"] if repeat % 2 == 0 else ["batched", "sequential"]
            for name in order:
                before = repl.sub_calls
                out = repl.execute(codes[name])
                assert out.ok, out.text()
                results[name].append(float(out.stdout.strip()))
                calls[name] = repl.sub_calls - before
    seq, bat = min(results["sequential"]), min(results["batched"])
    report = {"model": model.name, "question": args.question, "chunks": args.chunks, "chunk_chars": args.chunk_chars,
              "max_tokens": args.max_tokens, "sequential_s": results["sequential"], "batched_s": results["batched"],
              "sub_calls": calls, "speedup": round(seq / bat, 2)}
    print(json.dumps(report))


if __name__ == "__main__":
    started = time.perf_counter()
    main()
    print(f"total {time.perf_counter() - started:.0f} s")
