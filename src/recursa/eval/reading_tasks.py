"""Long-context tasks that need reading: the class of each record is written in varied words, never as a label.

    reading_posts(n=5, context_chars=32_000, seed=0)        # forum posts: how many of a member's posts are on a topic
    reading_posts_pairs(n=5, context_chars=32_000, seed=0)  # pairs of members who posted on a topic in a date window
    reading_logs(n=5, context_chars=32_000, seed=0)         # service logs: how many of a service's errors are of a kind
    reading_tickets(n=5, context_chars=32_000, seed=0)      # support tickets: how many about a product make a complaint

Every record names its group (member, service, product) and date plainly, so a program can select the records a
question is about; whether a record is on the asked topic has to be read: each class has 8-12 phrasings that share
no key word, and the question names the class in words its phrasings avoid (`reading_phrases.py`). Each group
has its own mix of classes, so counts vary. Seeded, deterministic, pure. Scored as OOLONG: 0.75^|error| for counts,
F1 over pairs.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable
from dataclasses import dataclass

from recursa.eval import reading_phrases as phrases
from recursa.methods.base import Task

START = dt.date(2023, 3, 1)
_SERVICES = ("atlas", "birch", "cobalt", "delta", "ember", "fjord", "garnet", "heron", "iris", "juniper", "kestrel",
             "lumen", "maple", "nimbus", "onyx", "pine", "quartz", "raven", "sable", "tundra")
PAIRS_EXAMPLE = "Answer with the pairs, like (1234, 5678), (1234, 6789)."


@dataclass(frozen=True)
class Record:
    """One line of a reading task's context with what a reader should find in it."""

    group: str
    day: dt.date
    label: str
    line: str


@dataclass(frozen=True)
class _Family:
    classes: dict[str, tuple[str, list[str]]]
    groups: Callable[[random.Random, int], list[str]]
    render: Callable[[random.Random, str, dt.date, str, str], str]
    per_group: int            # about this many records per group
    per_day: float            # records per day
    other: str | None = None  # a class never asked about (e.g. INFO lines, praise)


def _slots(rng: random.Random) -> dict[str, str]:
    host = f"10.{rng.randint(0, 9)}.{rng.randint(0, 255)}.{rng.randint(2, 250)}"
    return {"n": str(rng.randint(2, 900)), "host": host,
            "svc2": f"{rng.choice(_SERVICES)}-{rng.randint(1, 9)}", "user": f"u{rng.randint(100, 999)}",
            "vol": f"/dev/sd{rng.choice('abcdef')}{rng.randint(1, 4)}"}


def _clock(rng: random.Random) -> str:
    return f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}"


def _post(rng: random.Random, group: str, day: dt.date, label: str, text: str) -> str:
    prefix = rng.choice(phrases.POST_NOISE)
    if prefix and not prefix.endswith(": "):
        text = text[0].lower() + text[1:]
    return f"[{day} {_clock(rng)}] member {group}: {prefix}{text}{rng.choice(phrases.POST_TAILS)}"


def _log(rng: random.Random, group: str, day: dt.date, label: str, text: str) -> str:
    level = "INFO" if label == "info" else "ERROR"
    return f"{day} {_clock(rng)}:{rng.randint(0, 59):02d} {level} {group}: {text.format(**_slots(rng))}"


def _ticket(rng: random.Random, group: str, day: dt.date, label: str, text: str) -> str:
    tail = "" if label == "none" else rng.choice(phrases.TICKET_TAILS).format(**_slots(rng))
    return f"#{rng.randint(10_000, 99_999)} {day} product {group}: {text}{tail}"


def _members(rng: random.Random, count: int) -> list[str]:
    return [str(x) for x in sorted(rng.sample(range(1000, 9999), count))]


def _services(rng: random.Random, count: int) -> list[str]:
    names = [f"{name}-{k}" for name in _SERVICES for k in range(1, 10)]
    return sorted(rng.sample(names, min(count, len(names))))


def _products(rng: random.Random, count: int) -> list[str]:
    return [f"P-{x}" for x in sorted(rng.sample(range(100, 1000), count))]


FAMILIES = {
    "posts": _Family(phrases.POSTS, _members, _post, per_group=30, per_day=6.0),
    "logs": _Family({**phrases.LOG_ERRORS, "info": ("", list(phrases.LOG_INFO))}, _services, _log, per_group=40,
                    per_day=12.0, other="info"),
    "tickets": _Family(phrases.TICKETS, _products, _ticket, per_group=30, per_day=8.0, other="none"),
}
_AVERAGE_CHARS = {"posts": 95, "logs": 80, "tickets": 95}


def records(family: str, rng: random.Random, context_chars: int) -> list[Record]:
    """Lines of one context (at most `context_chars` characters together), in date order."""
    fam = FAMILIES[family]
    groups = fam.groups(rng, max(5, context_chars // _AVERAGE_CHARS[family] // fam.per_group))
    labels = list(fam.classes)
    mix = {g: [rng.random() ** 2 + 0.05 for _ in labels] for g in groups}
    if fam.other is not None:  # the class nobody asks about is a steady share of every group
        for weights in mix.values():
            weights[labels.index(fam.other)] = 0.25 * sum(weights)
    out: list[Record] = []
    total, day = 0, START
    while True:
        if rng.random() < 1 / fam.per_day:
            day += dt.timedelta(days=1)
        group = rng.choice(groups)
        label = rng.choices(labels, weights=mix[group])[0]
        line = fam.render(rng, group, day, label, rng.choice(fam.classes[label][1]))
        if total + len(line) + 1 > context_chars:
            return out
        out.append(Record(group, day, label, line))
        total += len(line) + 1


def _count_task(family: str, name: str, rng: random.Random, items: list[Record], template: str) -> tuple[str, str]:
    fam = FAMILIES[family]
    group = rng.choice(sorted({r.group for r in items}))
    present = sorted({r.label for r in items if r.group == group and r.label != fam.other})
    label = rng.choice(present or [c for c in fam.classes if c != fam.other])
    gold = sum(r.group == group and r.label == label for r in items)
    return template.format(group=group, what=fam.classes[label][0]) + " Answer with a number.", str(gold)


def _pairs_task(rng: random.Random, items: list[Record]) -> tuple[str, str]:
    """Members with a post on a topic inside a date window of about 40 posts; at least 3 of them."""
    days = sorted({r.day for r in items})
    span = max(1, round(40 / FAMILIES["posts"].per_day))
    for _ in range(200):
        first = rng.randrange(max(1, len(days) - span + 1))
        window = days[first:first + span]
        label = rng.choice(list(phrases.POSTS))
        holders = sorted({int(r.group) for r in items if r.label == label and window[0] <= r.day <= window[-1]})
        if len(holders) >= 3:
            break
        span += 1
    gold = [(a, b) for i, a in enumerate(holders) for b in holders[i + 1:]]
    question = (f"List every pair of member IDs (a, b) with a < b such that both members wrote at least one post "
                f"about {phrases.POSTS[label][0]} between {window[0]} and {window[-1]} (both days included). "
                + PAIRS_EXAMPLE)
    return question, ", ".join(f"({a}, {b})" for a, b in gold)


_COUNT_TEMPLATES = {
    "posts": "How many posts by member {group} are about {what}?",
    "logs": "How many ERROR lines of service {group} report an error that {what}?",
    "tickets": "How many tickets about product {group} say that {what}?",
}
TASKS = {"reading-posts": "posts", "reading-posts-pairs": "posts", "reading-logs": "logs",
         "reading-tickets": "tickets"}


def build(name: str, context_chars: int, seed: int, index: int) -> tuple[Task, list[Record]]:
    """Task `index` of `name` and the records its context was written from (what a perfect reader sees)."""
    family = TASKS[name]
    rng = random.Random(f"{name}/{seed}/{context_chars}/{index}")
    items = records(family, rng, context_chars)
    if name.endswith("-pairs"):
        question, answer = _pairs_task(rng, items)
        scorer = "pairs_f1"
    else:
        question, answer = _count_task(family, name, rng, items, _COUNT_TEMPLATES[family])
        scorer = "oolong_number"
    context = "\n".join(r.line for r in items)
    task = Task(id=f"{name}-{context_chars}-{seed}-{index}", question=question, answer=answer, context=context,
                meta={"scorer": scorer, "answer_format": "text", "records": len(items),
                      "context_chars": len(context)})
    return task, items


def generate(name: str, n: int, context_chars: int, seed: int) -> list[Task]:
    return [build(name, context_chars, seed, index)[0] for index in range(n)]


def reading_posts(n: int = 5, context_chars: int = 32_000, seed: int = 0) -> list[Task]:
    return generate("reading-posts", n, context_chars, seed)


def reading_posts_pairs(n: int = 5, context_chars: int = 32_000, seed: int = 0) -> list[Task]:
    return generate("reading-posts-pairs", n, context_chars, seed)


def reading_logs(n: int = 5, context_chars: int = 32_000, seed: int = 0) -> list[Task]:
    return generate("reading-logs", n, context_chars, seed)


def reading_tickets(n: int = 5, context_chars: int = 32_000, seed: int = 0) -> list[Task]:
    return generate("reading-tickets", n, context_chars, seed)


GENERATORS = {"reading-posts": reading_posts, "reading-posts-pairs": reading_posts_pairs,
              "reading-logs": reading_logs, "reading-tickets": reading_tickets}
