"""What every `recursa` command prints through: one stderr console and one way to fail."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.markup import escape

console = Console(stderr=True)


def fail(message: str) -> None:
    """Print one clear error line and exit with status 2."""
    console.print(f"[bold red]error:[/] {escape(message)}")
    raise typer.Exit(2)
