"""The command line: reports, exit codes, and bad input (one-line error, exit 1, nothing lost)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from testdata.build import Fixture
from tests.helpers import clean_env
from tests.helpers import run_binslim as binslim

TIMEOUT = 120


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_strips_to_output_with_report(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    out = tmp_path / "micro.slim"
    done = binslim(fixtures["hello-c-pie"].path, "-o", str(out), "--no-verify")
    assert done.returncode == 0, done.stderr
    original = Path(fixtures["hello-c-pie"].path).stat().st_size
    assert f"{original:,} B" in done.stdout
    assert f"{out.stat().st_size:,} B" in done.stdout
    assert "symbols" in done.stdout and "debug" in done.stdout
    assert "KiB" in done.stdout or "MiB" in done.stdout


def test_in_place_multiple_inputs(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    paths = []
    for name in ("hello-c-pie", "hello-c-nopie"):
        copy = tmp_path / name
        shutil.copy2(fixtures[name].path, copy)
        paths.append(copy)
    before = [p.stat().st_size for p in paths]
    done = binslim(*map(str, paths), "--no-verify")
    assert done.returncode == 0, done.stderr
    assert all(p.stat().st_size < b for p, b in zip(paths, before))
    assert "2 files: 2 slimmed" in done.stdout


def test_json_report_on_stdout_only(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = binslim(fixtures["hello-c-overlay"].path, "-o", str(out), "--no-verify", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["schema"] == 2
    (entry,) = report["results"]
    assert entry["status"] == "ok"
    assert entry["size"]["final"] == out.stat().st_size
    assert entry["overlay"] > 0
    assert sum(r["size"] for r in entry["removed"]) == entry["size"]["original"] - entry["size"]["stripped"]


def test_already_stripped_input_is_left_identical(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    once, twice = tmp_path / "once", tmp_path / "twice"
    assert binslim(fixtures["hello-cxx"].path, "-o", str(once), "--no-verify").returncode == 0
    done = binslim(str(once), "-o", str(twice), "--no-verify", "--json")
    assert done.returncode == 0
    assert once.read_bytes() == twice.read_bytes()
    entry = json.loads(done.stdout)["results"][0]
    assert entry["size"]["original"] == entry["size"]["final"]
    assert "saved" not in done.stderr


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    assert binslim().returncode == 2
    assert binslim("a", "b", "-o", str(tmp_path / "x")).returncode == 2
    assert binslim("--upx-level", "12", "a").returncode == 2


@pytest.mark.parametrize(
    "argv", [["-o", ""], ["--keep-debug", ""], ["bundle", "-o", ""]], ids=["output", "keep-debug", "bundle"]
)
def test_an_empty_path_is_a_usage_error(
    fixtures: dict[str, Fixture], tmp_path: Path, argv: list[str]
) -> None:
    """``-o "$UNSET"``: there is no file to name in an error, and for bundle "" was the current folder."""
    program = tmp_path / "prog"
    shutil.copy2(fixtures["hello-c-pie"].path, program)
    before = program.read_bytes()
    if argv[0] == "bundle":
        argv = ["bundle", str(program), *argv[1:]]
    else:
        argv = [str(program), *argv]
    done = binslim(*argv, "--no-verify", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    flag = "--keep-debug" if "--keep-debug" in argv else "-o/--output"
    assert done.stderr.endswith(f"\nerror: {flag}: the path is empty\n")
    assert program.read_bytes() == before and os.listdir(tmp_path) == ["prog"]


def _elf_header(path: Path) -> bytes:
    return path.read_bytes()[:64]


def _corrupt(source: Path, dest: Path, offset: int, fmt: str, value: int) -> Path:
    data = bytearray(source.read_bytes())
    struct.pack_into(fmt, data, offset, value)
    dest.write_bytes(bytes(data))
    return dest


def bad_inputs(fixtures: dict[str, Fixture], folder: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, words the error must contain)."""
    good = Path(fixtures["hello-c-pie"].path)
    data = good.read_bytes()
    shoff = struct.unpack_from("<Q", data, 40)[0]
    cases: dict[str, tuple[Path, str]] = {}

    def write(name: str, content: bytes, words: str) -> None:
        path = folder / name
        path.write_bytes(content)
        cases[name] = (path, words)

    write("empty", b"", "empty file")
    write("text", b"hello world\n", "not an ELF file")
    write("script", b"#!/bin/sh\necho hi\n", "a script")
    write("truncated-header", data[:40], "truncated ELF header")
    write("truncated-body", data[: len(data) // 3], "past the end of the file")
    write("bad-class", data[:4] + b"\x07" + data[5:], "unknown ELF class")
    bad = bytearray(data)
    struct.pack_into("<Q", bad, 40, len(data) * 4)  # e_shoff past EOF
    write("shoff-past-eof", bytes(bad), "past the end of the file")
    bad = bytearray(data)
    struct.pack_into("<H", bad, 60, 0xFFFE)  # absurd e_shnum
    write("huge-shnum", bytes(bad), "past the end of the file")
    bad = bytearray(data)
    struct.pack_into("<H", bad, 62, 0xFFF0)  # e_shstrndx out of range
    write("bad-shstrndx", bytes(bad), "out of range")
    bad = bytearray(data)
    struct.pack_into("<Q", bad, shoff + 64 * 1 + 24, len(data) * 8)  # section 1 offset past EOF
    write("section-past-eof", bytes(bad), "past the end of the file")
    bad = bytearray(data)
    struct.pack_into("<I", bad, shoff + 64 * 2 + 40, 0xFFFF)  # section 2 sh_link out of range
    write("bad-link", bytes(bad), "does not exist")
    bad = bytearray(data)
    struct.pack_into("<Q", bad, 64 + 8, len(data) * 2)  # program header 0 offset past EOF
    write("segment-past-eof", bytes(bad), "past the end of the file")
    return cases


def test_bad_input_gets_one_line_error(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for name, (path, words) in bad_inputs(fixtures, inputs).items():
        before = digest(path)
        out = tmp_path / f"{name}.out"
        done = binslim(str(path), "-o", str(out), "--no-verify")
        assert done.returncode == 1, (name, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, (name, done.stderr)
        assert lines[0].startswith(f"error: {path}: "), (name, lines[0])
        assert words in lines[0], (name, lines[0])
        assert "Traceback" not in done.stderr
        assert not out.exists(), name
        assert digest(path) == before, name
        in_place = binslim(str(path), "--no-verify")
        assert in_place.returncode == 1 and digest(path) == before, name
    expected = sorted(path.name for path, _ in bad_inputs(fixtures, tmp_path / "inputs").values())
    assert sorted(p.name for p in inputs.iterdir()) == expected, "no partial output or temp file is left"


def test_directory_missing_and_unwritable(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    done = binslim(str(tmp_path), "--no-verify")
    assert done.returncode == 1 and "is a directory" in done.stderr and "Traceback" not in done.stderr
    done = binslim(str(tmp_path / "missing"), "--no-verify")
    assert done.returncode == 1 and f"error: {tmp_path / 'missing'}: no such file" in done.stderr
    locked = tmp_path / "locked"
    locked.mkdir()
    done = binslim(fixtures["hello-c-pie"].path, "-o", str(locked / "missing-dir" / "out"), "--no-verify")
    assert done.returncode == 1 and "cannot write" in done.stderr
    if os.geteuid() != 0:
        locked.chmod(0o500)
        done = binslim(fixtures["hello-c-pie"].path, "-o", str(locked / "out"), "--no-verify")
        assert done.returncode == 1 and "permission denied" in done.stderr
    done = binslim(fixtures["hello-c-pie"].path, "-o", str(tmp_path), "--no-verify")
    assert done.returncode == 1 and "is a directory" in done.stderr


def test_python_dash_m_and_console_script_agree(fixtures: dict[str, Fixture]) -> None:
    script = shutil.which("binslim")
    if script is None:
        pytest.fail("the binslim console script is not installed: pip install -e .")
    version = subprocess.run(
        [script, "--version"], capture_output=True, text=True, timeout=TIMEOUT, check=False
    )
    assert version.returncode == 0 and "binslim" in version.stdout
    assert binslim("--version").stdout == version.stdout


# Runs the command line with Ctrl-C or SIGTERM arriving while the module named by argv[1] is being imported
# (binslim imports each stage when it first needs it, after its signal handler is in place).
INTERRUPTED_IMPORT = r"""
import sys
from binslim.interrupts import Terminated

class Interrupt:
    def find_spec(self, name, path=None, target=None):
        if name == sys.argv[1]:
            raise Terminated() if sys.argv[2] == "TERM" else KeyboardInterrupt()
        return None

sys.meta_path.insert(0, Interrupt())
from binslim.cli import main
main(sys.argv[3:])
"""


@pytest.mark.parametrize(
    ("module", "command"),
    [
        ("binslim.slim", "slim"),
        ("binslim.bundler", "bundle"),
        ("binslim.tree", "-r"),
        ("binslim.report", "slim"),
    ],
)
@pytest.mark.parametrize("signal_name", ["TERM", "INT"])
def test_a_signal_during_a_lazy_import_is_one_line(
    fixtures: dict[str, Fixture], tmp_path: Path, module: str, command: str, signal_name: str
) -> None:
    program = tmp_path / "in" / "prog"
    program.parent.mkdir()
    shutil.copy2(fixtures["hello-c-pie"].path, program)
    before = program.read_bytes()
    argv = {
        "slim": [str(program), "-o", str(tmp_path / "out"), "--no-verify"],
        "bundle": ["bundle", str(program), "-o", str(tmp_path / "root"), "--no-verify"],
        "-r": ["-r", str(program.parent), "--no-verify"],
    }[command]
    done = subprocess.run(
        [sys.executable, "-c", INTERRUPTED_IMPORT, module, signal_name, *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(),
        check=False,
    )
    what, code = ("terminated", 143) if signal_name == "TERM" else ("interrupted", 130)
    assert done.returncode == code, done.stderr
    assert done.stderr == f"binslim: {what}\n"
    assert program.read_bytes() == before or module == "binslim.report"
    assert sorted(os.listdir(tmp_path)) == (["in", "out"] if module == "binslim.report" else ["in"])
    assert os.listdir(program.parent) == ["prog"]


@pytest.mark.parametrize("command", ["slim", "inspect", "bundle", "bundle --include"])
def test_a_file_that_fails_to_read_is_one_line(
    fixtures: dict[str, Fixture], tmp_path: Path, command: str
) -> None:
    """A read that fails with EIO (a failing disk; here /proc/self/mem, a regular file whose offset 0 is
    unmapped) is ``cannot read``, exit 1, in every command: the reader turns it into a BinslimError."""
    path = "/proc/self/mem"
    argv = {
        "slim": [path, "-o", str(tmp_path / "out"), "--no-verify"],
        "inspect": ["inspect", path],
        "bundle": ["bundle", path, "-o", str(tmp_path / "root"), "--no-verify"],
        "bundle --include": [
            "bundle",
            fixtures["hello-c-static"].path,
            "-o",
            str(tmp_path / "root"),
            "--include",
            path,
            "--no-verify",
        ],
    }[command]
    done = binslim(*argv)
    assert done.returncode == 1, done.stderr
    assert re.fullmatch(r"error: /proc/(self|\d+)/mem: cannot read: Input/output error\n", done.stderr)
    assert os.listdir(tmp_path) == []
