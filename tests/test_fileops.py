"""No harm to any file: temporary files, special targets and inputs, symlinks, files changing under us.

Device nodes are made privately with mknod in a temporary folder (never the real /dev/null).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from binslim import fileops, strip
from binslim.elf import writer
from binslim.errors import BinslimError
from testdata.build import Fixture
from tests.helpers import run_binslim

TIMEOUT = 60


def _program(fixtures: dict[str, Fixture], folder: Path, name: str = "prog") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    copy = folder / name
    shutil.copy2(fixtures["hello-c-pie"].path, copy)
    return copy


def _stripped_bytes(fixtures: dict[str, Fixture], tmp_path: Path) -> bytes:
    reference = tmp_path / "reference"
    strip(fixtures["hello-c-pie"].path, reference)
    return reference.read_bytes()


def test_output_to_a_character_device_is_written_through(
    fixtures: dict[str, Fixture], tmp_path: Path
) -> None:
    if os.geteuid() != 0:
        pytest.fail("mknod needs root (CI runs as root)")
    program = _program(fixtures, tmp_path)
    node = tmp_path / "null"
    os.mknod(node, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # a private /dev/null
    done = run_binslim("-o", str(node), str(program), "--no-verify", timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr
    assert stat.S_ISCHR(node.lstat().st_mode) and node.lstat().st_rdev == os.makedev(1, 3)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".binslim")] == []


@pytest.mark.parametrize("kind", ["directory", "socket", "block device"])
def test_output_that_must_not_be_replaced_is_refused(
    fixtures: dict[str, Fixture], tmp_path: Path, kind: str
) -> None:
    program = _program(fixtures, tmp_path / "in")
    target = tmp_path / "target"
    holder = None
    if kind == "directory":
        target.mkdir()
    elif kind == "socket":
        holder = socket.socket(socket.AF_UNIX)
        holder.bind(str(target))
    else:
        if os.geteuid() != 0:
            pytest.fail("mknod needs root (CI runs as root)")
        os.mknod(target, 0o600 | stat.S_IFBLK, os.makedev(7, 200))  # a loop device number; never opened
    before = target.lstat()
    try:
        done = run_binslim("-o", str(target), str(program), "--no-verify", timeout=TIMEOUT)
    finally:
        if holder is not None:
            holder.close()
    assert done.returncode == 1
    assert (
        done.stderr
        == f"error: {target}: is a {kind}; the output must be a regular file, a character device or a FIFO\n"
    )
    after = target.lstat()
    assert (after.st_ino, after.st_mode) == (before.st_ino, before.st_mode)


def test_output_below_a_file_names_the_output(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    """``-o prog/x``: the message is about the output, not the input, and says what is wrong."""
    program = _program(fixtures, tmp_path)
    before = program.read_bytes()
    target = program / "x"
    done = run_binslim(str(program), "-o", str(target), "--no-verify", timeout=TIMEOUT)
    assert done.returncode == 1
    assert done.stderr == f"error: {target}: cannot write: a path component is not a directory\n"
    assert program.read_bytes() == before and os.listdir(tmp_path) == ["prog"]


def test_output_to_a_fifo_is_written_through(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    program = _program(fixtures, tmp_path / "in")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    lonely = run_binslim("-o", str(fifo), str(program), "--no-verify", timeout=TIMEOUT)
    assert lonely.returncode == 1 and "no process reads from this FIFO" in lonely.stderr
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(_read_fifo(fifo)))
    reader.start()
    done = run_binslim("-o", str(fifo), str(program), "--no-verify", timeout=TIMEOUT)
    reader.join(TIMEOUT)
    assert done.returncode == 0, done.stderr
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    assert received == [_stripped_bytes(fixtures, tmp_path)]


@pytest.mark.parametrize("api", ["cli", "strip"])
def test_a_fifo_output_that_fails_leaves_the_debug_file_as_it_was(
    fixtures: dict[str, Fixture], tmp_path: Path, api: str
) -> None:
    """With --keep-debug the companion goes in first (so no binary links to a missing one), but a FIFO
    that no process reads fails only when written: an existing debug file must not be replaced for a
    binary that never went out."""
    program = _program(fixtures, tmp_path / "in")
    fifo, debug_file = tmp_path / "fifo", tmp_path / "prog.debug"
    os.mkfifo(fifo)
    debug_file.write_text("the previous companion\n")
    if api == "cli":
        argv = ("-o", str(fifo), str(program), "--keep-debug", str(debug_file), "--no-verify")
        done = run_binslim(*argv, timeout=TIMEOUT)
        assert done.returncode == 1
        assert done.stderr == f"error: {fifo}: cannot write: no process reads from this FIFO\n"
    else:
        with pytest.raises(BinslimError, match="no process reads from this FIFO"):
            strip(program, fifo, keep_debug=debug_file)
    assert debug_file.read_text() == "the previous companion\n"
    assert sorted(os.listdir(tmp_path)) == ["fifo", "in", "prog.debug"]


def _read_fifo(fifo: Path) -> bytes:
    # Keep the FIFO open for reading until the writer closes it; binslim opens it only when installing.
    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    chunks = []
    deadline = time.monotonic() + TIMEOUT
    wrote = False
    try:
        while time.monotonic() < deadline:
            try:
                chunk = os.read(fd, 1 << 16)
            except BlockingIOError:
                time.sleep(0.01)
                continue
            if chunk:
                chunks.append(chunk)
                wrote = True
            elif wrote:
                break
            else:
                time.sleep(0.01)
    finally:
        os.close(fd)
    return b"".join(chunks)


def test_output_to_standard_output(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    """``-o /dev/stdout`` as GNU strip allows it: the binary on stdout, the report on stderr. Tested through
    a private link to /proc/self/fd/1, which is what /dev/stdout is."""
    program = _program(fixtures, tmp_path / "in")
    link = tmp_path / "stdout"
    link.symlink_to("/proc/self/fd/1")
    done = subprocess.run(
        [sys.executable, "-m", "binslim", "-o", str(link), str(program), "--no-verify"],
        capture_output=True,
        timeout=TIMEOUT,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == _stripped_bytes(fixtures, tmp_path)
    assert b": stripped" in done.stderr
    assert link.is_symlink() and os.readlink(link) == "/proc/self/fd/1"


def test_output_to_a_closed_standard_output_names_the_link(
    fixtures: dict[str, Fixture], tmp_path: Path
) -> None:
    """``-o /dev/stdout`` with stdout closed (``>&-``): one line naming the path given and saying the
    descriptor is not open (it named /proc/PID/fd/1, where the link leads), exit 1, nothing written."""
    program = _program(fixtures, tmp_path / "in")
    before = program.read_bytes()
    link = tmp_path / "stdout"
    link.symlink_to("/proc/self/fd/1")
    done = subprocess.run(
        [sys.executable, "-m", "binslim", "-o", str(link), str(program), "--no-verify"],
        stdout=None,
        stderr=subprocess.PIPE,
        timeout=TIMEOUT,
        stdin=subprocess.DEVNULL,
        check=False,
        preexec_fn=lambda: os.close(1),  # the program starts with stdout closed, as after >&-
    )
    assert done.returncode == 1
    assert done.stderr == f"error: {link}: cannot write: file descriptor 1 is not open\n".encode()
    assert program.read_bytes() == before
    assert link.is_symlink() and os.readlink(link) == "/proc/self/fd/1"


def test_fifo_input_fails_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    started = time.monotonic()
    done = run_binslim(str(fifo), timeout=TIMEOUT)
    assert done.returncode == 1 and done.stderr == f"error: {fifo}: is a FIFO, not a regular file\n"
    assert time.monotonic() - started < TIMEOUT / 2
    with pytest.raises(BinslimError, match="is a FIFO, not a regular file"):
        strip(fifo, tmp_path / "out")


def test_in_place_on_a_symlink_strips_its_target(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    program = _program(fixtures, tmp_path / "real")
    link = tmp_path / "link"
    link.symlink_to(program)
    done = run_binslim(str(link), "--no-verify", timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr
    assert link.is_symlink() and os.readlink(link) == str(program)
    assert program.read_bytes() == _stripped_bytes(fixtures, tmp_path)
    result = strip(link)  # the library too
    assert link.is_symlink() and not result.changed


def test_output_to_a_symlink_replaces_its_target(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    program = _program(fixtures, tmp_path / "in")
    real = tmp_path / "out" / "real"
    real.parent.mkdir()
    real.write_bytes(b"old")
    link = tmp_path / "out" / "link"
    link.symlink_to("real")
    done = run_binslim("-o", str(link), str(program), "--no-verify", timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr
    assert link.is_symlink() and real.read_bytes() == _stripped_bytes(fixtures, tmp_path)


def test_temporary_files_have_no_name(tmp_path: Path) -> None:
    target = tmp_path / "target"
    tmp = fileops.temp_path_beside(str(target))
    try:
        assert fileops.is_unnamed(tmp) and os.listdir(tmp_path) == []
        with open(tmp, "wb") as handle:
            handle.write(b"payload")
        fileops.commit(tmp, str(target))
    finally:
        fileops.discard(tmp)
    assert target.read_bytes() == b"payload" and os.listdir(tmp_path) == ["target"]
    named = fileops.temp_path_beside(str(target), named=True)
    assert os.path.dirname(named) == str(tmp_path) and os.path.basename(named).startswith(".binslim-")
    fileops.discard(named)
    assert os.listdir(tmp_path) == ["target"]


def test_a_sigkilled_run_leaves_no_temporary_file(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    """Kill binslim while it verifies (the stripped file exists then); nothing named remains beside the
    target."""
    program = _program(fixtures, tmp_path / "work")
    script = tmp_path / "slow-check.sh"
    script.write_text("#!/bin/sh\nsleep 30\n")
    script.chmod(0o755)
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "binslim",
            str(program),
            "--verify-cmd",
            str(script),
            "--verify-timeout",
            "60",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        time.sleep(3)
    finally:
        os.killpg(child.pid, 9)
        child.wait(TIMEOUT)
    assert sorted(os.listdir(tmp_path / "work")) == ["prog"]
    assert program.read_bytes() == Path(fixtures["hello-c-pie"].path).read_bytes()


def test_stale_leftovers_are_swept_and_live_ones_kept(tmp_path: Path) -> None:
    folder = tmp_path / "bin"
    folder.mkdir()
    stale_file = folder / ".binslim-dead.tmp"
    stale_file.write_bytes(b"x" * 100)
    stale_dir = folder / ".binslim-upx-dead"
    stale_dir.mkdir()
    (stale_dir / fileops.LOCK_NAME).write_bytes(b"")
    live_file = folder / ".binslim-live.tmp"
    live_file.write_bytes(b"y")
    young_file = folder / ".binslim-young.tmp"
    young_file.write_bytes(b"z")
    unlocked_dir = folder / ".binslim-upx-old"  # no lock file: not ours to judge
    unlocked_dir.mkdir()
    old = time.time() - 2 * fileops.STALE_AFTER_SECONDS
    for path in (stale_file, stale_dir, live_file, unlocked_dir):
        os.utime(path, (old, old))
    with subprocess.Popen(
        [sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'rb');"
         " fcntl.flock(f, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(60)", str(live_file)],
        stdout=subprocess.PIPE,
        text=True,
    ) as holder:  # fmt: skip
        try:
            assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
            fileops.sweep_stale(str(folder))
        finally:
            holder.kill()
    assert sorted(os.listdir(folder)) == [".binslim-live.tmp", ".binslim-upx-old", ".binslim-young.tmp"]


def test_stale_scratch_folders_do_not_pile_up(tmp_path: Path) -> None:
    stale = tmp_path / "binslim-test-scratch-dead"
    stale.mkdir()
    (stale / fileops.LOCK_NAME).write_bytes(b"")
    old = time.time() - 2 * fileops.STALE_AFTER_SECONDS
    os.utime(stale, (old, old))
    with fileops.scratch_dir("binslim-test-scratch-", str(tmp_path)) as live:
        assert not stale.exists()
        with open(os.path.join(live, fileops.LOCK_NAME), "rb") as lock:
            with pytest.raises(BlockingIOError):
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held while in use
    assert os.listdir(tmp_path) == []


# A small input is read whole at open and its output built in memory; a big one is streamed.
@pytest.mark.parametrize("fixture", ["hello-c-pie", "go-cmd"])
def test_input_truncated_while_read(
    fixtures: dict[str, Fixture], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fixture: str
) -> None:
    (tmp_path / "in").mkdir()
    program = tmp_path / "in" / "prog"
    shutil.copy2(fixtures[fixture].path, program)
    real_write = writer.write_all

    def truncate_first(fd: int, data: bytes, offset: int) -> None:
        os.truncate(program, 100)
        real_write(fd, data, offset)

    monkeypatch.setattr(writer, "write_all", truncate_first)
    with pytest.raises(BinslimError, match=rf"^{program}: changed while being read$"):
        strip(program, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_names_with_newlines_and_bad_utf8(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    odd = os.fsdecode(b"odd\nname-\xff")
    shutil.copy2(fixtures["hello-c-pie"].path, tree / odd)
    done = run_binslim("-r", str(tree), "--no-verify", timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0].startswith(f"{tree}/odd\\nname-\\udcff: ")
    as_json = run_binslim("-r", str(tree), "--no-verify", "--json", timeout=TIMEOUT)
    (entry,) = json.loads(as_json.stdout)["results"]
    assert os.fsencode(entry["input"]) == os.fsencode(str(tree)) + b"/odd\nname-\xff"
