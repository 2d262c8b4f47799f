"""How well a model reads one line at a time, the step an RLM's per-line sub-calls rely on, asked in several styles.

    python bench/reader_probe.py --model qwen2.5-coder-1.5b --tasks 2 --out runs/reader-probe.jsonl

For each count task of the reading families (`recursa.eval.reading_tasks`, 32k characters, seed 0) it keeps the
lines a good root would keep with plain filters (the asked group; ERROR lines for logs) and asks the model about
each line, once per prompt style, as `llm_query_batched` would (the RLM's sub-call system prompt, greedy). It
reports, per style: accuracy, precision and recall of "this line is about the class", and the graded count score
(0.75^|error|) that counting the positive answers would earn. The styles are generic ways to phrase a yes/no
reading question; none names a family.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from recursa.eval import reading_tasks
from recursa.methods.rlm import prompting
from recursa.models import registry
from recursa.models.base import Sampling

STYLES = {
    # the style of the RLM prompt's example: the question first, then the line
    "yes-no-before": ("Is this entry about {what}? Answer yes or no.\n\nEntry: {line}", 4),
    # the line first, then the question
    "yes-no-after": ("Entry: {line}\n\nIs this entry about {what}? Answer yes or no.", 4),
    # two named options instead of yes/no
    "two-options": ("Entry: {line}\n\nWhich describes this entry better? Answer A or B only.\n"
                    "A) it is about {what}\nB) it is about something else", 4),
    # say what the line is about first, then judge
    "describe-then-judge": ("Entry: {line}\n\nFirst say in a few words what this entry is about. Then, on a new "
                            "line, write 'Verdict: yes' if it is about {what}, otherwise 'Verdict: no'.", 48),
}


def positive(style: str, reply: str) -> bool:
    text = reply.strip().lower()
    if style == "two-options":
        return text.startswith("a")
    if style == "describe-then-judge":
        found = re.findall(r"verdict:\s*(yes|no)", text)
        return bool(found) and found[-1] == "yes"
    return text.startswith("yes")


# A hand-written check from a domain no task generates (restaurant reviews; "slow service" in varied words), so a
# style that only suits the generators' phrasings shows here.
HELDOUT_WHAT = "slow service"
HELDOUT = [
    (True, "We sat for forty minutes before anyone came to take our order."),
    (False, "The soup was far too salty and the bread was stale."),
    (True, "Our mains arrived an hour after the starters; the kitchen seemed to have forgotten us."),
    (False, "Prices have gone up a lot since last year, hard to justify."),
    (True, "Waited ages for the bill, had to walk up to the counter in the end."),
    (False, "Lovely terrace, though the music was so loud we could not talk."),
    (True, "The waiter kept promising our drinks were 'coming right up' for half an hour."),
    (False, "The tables were sticky and the floor had not been swept."),
    (False, "Staff were charming and remembered my name from last time."),
    (True, "It took so long between courses that the children fell asleep."),
    (False, "Portions are tiny for what you pay."),
    (False, "The fish was perfectly cooked, best I have had in town."),
    (True, "Nobody came back to our table after the food was served; we could not even order dessert."),
    (False, "Parking nearby is impossible on weekends."),
    (False, "The vegetarian options were limited to one pasta dish."),
    (True, "Two hours for a three-course lunch is not acceptable on a weekday."),
    (False, "My steak was served cold and overcooked."),
    (False, "The wine list is excellent and fairly priced."),
    (True, "We watched three tables that came in after us get served first."),
    (False, "The restroom was out of soap and paper towels."),
    (False, "A bit noisy, but the atmosphere is friendly."),
    (False, "They charged us for bottled water we never asked for."),
    (False, "The dessert was too sweet for my taste."),
    (False, "Booking online was easy and they had our table ready."),
]


def lines_and_gold(name: str, index: int) -> tuple[str, list[str], list[bool], int]:
    task, items = reading_tasks.build(name, 32_000, 0, index)
    family = reading_tasks.TASKS[name]
    match = re.search(r"(?:member|service|product) (\S+) ", task.question)
    group = match.group(1)
    kept = [r for r in items if r.group == group and (family != "logs" or "ERROR" in r.line)]
    classes = reading_tasks.FAMILIES[family].classes
    label = next(lab for lab, (what, _) in classes.items() if what and what in task.question)
    return classes[label][0], [r.line for r in kept], [r.label == label for r in kept], int(task.answer)


def probe(model, style: str, what: str, lines: list[str], gold: list[bool]) -> dict:
    """Ask about every line in one style (batches of 16, as the RLM's sub-calls run) and count the answers."""
    template, max_tokens = STYLES[style]
    system = prompting.render("sub_system")
    convs = [[{"role": "system", "content": system},
              {"role": "user", "content": template.format(what=what, line=line)}] for line in lines]
    replies = []
    for start in range(0, len(convs), 16):
        replies += [c.text for c in model.generate(convs[start:start + 16],
                                                   Sampling(max_tokens=max_tokens, temperature=0.0))]
    said = [positive(style, r) for r in replies]
    pairs = list(zip(said, gold, strict=True))
    return {"lines": len(lines), "said_yes": sum(said), "true_pos": sum(s and g for s, g in pairs),
            "correct": sum(s == g for s, g in pairs), "replies": replies[:5]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="qwen2.5-coder-1.5b")
    parser.add_argument("--tasks", type=int, default=2, help="count tasks per family")
    parser.add_argument("--styles", default=",".join(STYLES))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--only-heldout", action="store_true")
    parser.add_argument("--report", action="store_true", help="only print the table of --out")
    args = parser.parse_args()
    if args.report:
        report(args.out)
        return
    model = registry.load(args.model)
    cases = [("heldout-reviews", HELDOUT_WHAT, [line for _, line in HELDOUT], [g for g, _ in HELDOUT],
              sum(g for g, _ in HELDOUT))]
    cases += [(f"{name}-{index}", *lines_and_gold(name, index))
              for name in ("reading-posts", "reading-logs", "reading-tickets") for index in range(args.tasks)
              if not args.only_heldout]
    with args.out.open("a", encoding="utf-8") as out:
        for task_name, what, lines, gold, count in cases:
            for style in args.styles.split(","):
                row = {"model": args.model, "task": task_name, "style": style, "gold": count,
                       **probe(model, style, what, lines, gold)}
                out.write(json.dumps(row) + "\n")
                out.flush()
                print(task_name, style, f"gold {count} said {row['said_yes']} tp {row['true_pos']} "
                      f"acc {row['correct']}/{len(lines)}", flush=True)
    report(args.out)


def report(path: Path) -> None:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    print("| model | style | tasks | line accuracy | precision | recall | mean graded count score |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for key in sorted({(r["model"], r["style"]) for r in rows}):
        part = [r for r in rows if (r["model"], r["style"]) == key]
        lines = sum(r["lines"] for r in part)
        said, tp, gold = (sum(r[k] for r in part) for k in ("said_yes", "true_pos", "gold"))
        score = sum(0.75 ** abs(r["said_yes"] - r["gold"]) for r in part) / len(part)
        print(f"| {key[0]} | {key[1]} | {len(part)} | {sum(r['correct'] for r in part) / lines:.2f} | "
              f"{tp / max(said, 1):.2f} | {tp / max(gold, 1):.2f} | {score:.2f} |")


if __name__ == "__main__":
    main()
