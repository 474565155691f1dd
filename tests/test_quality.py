"""The house style is checked, not hoped for: ruff over the tree and mypy --strict over the package."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *argv], cwd=REPO, capture_output=True, text=True, timeout=600, check=False
    )


def test_ruff_is_clean() -> None:
    done = run("ruff", "check", "binslim", "tests", "testdata", "benchmarks", "examples")
    assert done.returncode == 0, done.stdout + done.stderr


def test_mypy_strict_is_clean() -> None:
    done = run("mypy", "binslim")
    assert done.returncode == 0, done.stdout + done.stderr
