"""`python`: run Python in the sandbox (core/sandbox.py `PythonWorker`), with the workspace's files as its cwd.

The worker keeps its variables between calls. Its work directory is a copy of the workspace: files are copied in
before each block and new or changed files are copied back after it (never through links), so code reads and
writes workspace files by relative name while the sandbox still sees nothing else of the host.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from pydantic import BaseModel, Field

from recursa.core.sandbox import PythonWorker
from recursa.methods.aime.toolkits.base import Tool, ToolEnv, ToolFailure, Toolkit
from recursa.methods.aime.toolkits.code_repair import repair_code
from recursa.methods.aime.toolkits.workspace import list_files, resolve

MAX_FILE_BYTES = 5_000_000
_INTERNAL = {"worker.log"}


# Code travels inside a JSON string. A small model that writes a bare `"` in it ends the string under the schema
# constraint and loses the rest of its line. With `"` excluded and the code ending in a newline, the string can only
# close at the end of a line, and mid-line the mask steers the model to `'` (no escaping needed). The pattern is a
# decoding constraint only: code from a backend without one is still accepted as written. llguidance 1.9 lets an
# escaped quote through a class that excludes only `"` (`[^"]`); excluding NUL too makes it check escapes.
CODE_WITHOUT_DOUBLE_QUOTES = r'^[^"\x00]*\n$'


# The caps of a reply's strings (this one, the 240-character thought) fit the actor's 384-token default together,
# so a reply that runs to a cap is still closed by the schema constraint instead of cut off by the token limit.
class PythonArgs(BaseModel):
    code: str = Field(max_length=900, json_schema_extra={"pattern": CODE_WITHOUT_DOUBLE_QUOTES},
                      description="Python source ending in a newline; string literals in single quotes")


# The workspace tools, callable from code too: small models write `write_file('out.txt', ...)` inside run_python (a
# NameError in 6 of 191 goal traces, each followed by a drift of steps); the files land in the workspace as usual.
TOOLS_IN_CODE = """
def write_file(path, content):
    with open(path, 'w') as handle:
        handle.write(str(content))
    return f'wrote {len(str(content))} characters to {path}'

def read_file(path):
    with open(path) as handle:
        return handle.read()
"""


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class WorkspaceSync:
    """Copies workspace files into the worker's directory and new or changed ones back."""

    def __init__(self, env: ToolEnv, workdir: Path):
        self.env, self.workdir = env, workdir
        self.known: dict[str, str] = {}

    def push(self) -> None:
        for relative in list_files(self.env.workspace):
            source = self.env.workspace.resolve() / relative
            if source.stat().st_size > MAX_FILE_BYTES:
                continue
            digest = _digest(source)
            if self.known.get(relative) != digest:
                target = self.workdir / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, target)
                self.known[relative] = digest

    def pull(self) -> list[str]:
        changed = []
        for path in sorted(self.workdir.rglob("*")):
            relative = str(path.relative_to(self.workdir))
            if (path.is_symlink() or not path.is_file() or relative in _INTERNAL or relative.startswith(".")
                    or "__pycache__" in relative or path.stat().st_size > MAX_FILE_BYTES):
                continue
            digest = _digest(path)
            if self.known.get(relative) == digest:
                continue
            try:
                target = resolve(self.env.workspace, relative)
            except ToolFailure:
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
            self.known[relative] = digest
            changed.append(relative)
            if relative not in self.env.written:
                self.env.written.append(relative)
        return changed


# What reaching outside raises in a sandbox without a network; not a bare ConnectionError, which a workspace's own
# code may raise for a service of its own (a 1.5B actor was told "no network" about a local module's error)
_NETWORK_ERRORS = ("NameResolutionError", "gaierror", "URLError", "Max retries exceeded", "Network is unreachable",
                   "Temporary failure in name resolution", "Name or service not known")


def _with_network_hint(text: str, env: ToolEnv) -> str:
    """A failure that came from reaching for the network, told as such first (the end of a traceback may be cut
    from the observation): small models answer a connection error by calling the same imagined API again."""
    if not any(marker in text for marker in _NETWORK_ERRORS):
        return text
    files = ", ".join(list_files(env.workspace)) or "none"
    return f"there is no network here; use the workspace's files and tools instead (files: {files}).\n{text}"


def toolkit(env: ToolEnv) -> Toolkit:
    worker = PythonWorker(timeout=float(env.options.get("block_timeout", 20.0)), max_output_chars=2000)
    sync = WorkspaceSync(env, worker.workdir)
    prelude: list[bool] = []

    def run(args: PythonArgs) -> str:
        if not prelude:
            prelude.append(worker.execute(TOOLS_IN_CODE).ok)
        sync.push()
        result = worker.execute(repair_code(args.code))
        changed = sync.pull()
        env.code_wrote += changed
        text = result.text()
        if changed:
            text += f"\n(files written: {', '.join(changed)})"
        if not result.ok:
            raise ToolFailure(_with_network_hint(text, env))
        return text

    return Toolkit("python", "run Python code (a persistent session; the workspace files are in its folder)",
                   [Tool("run_python", "run Python code (strings in single quotes); print() what you need to see",
                         PythonArgs, run, writes=False)],
                   close=worker.close)
