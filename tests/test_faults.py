"""Faults around the writes: a full disk, a read-only target folder, a target swapped for a symlink while it
is written, SIGINT/SIGTERM in the middle of a file and of a tree (and the tree run again), a hanging UPX.

In every case the inputs stay intact, no temporary file is left behind, and binslim exits with a clear code
and a one-line message. Real faults where the machine allows them (a small tmpfs, a read-only mount or an
immutable folder, real signals); mocks only for what cannot be timed otherwise.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from binslim import slim, strip
from binslim.errors import BinslimError
from binslim.fileops import TEMP_PREFIX
from testdata.build import Fixture
from tests.helpers import clean_env, run_binslim

TIMEOUT = 120

# Runs the CLI with each write into the output made slow, so that a signal lands mid-write: the temporary file
# exists and is (partly) written but not in place. BINSLIM_TEST_READY is created when that point is reached.
# (A big output is written piece by piece; a small one is built in memory and written with one call.)
SLOW_CLI = r"""
import os, sys, time
import binslim.elf.writer as writer

real_write_all = writer.write_all

def slow_write_all(*args, **kwargs):
    real_write_all(*args, **kwargs)
    with open(os.environ["BINSLIM_TEST_READY"], "a") as ready:
        ready.write(f"{os.getpid()}\n")
    time.sleep(float(os.environ["BINSLIM_TEST_SLEEP"]))

writer.write_all = slow_write_all
from binslim.cli import main
main(prog_name="binslim")
"""


def binslim(*args: str, env: dict[str, str] | None = None, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return run_binslim(*args, env=clean_env(**(env or {})), timeout=TIMEOUT, **kwargs)


def slow_binslim(*args: str, ready: Path, sleep: float) -> subprocess.Popen[str]:
    env = {**os.environ, "BINSLIM_TEST_READY": str(ready), "BINSLIM_TEST_SLEEP": str(sleep)}
    return subprocess.Popen(
        [sys.executable, "-c", SLOW_CLI, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )


def wait_for(path: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def group_alive(pgid: int) -> bool:
    """Whether any process of the session binslim led is still running (zombies are dead)."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
                    return True
    return False


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def temps_under(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.rglob(f"{TEMP_PREFIX}*"))


def unnamed_temps(pid: int, folder: Path) -> list[str]:
    """The O_TMPFILE files process ``pid`` has open in ``folder`` (shown as ``FOLDER/#INODE (deleted)``)."""
    found = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith(f"{folder}/#") and target.endswith(" (deleted)"):
                found.append(target)
    return found


def stage(fixtures: dict[str, Fixture], name: str, folder: Path, as_name: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    copy = folder / (as_name or os.path.basename(fixtures[name].path))
    shutil.copy2(fixtures[name].path, copy)
    return copy


def reference_strip(fixtures: dict[str, Fixture], name: str, folder: Path) -> bytes:
    out = folder / f"{name}.reference"
    strip(fixtures[name].path, out)
    return out.read_bytes()


@contextlib.contextmanager
def tmpfs(where: Path, *options: str) -> Iterator[Path]:
    """A small tmpfs mounted at ``where``; skipped where mounting is refused (not root, no CAP_SYS_ADMIN)."""
    where.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", ",".join(("size=256k", *options)), "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True, check=False)


def fill(folder: Path) -> None:
    """Use up every free block of the filesystem holding ``folder``."""
    fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, bytes(4096))
    finally:
        os.close(fd)


# -- a full disk ---------------------------------------------------------------------------------------------


def test_full_disk_output(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    source = stage(fixtures, "hello-c-static", tmp_path / "in")  # 750 KiB: the 256 KiB tmpfs cannot hold it
    before = digest(source)
    with tmpfs(tmp_path / "full") as full:
        out = full / "out"
        done = binslim(str(source), "-o", str(out), "--no-verify")
        assert done.returncode == 1, done.stderr
        assert done.stderr == f"error: {out}: cannot write: no space left on device\n"
        assert not out.exists() and temps_under(full) == []
    assert digest(source) == before


def test_full_disk_in_place(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    with tmpfs(tmp_path / "full") as full:
        source = stage(fixtures, "hello-c-pie", full)
        fill(full)
        done = binslim(str(source), "--no-verify")
        assert done.returncode == 1, done.stderr
        assert done.stderr == f"error: {source}: cannot write: no space left on device\n"
        assert digest(source) == digest(Path(fixtures["hello-c-pie"].path))
        assert temps_under(full) == []


def test_full_disk_tree(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    with tmpfs(tmp_path / "full") as full:
        names = [stage(fixtures, "hello-c-pie", full / "bin", f"tool{i}") for i in range(4)]
        fill(full)
        done = binslim("-r", str(full), "--no-verify", "-j", "2")
        assert done.returncode == 1, done.stderr
        for path in names:
            assert f"error: {path}: " in done.stderr and "no space left on device" in done.stderr
            assert digest(path) == digest(Path(fixtures["hello-c-pie"].path))
        assert "Traceback" not in done.stderr
        assert temps_under(full) == []


def test_full_disk_debug_file(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    """The companion's folder is full: the message names the debug file (not the temporary file standing
    for it), and neither file is written."""
    source = stage(fixtures, "hello-c-pie", tmp_path / "in")
    before = digest(source)
    with tmpfs(tmp_path / "full") as full:
        fill(full)
        debug_file = full / "hello.debug"
        done = binslim(
            str(source), "-o", str(tmp_path / "out"), "--keep-debug", str(debug_file), "--no-verify"
        )
        assert done.returncode == 1, done.stderr
        assert done.stderr == f"error: {debug_file}: cannot write: no space left on device\n"
        assert not debug_file.exists() and temps_under(full) == []
    assert not (tmp_path / "out").exists()
    assert digest(source) == before


@pytest.mark.parametrize("budget", [0, 4096, 300_000])
def test_full_disk_mid_write(
    fixtures: dict[str, Fixture], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, budget: int
) -> None:
    """ENOSPC after ``budget`` bytes, whichever call writes them (copy_file_range, sendfile, pwrite)."""
    source = stage(fixtures, "hello-c-static", tmp_path / "in")
    before = digest(source)
    written = 0

    def limited(real: Callable[..., int], size_of: Callable[..., int]) -> Callable[..., int]:
        def call(*args: Any) -> int:
            nonlocal written
            if written + size_of(*args) > budget:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            done = real(*args)
            written += done
            return done

        return call

    monkeypatch.setattr(os, "pwrite", limited(os.pwrite, lambda fd, data, offset: len(data)))
    monkeypatch.setattr(os, "copy_file_range", limited(os.copy_file_range, lambda src, dst, count, *_: count))
    monkeypatch.setattr(os, "sendfile", limited(os.sendfile, lambda out, src, offset, count: count))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(BinslimError) as error:
        slim(source, out_dir / "slim", verify=False)
    assert str(error.value) == f"{out_dir / 'slim'}: cannot write: no space left on device"
    assert os.listdir(out_dir) == []
    assert digest(source) == before


# -- a read-only target folder -------------------------------------------------------------------------------


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """``folder`` made unwritable: by its mode bits, or for root (whom they do not stop) immutable."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)
        return
    locked = subprocess.run(["chattr", "+i", str(folder)], capture_output=True, text=True, check=False)
    if locked.returncode != 0:
        pytest.skip(f"cannot make a folder read-only for root here: chattr +i: {locked.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(folder)], capture_output=True, check=False)


@pytest.mark.parametrize("in_place", [False, True], ids=["output", "in-place"])
def test_read_only_folder(fixtures: dict[str, Fixture], tmp_path: Path, in_place: bool) -> None:
    source = stage(fixtures, "hello-c-pie", tmp_path / "in")
    locked = tmp_path / "locked"
    locked.mkdir()
    if in_place:
        source = stage(fixtures, "hello-c-pie", locked)
    target = source if in_place else locked / "out"
    with read_only(locked):
        done = binslim(str(source), "--no-verify", *([] if in_place else ["-o", str(target)]))
        listing = sorted(os.listdir(locked))
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stderr == f"error: {target}: cannot write: permission denied\n"
    assert digest(source) == digest(Path(fixtures["hello-c-pie"].path))
    assert listing == ([source.name] if in_place else [])


def test_read_only_filesystem(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    """A read-only mount stops root too."""
    source = stage(fixtures, "hello-c-pie", tmp_path / "in")
    with tmpfs(tmp_path / "ro", "ro") as read_only:
        out = read_only / "out"
        done = binslim(str(source), "-o", str(out), "--no-verify")
        assert done.returncode == 1, done.stderr
        assert done.stderr == f"error: {out}: cannot write: read-only file system\n"
        assert os.listdir(read_only) == []
    assert digest(source) == digest(Path(fixtures["hello-c-pie"].path))


# -- the target swapped for a symlink while it is written ----------------------------------------------------


@pytest.mark.parametrize("in_place", [False, True], ids=["output", "in-place"])
def test_target_becomes_symlink_while_writing(
    fixtures: dict[str, Fixture], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, in_place: bool
) -> None:
    """Between the temporary file and the rename, the target becomes a symlink to another file. The rename
    replaces the link itself: the other file is never written."""
    folder = tmp_path / "work"
    source = stage(fixtures, "hello-cxx", folder)
    target = source if in_place else folder / "out"
    if not in_place:
        target.write_bytes(b"old output")
    victim = tmp_path / "victim"
    victim.write_bytes(b"must stay as it is")
    real_replace = os.replace
    swapped = []

    def swap_then_replace(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        if os.path.abspath(dst) == str(target) and not swapped:
            os.unlink(target)
            os.symlink(victim, target)
            swapped.append(dst)
        real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", swap_then_replace)
    result = slim(source, None if in_place else target, verify=False)
    assert swapped, "the hook never ran"
    assert victim.read_bytes() == b"must stay as it is"
    assert not target.is_symlink()
    assert target.stat().st_size == result.final_size < Path(fixtures["hello-cxx"].path).stat().st_size
    assert temps_under(folder) == []


# -- SIGINT and SIGTERM --------------------------------------------------------------------------------------

SIGNALS = [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")]


@pytest.mark.parametrize(("signum", "code", "word"), SIGNALS, ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("in_place", [False, True], ids=["output", "in-place"])
def test_signal_mid_write(
    fixtures: dict[str, Fixture], tmp_path: Path, signum: int, code: int, word: str, in_place: bool
) -> None:
    folder = tmp_path / "work"
    source = stage(fixtures, "go-cmd", folder)  # 18 MB: a write worth interrupting
    before = digest(source)
    target = source if in_place else folder / "out"
    ready = tmp_path / "ready"
    process = slow_binslim(
        str(source), "--no-verify", *([] if in_place else ["-o", str(target)]), ready=ready, sleep=60
    )
    try:
        wait_for(ready)
        # Mid-write, with an unnamed temporary file (O_TMPFILE): nothing named in the folder.
        assert unnamed_temps(process.pid, folder) and temps_under(folder) == [], "binslim should be mid-write"
        process.send_signal(signum)
        stdout, stderr = process.communicate(timeout=TIMEOUT)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == code, stderr
    assert not group_alive(process.pid)
    assert stderr == f"error: {source}: {word}; nothing was changed\n"
    assert stdout == ""
    assert temps_under(folder) == []
    assert digest(source) == before
    assert in_place or not target.exists()


def _tree(fixtures: dict[str, Fixture], root: Path, count: int) -> list[Path]:
    files = [stage(fixtures, "hello-c-pie", root / f"d{i % 5}", f"tool{i:03}") for i in range(count)]
    (root / "README").write_text("not ELF\n")
    return files


def _state(files: list[Path]) -> dict[Path, tuple[str, int, int]]:
    return {p: (digest(p), p.stat().st_ino, p.stat().st_mtime_ns) for p in files}


@pytest.mark.parametrize(
    ("signum", "code", "word", "group"),
    [(*SIGNALS[0], True), (*SIGNALS[1], False), (*SIGNALS[1], True)],
    ids=["SIGINT-group", "SIGTERM-parent", "SIGTERM-group"],
)
def test_signal_mid_tree_then_run_again(
    fixtures: dict[str, Fixture], tmp_path: Path, signum: int, code: int, word: str, group: bool
) -> None:
    """Ctrl-C (SIGINT to the process group) or SIGTERM (to binslim alone, or to its group) in the middle of
    ``binslim -r`` over 100 files: every file is either done or as it was; the next run finishes the job and
    touches nothing already done; the run after that changes nothing at all."""
    root = tmp_path / "tree"
    files = _tree(fixtures, root, 100)
    original = digest(files[0])
    stripped = reference_strip(fixtures, "hello-c-pie", tmp_path)
    stripped_digest = hashlib.sha256(stripped).hexdigest()
    ready = tmp_path / "ready"
    process = slow_binslim("-r", str(root), "--no-verify", "-j", "2", ready=ready, sleep=0.05)
    try:
        wait_for(ready)
        deadline = time.monotonic() + 60
        while sum(p.stat().st_size < len(stripped) + 1 for p in files) < 3:  # some files done, most not
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.01)
        if group:
            os.killpg(process.pid, signum)
        else:
            process.send_signal(signum)
        stdout, stderr = process.communicate(timeout=TIMEOUT)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == code, stderr
    assert not group_alive(process.pid), "a worker outlived binslim"
    assert stderr.endswith(f"error: {word}; files reported above are done, the rest are as they were\n"), (
        stderr
    )
    assert "Traceback" not in stderr
    assert temps_under(root) == []
    digests = {p: digest(p) for p in files}
    assert set(digests.values()) <= {original, stripped_digest}
    done = [p for p in files if digests[p] == stripped_digest]
    assert 0 < len(done) < len(files), "the signal should land mid-tree"
    for path in files:
        if f"{path}: " in stdout:
            assert digests[path] == stripped_digest, f"{path} reported done but not stripped"

    before_rerun = _state(files)
    again = binslim("-r", str(root), "--no-verify", "-j", "2")
    assert again.returncode == 0, again.stderr
    after_rerun = _state(files)
    assert {state[0] for state in after_rerun.values()} == {stripped_digest}
    for path in done:
        assert after_rerun[path] == before_rerun[path], f"{path} was done, yet rewritten"
    assert "100 ELF" in again.stdout

    third = binslim("-r", str(root), "--no-verify", "-j", "2")
    assert third.returncode == 0, third.stderr
    assert _state(files) == after_rerun
    assert (root / "README").read_text() == "not ELF\n"
    assert temps_under(root) == []


def _children_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid and fields[0] not in ("Z", "X"):
                    found.append(int(entry))
    return found


def test_a_worker_killed_mid_tree(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    """SIGKILL to a forked -r worker: the files it had not reported are reported as failed (each is done or as
    it was: the one in hand may have been renamed into place), the others are done, nothing hangs or is left
    behind, and a second run finishes the job."""
    root = tmp_path / "tree"
    files = _tree(fixtures, root, 60)
    original = digest(files[0])
    stripped_digest = hashlib.sha256(reference_strip(fixtures, "hello-c-pie", tmp_path)).hexdigest()
    ready = tmp_path / "ready"
    process = slow_binslim("-r", str(root), "--no-verify", "-j", "2", ready=ready, sleep=0.05)
    try:
        deadline = time.monotonic() + 60
        while not (ready.exists() and len(set(ready.read_text().split())) >= 2):  # both processes writing
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.01)
        (worker,) = _children_of(process.pid)
        os.kill(worker, signal.SIGKILL)
        stdout, stderr = process.communicate(timeout=TIMEOUT)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 1, stderr
    assert not group_alive(process.pid)
    assert "Traceback" not in stderr
    failed = [line for line in stderr.splitlines() if "worker process failed (killed by signal 9)" in line]
    assert failed, (stdout, stderr)
    assert temps_under(root) == []
    digests = {p: digest(p) for p in files}
    assert set(digests.values()) <= {original, stripped_digest}
    for path in files:
        if any(f"{path}: " in line for line in failed):
            assert digests[path] in (original, stripped_digest)
            continue
        assert f"{path}: " in stdout, f"{path} not reported"
        assert digests[path] == stripped_digest, f"{path} reported done but not stripped"
    again = binslim("-r", str(root), "--no-verify", "-j", "2")
    assert again.returncode == 0, again.stderr
    assert {digest(p) for p in files} == {stripped_digest}


@pytest.mark.parametrize("jobs", [2, 3])
def test_parent_killed_mid_tree_stops_its_workers(
    fixtures: dict[str, Fixture], tmp_path: Path, jobs: int
) -> None:
    """SIGKILL to binslim alone (not its group) in the middle of ``-r -j N``: the workers notice their parent
    is gone, finish at most the file in hand and exit instead of going on through the tree; every file is done
    or as it was, and nothing temporary is left."""
    root = tmp_path / "tree"
    files = _tree(fixtures, root, 80)
    original = digest(files[0])
    stripped_digest = hashlib.sha256(reference_strip(fixtures, "hello-c-pie", tmp_path)).hexdigest()
    ready = tmp_path / "ready"
    process = slow_binslim("-r", str(root), "--no-verify", "-j", str(jobs), ready=ready, sleep=0.1)
    try:
        deadline = time.monotonic() + 60
        while not (ready.exists() and len(set(ready.read_text().split())) >= jobs):  # every process writing
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.01)
        process.kill()
        process.wait(timeout=TIMEOUT)
        at_kill = {p: digest(p) for p in files}
        deadline = time.monotonic() + 10
        while group_alive(process.pid):
            assert time.monotonic() < deadline, "workers went on after their parent was killed"
            time.sleep(0.05)
        process.communicate(timeout=TIMEOUT)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == -signal.SIGKILL
    digests = {p: digest(p) for p in files}
    assert set(digests.values()) <= {original, stripped_digest}
    finished_after = [p for p in files if digests[p] != at_kill[p]]
    assert len(finished_after) <= jobs - 1, f"workers started new files after the kill: {finished_after}"
    assert sum(d == original for d in digests.values()) > len(files) // 2, "the kill should land early"
    assert temps_under(root) == []
    assert (root / "README").read_text() == "not ELF\n"
    again = binslim("-r", str(root), "--no-verify", "-j", str(jobs))
    assert again.returncode == 0, again.stderr
    assert {digest(p) for p in files} == {stripped_digest}


def test_whole_group_killed_mid_tree_with_big_files(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    """SIGKILL to binslim and all its workers while big programs (streamed, past IN_MEMORY_BYTES) and small
    ones (built in memory) are being written: no file is half-written (each is as it was or fully done), no
    temporary file is left, and the next run finishes the job."""
    root = tmp_path / "tree"
    big = [stage(fixtures, "go-cmd", root / "big", f"go{i}") for i in range(2)]
    small = _tree(fixtures, root, 20)
    expected = {
        "go-cmd": (digest(big[0]), hashlib.sha256(reference_strip(fixtures, "go-cmd", tmp_path)).hexdigest()),
        "hello-c-pie": (
            digest(small[0]),
            hashlib.sha256(reference_strip(fixtures, "hello-c-pie", tmp_path)).hexdigest(),
        ),
    }
    ready = tmp_path / "ready"
    process = slow_binslim("-r", str(root), "--no-verify", "-j", "3", ready=ready, sleep=0.05)
    try:
        deadline = time.monotonic() + 60
        while not (ready.exists() and len(set(ready.read_text().split())) >= 3):
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.01)
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate(timeout=TIMEOUT)
        deadline = time.monotonic() + 10
        while group_alive(process.pid):
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    for paths, name in ((big, "go-cmd"), (small, "hello-c-pie")):
        for path in paths:
            assert digest(path) in expected[name], f"{path} is half-written"
    assert expected["go-cmd"][0] in {digest(p) for p in big}, (
        "the kill should land before the big files are done"
    )
    assert temps_under(root) == []
    again = binslim("-r", str(root), "--no-verify", "-j", "3")
    assert again.returncode == 0, again.stderr
    assert {digest(p) for p in big} == {expected["go-cmd"][1]}
    assert {digest(p) for p in small} == {expected["hello-c-pie"][1]}


def test_output_closed_mid_tree(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    """``binslim -r TREE | head -1``: the reader goes away after one line. binslim stops between files with
    one line on stderr and no traceback; each file is done or as it was, and no temporary file is left."""
    root = tmp_path / "tree"
    files = _tree(fixtures, root, 40)
    original = digest(files[0])
    stripped_digest = hashlib.sha256(reference_strip(fixtures, "hello-c-pie", tmp_path)).hexdigest()
    process = slow_binslim("-r", str(root), "--no-verify", "-j", "2", ready=tmp_path / "ready", sleep=0.05)
    try:
        assert process.stdout is not None and process.stderr is not None
        first = process.stdout.readline()
        process.stdout.close()
        stderr = process.stderr.read()
        process.stderr.close()
        process.wait(timeout=TIMEOUT)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert first.startswith(f"{root}/")
    assert process.returncode == 1, stderr
    assert stderr == (
        "error: standard output closed; files reported before are done, the rest are as they were\n"
    )
    assert not group_alive(process.pid)
    digests = {digest(p) for p in files}
    assert digests <= {original, stripped_digest} and original in digests
    assert temps_under(root) == []


# -- UPX hanging ---------------------------------------------------------------------------------------------

FAKE_UPX = """#!/bin/sh
case "$1" in --version) echo "upx 9.9.9-fake"; exit 0;; esac
out=""; prev=""
for arg; do [ "$prev" = "-o" ] && out="$arg"; prev="$arg"; done
: > "$out"
echo $$ >> "{pids}"
sleep 300 &
echo $! >> "{pids}"
wait
"""


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def test_hanging_upx_keeps_the_stripped_output(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    fake = tmp_path / "fake-upx"
    fake.write_text(FAKE_UPX.replace("{pids}", str(pids)))
    fake.chmod(0o755)
    out = tmp_path / "out" / "hello"
    out.parent.mkdir()
    started = time.monotonic()
    done = binslim(
        fixtures["hello-c-pie"].path,
        "-o",
        str(out),
        "--upx",
        "--no-verify",
        "--upx-timeout",
        "2",
        env={"BINSLIM_UPX": str(fake)},
    )
    assert time.monotonic() - started < 60
    assert done.returncode == 0, done.stderr
    assert "not packed: upx timed out after 2 s" in done.stdout + done.stderr
    assert out.read_bytes() == reference_strip(fixtures, "hello-c-pie", tmp_path)
    assert os.listdir(out.parent) == ["hello"]
    recorded = [int(line) for line in pids.read_text().split()]
    assert recorded
    deadline = time.monotonic() + 5
    while not all(_gone(pid) for pid in recorded) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(_gone(pid) for pid in recorded), "UPX or its child outlived the timeout"
