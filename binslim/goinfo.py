"""Go build information (``go version -m``): still readable after the section headers are gone?

Go finds its build information through the .go.buildinfo section, or, without section headers, at the
start of the first writable segment. This checks the second path on a real result.
"""

from __future__ import annotations

import glob
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .elf.reader import ElfFile
from .errors import BinslimError
from .runner import Runner, run

GO_TIMEOUT = 60.0
# Sections only the Go linker makes.
GO_SECTIONS = (".go.buildinfo", ".note.go.buildid", ".gopclntab")
NOT_FOUND_HINT = "go not found on PATH: install Debian's golang-go, or set BINSLIM_GO"


@dataclass(frozen=True)
class GoBuildInfo:
    readable: bool
    go_version: str  # e.g. "go1.23.5" when readable
    main_path: str  # the main package path, e.g. "cmd/gofmt", when recorded
    reason: str = ""  # why it is not readable

    def to_dict(self) -> dict[str, Any]:
        return {
            "readable": self.readable,
            "go_version": self.go_version,
            "path": self.main_path,
            "reason": self.reason,
        }


def is_go_binary(path: str) -> bool:
    """True when ``path`` has a section only the Go linker makes. False for anything unreadable."""
    try:
        with ElfFile(path) as elf:
            return any(s.name in GO_SECTIONS for s in elf.sections)
    except BinslimError:
        return False


def find_go(env: Mapping[str, str] = os.environ) -> str | None:
    """$BINSLIM_GO, then go on PATH, then the newest Debian golang-1.N package (not on PATH by default)."""
    configured = env.get("BINSLIM_GO")
    if configured:
        return configured if os.access(configured, os.X_OK) else None
    on_path = shutil.which("go", path=env.get("PATH", os.defpath))
    if on_path:
        return on_path

    def version_key(path: str) -> tuple[int, ...]:
        number = path.split("/usr/lib/go-", 1)[1].split("/", 1)[0]
        return tuple(int(part) for part in number.split(".") if part.isdigit())

    debian = [p for p in glob.glob("/usr/lib/go-*/bin/go") if os.access(p, os.X_OK)]
    return max(debian, key=version_key) if debian else None


def read_build_info(path: str, *, go: str, runner: Runner = run, timeout: float = GO_TIMEOUT) -> GoBuildInfo:
    """What ``go version -m`` reads from ``path``."""
    env = {**os.environ, "GOTOOLCHAIN": "local", "GOFLAGS": ""}
    completed = runner([go, "version", "-m", path], timeout=timeout, env=env)
    out = completed.stdout.decode("utf-8", "replace")
    first = out.splitlines()[0] if out else ""
    if completed.returncode != 0 or completed.timed_out or not first.startswith(f"{path}: go"):
        reason = completed.stderr_tail() or first or f"go version -m exited with {completed.returncode}"
        return GoBuildInfo(False, "", "", reason)
    main_path = ""
    for line in out.splitlines()[1:]:
        fields = line.split("\t")
        if len(fields) >= 3 and fields[1] == "path":
            main_path = fields[2]
    return GoBuildInfo(True, first.split(": ", 1)[1].strip(), main_path)


def build_info_note(original: str, result: str, *, runner: Runner = run) -> str | None:
    """A report line on whether ``result`` (a Go binary without section headers) still shows its build
    information, or None when ``original`` is not a Go binary."""
    if not is_go_binary(original):
        return None
    go = find_go()
    if go is None:
        return f"Go build information not checked: {NOT_FOUND_HINT}"
    before = read_build_info(original, go=go, runner=runner)
    if not before.readable:
        return f"Go build information not checked: the input's is not readable either ({before.reason})"
    after = read_build_info(result, go=go, runner=runner)
    if after.readable:
        return (
            f"Go build information still readable without section headers (go version -m: "
            f"{after.go_version}" + (f", {after.main_path})" if after.main_path else ")")
        )
    return f"Go build information NOT readable without section headers: {after.reason}"
