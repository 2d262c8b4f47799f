"""The board on a terminal, redrawn as it changes (rich Live); the final board stays on screen."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.live import Live
from rich.panel import Panel
from rich.text import Text

_STYLE = {"[x]": "green", "[~]": "yellow", "[!]": "red", "[-]": "dim"}


def render(markdown: str) -> Panel:
    text = Text()
    for line in markdown.splitlines():
        style = next((s for mark, s in _STYLE.items() if mark in line[:12 + len(line) - len(line.lstrip())]), "")
        text.append(line + "\n", style=style)
    return Panel(text, title="aime board", expand=False)


class LiveBoard:
    """`update(board)` on every board change, `close(board)` at the end (prints the final board)."""

    def __init__(self, console: Console | None = None):
        self.console = console or Console(stderr=True)
        self._live: Live | None = None

    def update(self, board: Any) -> None:
        panel = render(board.markdown())
        if self._live is None:
            self._live = Live(panel, console=self.console, refresh_per_second=4, transient=True)
            self._live.start()
        else:
            self._live.update(panel)

    def close(self, board: Any) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
        self.console.print(render(board.markdown()))
        self.console.print(f"aime run {board.path.parent.name} (continue it with --resume {board.path.parent.name})")
