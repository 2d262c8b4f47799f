"""`workspace`: read, write and list files inside the run's workspace, and nowhere else.

A path is relative, has no `..`, and passes through no symbolic link: anything else is refused, so an actor cannot
reach outside the workspace even through a link planted inside it.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field

from recursa.methods.aime.toolkits.base import Tool, ToolEnv, ToolFailure, Toolkit

MAX_READ_CHARS = 4000
MAX_FILES_LISTED = 50
LONG_FILE_BYTES = 32_000        # beyond what an actor can read into its prompt (~8k tokens)


def resolve(workspace: Path, relative: str) -> Path:
    """`relative` inside `workspace`, or ToolFailure when it would leave it (absolute, `..`, a symlink)."""
    if not relative or not relative.strip():
        raise ToolFailure("empty path; give a path relative to the workspace, e.g. notes/summary.md")
    raw = Path(relative.strip())
    if raw.is_absolute() or raw.drive:
        raise ToolFailure(f"refused: {relative!r} is absolute; paths are relative to the workspace")
    root = workspace.resolve()
    path = root
    try:   # a name the file system cannot hold (small models put prose in a path) is refused, not a crash
        for part in raw.parts:
            if part == "..":
                raise ToolFailure(f"refused: {relative!r} leaves the workspace ('..')")
            if part in ("", "."):
                continue
            path = path / part
            if path.is_symlink():
                raise ToolFailure(f"refused: {relative!r} goes through a symbolic link")
        inside = path == root or root in path.resolve().parents
    except OSError as exc:
        raise ToolFailure(f"refused: {relative[:80]!r}... is not a usable path ({exc.strerror})") from None
    if not inside:
        raise ToolFailure(f"refused: {relative!r} is outside the workspace")
    return path


def list_files(workspace: Path) -> list[str]:
    root = workspace.resolve()
    found = [str(p.relative_to(root)) for p in sorted(root.rglob("*"))
             if p.is_file() and not p.is_symlink() and not any(s.startswith(".") for s in p.relative_to(root).parts)]
    return found[:MAX_FILES_LISTED]


def workspace_files(workspace: Path, long: list[str] | None = None) -> str:
    """The workspace's files as actors and the planner are told them."""
    long = long_files(workspace) if long is None else long
    return ", ".join(f"{name} (too long to read whole)" if name in long else name
                     for name in list_files(workspace)) or "none"


def long_files(workspace: Path) -> list[str]:
    """The workspace's files too long to read whole into an actor's prompt."""
    root = workspace.resolve()
    return [name for name in list_files(workspace) if (root / name).stat().st_size > LONG_FILE_BYTES]


class ReadArgs(BaseModel):
    path: str = Field(max_length=200)


class WriteArgs(BaseModel):
    path: str = Field(max_length=200)
    content: str = Field(max_length=700)   # with the path and thought, within the actor's token default (see python.py)


class ListArgs(BaseModel):
    pass


def toolkit(env: ToolEnv) -> Toolkit:
    def read(args: ReadArgs) -> str:
        path = resolve(env.workspace, args.path)
        if not path.is_file():
            raise ToolFailure(f"no file {args.path!r}; files: {', '.join(list_files(env.workspace)) or 'none'}")
        text = path.read_text(encoding="utf-8", errors="replace")
        if len(text) <= MAX_READ_CHARS:
            return text
        # said first: observations are cut to the actor's window, so a note at the end would never be seen
        return (f"[{args.path} has {len(text):,} characters; only its beginning is shown. Find what you need in "
                f"the whole file with code, or with ask_document where you have it.]\n" + text[:MAX_READ_CHARS])

    def write(args: WriteArgs) -> str:
        path = resolve(env.workspace, args.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(args.content, encoding="utf-8")
        relative = str(path.relative_to(env.workspace.resolve()))
        if relative not in env.written:
            env.written.append(relative)
        return f"wrote {len(args.content)} characters to {relative}"

    def listing(_: ListArgs) -> str:
        return "\n".join(list_files(env.workspace)) or "(the workspace is empty)"

    return Toolkit("workspace", "read, write and list files in the workspace", [
        Tool("read_file", "read a workspace file (text)", ReadArgs, read),
        Tool("write_file", "write text to a workspace file (creates or replaces it)", WriteArgs, write, writes=True),
        Tool("list_files", "list the workspace's files", ListArgs, listing),
    ])
