"""A one-line progress bar on stderr for ``-r``: only on a terminal; never in a pipe, in --json or in CI."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping

from .envvars import in_ci


class Progress:
    """``update(done, total)`` redraws the bar; ``echo`` prints a line above it; ``close`` erases it."""

    def __init__(self, enabled: bool, env: Mapping[str, str] = os.environ) -> None:
        self.enabled = (
            enabled
            and sys.stdout.isatty()
            and sys.stderr.isatty()
            and not in_ci(env)
            and env.get("TERM", "dumb") != "dumb"
        )
        self._line = ""

    def update(self, done: int, total: int) -> None:
        if not self.enabled or not total:
            return
        width = max(10, min(40, shutil.get_terminal_size().columns - 30))
        filled = width * done // total
        self._line = f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total} ELF files"
        self._write("\r" + self._line)

    def echo(self, text: str, *, err: bool = False) -> None:
        """Print a line above the bar."""
        if self._line:
            self._write("\r" + " " * len(self._line) + "\r")
        stream = sys.stderr if err else sys.stdout
        stream.write(text + "\n")
        stream.flush()
        if self._line:
            self._write(self._line)

    def close(self) -> None:
        if self._line:
            self._write("\r" + " " * len(self._line) + "\r")
            self._line = ""

    @staticmethod
    def _write(text: str) -> None:
        sys.stderr.write(text)
        sys.stderr.flush()
