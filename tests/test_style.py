"""The code style of pyproject.toml ([tool.ruff], [tool.snakefmt]) holds for the whole repository: ruff's lint rules,
ruff's formatting of the Python files, snakefmt's formatting of the Snakefiles. `make format` applies it."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def tool(name: str) -> str:
    """The tool next to this Python (the venv's bin), else on PATH; a missing one fails with the install command."""
    path = Path(sys.executable).parent / name
    found = str(path) if path.is_file() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: pip install -e '.[test]' (it is in the test extra of pyproject.toml)")
    return found


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_ruff_lint_passes():
    result = run(tool("ruff"), "check", "--output-format", "concise", "--no-cache", ".")
    findings = [line for line in result.stdout.splitlines() if re.match(r"\S+:\d+:\d+: ", line)]
    assert result.returncode == 0, "ruff check findings (fix by hand, or `ruff check --fix .`):\n" + "\n".join(
        findings or [result.stdout, result.stderr]
    )


def test_ruff_format_is_applied():
    result = run(tool("ruff"), "format", "--check", "--no-cache", "--output-format", "concise", ".")
    files = re.findall(r"^(\S+?):\d+:\d+: unformatted", result.stdout, flags=re.MULTILINE)
    assert result.returncode == 0, "files ruff would reformat (`ruff format .`):\n" + "\n".join(
        files or [result.stdout, result.stderr]
    )


def test_snakefmt_is_applied():
    result = run(tool("snakefmt"), "--check", "--compact-diff", ".")
    files = re.findall(r"^=====> Diff for (.+) <=====$", result.stdout, flags=re.MULTILINE)
    errors = [line for line in result.stderr.splitlines() if "[ERROR]" in line]
    assert result.returncode == 0, "Snakefiles snakefmt would reformat (`snakefmt .`):\n" + "\n".join(
        files + errors or [result.stderr]
    )
