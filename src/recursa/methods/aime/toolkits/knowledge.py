"""`knowledge`: BM25 search over the files of `--knowledge DIR` (rank-bm25), and retrieval for actor prompts.

Text files are split into paragraphs; a JSON file of records or of key → value pairs gives one passage per entry,
titled by its key. A hit that names another entry's title brings that entry along (a wiki's link followed: "X lies
on the Y river" is of little use without Y's own entry, which shares no words with the question).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, Field

from recursa.methods.aime.toolkits.base import Tool, ToolEnv, Toolkit

PASSAGE_CHARS = 600
_WORD = re.compile(r"[a-z0-9]+")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


MIN_TITLE_CHARS = 4


@dataclass
class Passage:
    source: str
    text: str
    title: str = ""


def _passages(path: Path, root: Path) -> list[Passage]:
    name = str(path.relative_to(root))
    raw = path.read_text(encoding="utf-8", errors="replace")
    if path.suffix == ".json":
        try:
            data = json.loads(raw)
        except json.JSONDecodeError:
            data = None
        items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else None
        if items is not None:
            return [Passage(name, f"{key}: {json.dumps(value, ensure_ascii=False)}"[:PASSAGE_CHARS * 2],
                            str(key) if isinstance(key, str) else "") for key, value in items]
    chunks: list[str] = []
    for paragraph in re.split(r"\n\s*\n", raw):
        paragraph = paragraph.strip()
        while paragraph:
            chunks.append(paragraph[:PASSAGE_CHARS])
            paragraph = paragraph[PASSAGE_CHARS:]
    return [Passage(name, chunk) for chunk in chunks]


class KnowledgeBase:
    """BM25 (Okapi) over passages of every .txt, .md and .json file under a folder."""

    def __init__(self, folder: Path | str):
        from rank_bm25 import BM25Okapi

        self.folder = Path(folder)
        files = sorted(p for p in self.folder.rglob("*") if p.is_file() and p.suffix in (".txt", ".md", ".json"))
        self.passages = [passage for path in files for passage in _passages(path, self.folder)]
        self._index = BM25Okapi([words(p.text) or ["_"] for p in self.passages]) if self.passages else None
        self._titled = [(re.compile(rf"(?<!\w){re.escape(p.title)}(?!\w)", re.IGNORECASE), p)
                        for p in self.passages if len(p.title) >= MIN_TITLE_CHARS]

    def search(self, query: str, k: int = 3) -> list[Passage]:
        """The k best BM25 passages, each followed by the entries it names by title (at most k of those)."""
        if self._index is None or not words(query):
            return []
        scores = self._index.get_scores(words(query))
        best = [self.passages[i] for i in sorted(range(len(scores)), key=lambda i: -scores[i])[:k] if scores[i] > 0]
        found: list[Passage] = []
        links = 0
        for hit in best:
            if hit not in found:
                found.append(hit)
            for linked in self.linked(hit):
                if links < k and linked not in found and linked not in best:
                    found.append(linked)
                    links += 1
        return found

    def linked(self, passage: Passage) -> list[Passage]:
        """Other entries whose title the passage's text names."""
        body = passage.text[len(passage.title):] if passage.title else passage.text
        return [other for pattern, other in self._titled if other is not passage and pattern.search(body)]


def shown(found: list[Passage]) -> str:
    """Passages as an actor sees them: without their file names, which small models took for workspace files
    (`open('wiki.json')`, `import wiki`) and then wrote invented copies of."""
    return "\n".join(f"- {p.text}" for p in found)


class SearchArgs(BaseModel):
    query: str = Field(max_length=200)


def toolkit(env: ToolEnv) -> Toolkit:
    def search(args: SearchArgs) -> str:
        found = env.knowledge.search(args.query) if env.knowledge is not None else []
        if not found:
            return "no passage matches; try other words"
        return "From the knowledge base (not files of the workspace):\n" + shown(found)

    return Toolkit("knowledge", "search the knowledge base (reference documents and facts)",
                   [Tool("search_knowledge", "search the knowledge base with keywords", SearchArgs, search)])
