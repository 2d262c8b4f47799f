"""The `knowledge` toolkit: BM25 over a folder's passages, and an entry named by a hit's text brought along."""

import json

from recursa.methods.aime.toolkits import ToolEnv, build
from recursa.methods.aime.toolkits.knowledge import KnowledgeBase

ISLANDS = {
    "Isle of Varn": "Varn is a fishing island whose lighthouse is the Osker light.",
    "Osker light": "The Osker light stands 41 m tall and was lit in 1871.",
    "Dunmere light": "The Dunmere light stands 18 m tall.",
    "Pell light": "The Pell light stands 27 m tall.",
    "Isle of Tam": "Tam has no lighthouse.",
}


def _base(tmp_path, entries=ISLANDS):
    folder = tmp_path / "kb"
    folder.mkdir()
    (folder / "atlas.json").write_text(json.dumps(entries))
    (folder / "notes.md").write_text("Harbour fees rise in winter.\n\nFerries to Tam run on Sundays.")
    return KnowledgeBase(folder)


def test_json_entries_and_paragraphs_are_passages_ranked_by_bm25(tmp_path):
    base = _base(tmp_path)
    assert len(base.passages) == len(ISLANDS) + 2
    assert base.search("ferries Sundays")[0].text == "Ferries to Tam run on Sundays."
    assert base.search("harbour fees", k=1)[0].source == "notes.md"
    assert base.search("zzz unknown words") == []
    assert base.search("   ") == []


def test_an_entry_named_by_a_hit_comes_right_after_it(tmp_path):
    base = _base(tmp_path)
    found = base.search("How tall is the lighthouse of Varn?")
    titles = [p.title for p in found]
    assert titles[0] == "Isle of Varn"
    assert titles[1] == "Osker light"          # named in Varn's entry, shares no word with the question but "light"
    assert len(titles) == len(set(titles))


def test_a_title_is_matched_as_whole_words_and_an_entry_never_links_itself(tmp_path):
    base = _base(tmp_path, {"Ren": "Ren is a cat.", "Rena": "Rena is a town near Renault.",
                            "Port Ulm": "Port Ulm: a port; see Port Ulm harbour."})
    rena = next(p for p in base.passages if p.title == "Rena")
    assert base.linked(rena) == []             # "Ren" appears only inside "Rena" and "Renault"
    port = next(p for p in base.passages if p.title == "Port Ulm")
    assert base.linked(port) == []


def test_the_search_tool_lists_passages_without_file_names(tmp_path):
    env = ToolEnv(tmp_path, model=None, budget=None, knowledge=_base(tmp_path))
    search = build(["knowledge"], env)[0].tools[0]
    shown = search.run(search.args(query="lighthouse of Varn"))
    lines = shown.splitlines()
    assert lines[0] == "From the knowledge base (not files of the workspace):"
    assert lines[1].startswith("- Isle of Varn:") and lines[2].startswith('- Osker light: "The Osker light stands')
    assert "atlas.json" not in shown
    assert search.run(search.args(query="qqq")) == "no passage matches; try other words"
