"""binslim -r: a whole tree in place. ELF by content, links kept, failures per file, parallel and sorted."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import pty
import select
import shutil
import signal
import stat
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from binslim import slim, strip
from binslim.fileops import CAPABILITY_XATTR, TEMP_PREFIX
from binslim.report import REPORT_SCHEMA
from binslim.tree import slim_tree
from testdata.build import Fixture
from tests.helpers import (
    clean_env,
    require_tool,
    run_fixture,
    run_linked_object,
    run_with_library,
)
from tests.helpers import (
    run_binslim as binslim,
)

TIMEOUT = 600


def snapshot(root: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every file and link under ``root``: (inode, mtime_ns, content or link target). Folders are left out:
    their times change whenever a temporary file comes and goes beside a file being checked."""
    found = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        if path.is_symlink():
            content = os.readlink(path).encode()
        elif path.is_file():
            content = path.read_bytes()
        else:
            continue
        found[str(path.relative_to(root))] = (info.st_ino, info.st_mtime_ns, content)
    return found


def temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob(f"{TEMP_PREFIX}*")]


def make_tree(fixtures: dict[str, Fixture], root: Path) -> Path:
    """A small /usr/local: programs, a library, an object, an already stripped program, text, links."""
    for folder in ("bin", "lib", "share"):
        (root / folder).mkdir(parents=True)
    shutil.copy2(fixtures["hello-c-pie"].path, root / "bin" / "hello")
    shutil.copy2(fixtures["hello-cxx"].path, root / "bin" / "hello-cxx")
    shutil.copy2(fixtures["libgreet"].path, root / "lib" / "libgreet.so")
    shutil.copy2(fixtures["greet-obj"].path, root / "lib" / "greet.o")
    slim(fixtures["hello-c-nopie"].path, root / "bin" / "already", verify=False)
    (root / "share" / "README").write_text("not a binary\n")
    (root / "share" / "tool.sh").write_text("#!/bin/sh\necho hi\n")
    (root / "share" / "empty").write_bytes(b"")
    (root / "share" / "short").write_bytes(b"\x7fEL")
    (root / "bin" / "hello-link").symlink_to("hello")
    (root / "lib" / "libgreet.so.1").symlink_to("libgreet.so")
    (root / "share" / "dangling").symlink_to("missing")
    return root


ELF_NAMES = ["bin/already", "bin/hello", "bin/hello-cxx", "lib/greet.o", "lib/libgreet.so"]
STRIPPED = ["bin/hello", "bin/hello-cxx", "lib/greet.o", "lib/libgreet.so"]


def test_tree_slims_elf_files_and_touches_nothing_else(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    root = make_tree(fixtures, tmp_path / "tree")
    before = snapshot(root)
    done = binslim("-r", "tree", "--no-verify", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    after = snapshot(root)

    assert set(after) == set(before) and not temp_files(root)
    for name in before:
        if name in STRIPPED:
            assert len(after[name][2]) < len(before[name][2]), name
            assert after[name][2][:4] == b"\x7fELF"
        else:
            assert after[name] == before[name], f"{name} was touched"  # same inode, time and bytes
    assert all(
        (root / name).is_symlink() for name in ("bin/hello-link", "lib/libgreet.so.1", "share/dangling")
    )

    # One line per ELF file, sorted; the other files only count in the summary.
    lines = done.stdout.splitlines()
    assert [line.split(":")[0] for line in lines[: len(ELF_NAMES)]] == [f"tree/{n}" for n in ELF_NAMES]
    assert "already stripped" in lines[0]
    summary = "\n".join(lines[len(ELF_NAMES) :])
    assert "12 files seen: 5 ELF, 4 not ELF, 3 symlinks not followed" in summary
    assert "4 slimmed, 1 skipped (1 already stripped), 0 failed" in summary
    saved = sum(len(before[n][2]) - len(after[n][2]) for n in STRIPPED)
    assert f"saved {saved:,} B" in summary

    # And everything still works.
    assert run_fixture(fixtures["hello-c-pie"], path=root / "bin" / "hello")[0] == 0
    assert run_fixture(fixtures["hello-cxx"], path=root / "bin" / "hello-cxx")[0] == 0
    code, out, _ = run_with_library(fixtures, "libgreet", root / "lib" / "libgreet.so", tmp_path / "run")
    assert code == 0 and fixtures["libgreet"].expected_stdout in out
    code, out, _ = run_linked_object(fixtures["greet-obj"], root / "lib" / "greet.o", tmp_path)
    assert code == 0 and fixtures["greet-obj"].expected_stdout in out


def test_second_run_changes_nothing(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    root = make_tree(fixtures, tmp_path / "tree")
    assert binslim("-r", str(root), "--no-verify").returncode == 0
    before = snapshot(root)
    done = binslim("-r", str(root), "--no-verify")
    assert done.returncode == 0, done.stderr
    assert snapshot(root) == before
    # The object keeps its symbol table (so it links): not "already stripped", but nothing to gain.
    assert "0 slimmed, 5 skipped (4 already stripped, 1 nothing to gain)" in done.stdout
    assert "B: nothing to gain (an object keeps its symbol table, so it still links)" in done.stdout


def test_symlinks_are_not_followed(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    (outside / "dir").mkdir(parents=True)
    shutil.copy2(fixtures["hello-c-pie"].path, outside / "prog")
    shutil.copy2(fixtures["hello-c-pie"].path, outside / "dir" / "prog")
    root = tmp_path / "tree"
    root.mkdir()
    (root / "prog-link").symlink_to(outside / "prog")
    (root / "dir-link").symlink_to(outside / "dir")
    before = snapshot(outside)
    done = binslim("-r", str(root), "--no-verify", "--json")
    assert done.returncode == 0, done.stderr
    assert snapshot(outside) == before
    report = json.loads(done.stdout)
    assert [r["message"] for r in report["results"]] == ["symbolic link; not followed"] * 2
    assert report["summary"]["elf"] == 0 and report["summary"]["symlinks"] == 2


def test_a_root_given_as_a_symlink_is_followed_and_stays_a_link(
    fixtures: dict[str, Fixture],
    tmp_path: Path,
) -> None:
    real = tmp_path / "real"
    real.mkdir()
    shutil.copy2(fixtures["hello-c-pie"].path, real / "prog")
    (tmp_path / "dir-link").symlink_to(real)
    (tmp_path / "prog-link").symlink_to(real / "prog")
    size = (real / "prog").stat().st_size
    done = binslim("-r", str(tmp_path / "prog-link"), "--no-verify")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "prog-link").is_symlink() and (real / "prog").stat().st_size < size
    shutil.copy2(fixtures["hello-c-pie"].path, real / "prog")
    assert binslim("-r", str(tmp_path / "dir-link"), "--no-verify").returncode == 0
    assert (tmp_path / "dir-link").is_symlink() and (real / "prog").stat().st_size < size


def test_hard_links_in_the_tree_are_processed_once_and_stay_linked(
    fixtures: dict[str, Fixture], tmp_path: Path
) -> None:
    root = tmp_path / "tree"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    first = root / "a" / "prog"
    shutil.copy2(fixtures["hello-c-pie"].path, first)
    os.link(first, root / "b" / "prog")
    os.link(first, root / "b" / "prog2")
    size = first.stat().st_size
    done = binslim("-r", str(root), "--no-verify", "--json")
    assert done.returncode == 0, done.stderr
    names = [first, root / "b" / "prog", root / "b" / "prog2"]
    inodes = {p.stat().st_ino for p in names}
    assert len(inodes) == 1 and first.stat().st_nlink == 3
    assert first.stat().st_size < size
    report = json.loads(done.stdout)
    statuses = [(r["input"], r["status"]) for r in report["results"]]
    assert statuses == [(str(first), "ok"), (str(names[1]), "skipped"), (str(names[2]), "skipped")]
    assert report["summary"]["skipped"] == {"hard link, processed under another name": 2}
    assert report["summary"]["bytes"]["before"] == size  # one file, counted once
    assert run_fixture(fixtures["hello-c-pie"], path=names[2])[0] == 0


def test_hard_link_outside_the_tree_sees_the_new_content(
    fixtures: dict[str, Fixture], tmp_path: Path
) -> None:
    root = tmp_path / "tree"
    root.mkdir()
    inside = root / "prog"
    shutil.copy2(fixtures["hello-c-pie"].path, inside)
    inside.chmod(0o750)
    outside = tmp_path / "prog-elsewhere"
    os.link(inside, outside)
    inode, size = inside.stat().st_ino, inside.stat().st_size
    done = binslim("-r", str(root), "--no-verify")
    assert done.returncode == 0, done.stderr
    assert inside.stat().st_ino == inode == outside.stat().st_ino and inside.stat().st_nlink == 2
    assert outside.stat().st_size < size and stat.S_IMODE(outside.stat().st_mode) == 0o750
    assert run_fixture(fixtures["hello-c-pie"], path=outside)[0] == 0
    assert not temp_files(root)


def test_single_file_in_place_keeps_hard_links_and_skips_stripped_files(
    fixtures: dict[str, Fixture], tmp_path: Path
) -> None:
    prog = tmp_path / "prog"
    shutil.copy2(fixtures["hello-c-pie"].path, prog)
    os.link(prog, tmp_path / "other")
    size = prog.stat().st_size
    assert binslim(str(prog), "--no-verify").returncode == 0
    assert prog.stat().st_nlink == 2 and (tmp_path / "other").stat().st_size < size
    before = snapshot(tmp_path)
    done = binslim(str(prog), "--no-verify")
    assert done.returncode == 0 and "already stripped; left untouched" in done.stdout
    assert snapshot(tmp_path) == before


# A v2 file capability: cap_net_raw (13), permitted and effective.
CAPABILITY = struct.pack("<IIIII", 0x02000001, 1 << 13, 0, 0, 0)


@contextlib.contextmanager
def capability_support(path: Path) -> Iterator[None]:
    try:
        os.setxattr(path, CAPABILITY_XATTR, CAPABILITY)
    except OSError as exc:
        pytest.skip(f"cannot set {CAPABILITY_XATTR} here: {exc.strerror}")
    yield


def test_mode_owner_and_capability_are_kept(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("setting another owner and file capabilities needs root")
    root = tmp_path / "tree"
    root.mkdir()
    alone, linked = root / "alone", root / "linked"
    for path in (alone, linked):
        shutil.copy2(fixtures["hello-c-pie"].path, path)
        os.chown(path, 1234, 5678)
        path.chmod(0o4751)
    os.link(linked, tmp_path / "linked-outside")  # rewritten through its inode, not renamed
    with capability_support(alone):
        os.setxattr(linked, CAPABILITY_XATTR, CAPABILITY)
        done = binslim("-r", str(root), "--no-verify")
    assert done.returncode == 0, done.stderr
    for path in (alone, linked):
        info = path.stat()
        assert info.st_size < Path(fixtures["hello-c-pie"].path).stat().st_size
        assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (1234, 5678, 0o4751), path
        assert os.getxattr(path, CAPABILITY_XATTR) == CAPABILITY, path


@contextlib.contextmanager
def immutable(path: Path) -> Iterator[None]:
    """Make ``path`` impossible to replace, even for root (chattr +i); skip where that is not possible."""
    if os.geteuid() != 0:
        path.parent.chmod(0o555)
        try:
            yield
        finally:
            path.parent.chmod(0o755)
        return
    chattr = shutil.which("chattr")
    if chattr is None or subprocess.run([chattr, "+i", str(path)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i does not work here: no way to cause a permission problem as root")
    try:
        yield
    finally:
        subprocess.run([chattr, "-i", str(path)], check=True)


def test_per_file_failures_are_reported_and_do_not_stop_the_rest(
    fixtures: dict[str, Fixture], tmp_path: Path
) -> None:
    root = tmp_path / "tree"
    (root / "locked").mkdir(parents=True)
    good = root / "good"
    shutil.copy2(fixtures["hello-c-pie"].path, good)
    data = Path(fixtures["hello-c-pie"].path).read_bytes()
    (root / "broken").write_bytes(data[:4] + b"\x07" + data[5:])  # bad ELF class
    (root / "truncated").write_bytes(data[: len(data) // 3])
    denied = root / "locked" / "prog"
    shutil.copy2(fixtures["hello-c-pie"].path, denied)
    (root / "zz-last").write_bytes(data)
    before = {p: p.read_bytes() for p in (root / "broken", root / "truncated", denied)}
    with immutable(denied):
        done = binslim("-r", str(root), "--no-verify", "-j", "2")
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert [line.split(":")[1].strip() for line in errors] == [
        str(root / "broken"),
        str(root / "locked" / "prog"),
        str(root / "truncated"),
    ]
    assert "permission denied" in errors[1]
    assert "Traceback" not in done.stderr
    assert "2 slimmed, 0 skipped, 3 failed" in done.stdout
    assert good.stat().st_size < len(data) and (root / "zz-last").stat().st_size < len(data)
    assert {p: p.read_bytes() for p in before} == before
    assert not temp_files(root)


def tree_of_copies(fixtures: dict[str, Fixture], root: Path, count: int) -> Path:
    names = ["hello-c-pie", "hello-cxx", "libgreet", "greet-obj"]
    for index in range(count):
        folder = root / f"d{index % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy2(fixtures[names[index % len(names)]].path, folder / f"f{index:03d}")
        (folder / f"t{index:03d}.txt").write_text(f"text {index}\n")
    return root


def test_output_is_the_same_whatever_the_number_of_jobs(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    outputs = {}
    for jobs in ("1", "2", "5"):
        work = tmp_path / f"j{jobs}"
        tree_of_copies(fixtures, work / "tree", 40)
        text = binslim("-r", "tree", "--no-verify", "-j", jobs, cwd=work)
        report = binslim("-r", "tree", "--no-verify", "-j", jobs, "--json", cwd=work)
        assert text.returncode == 0 and report.returncode == 0, text.stderr + report.stderr
        outputs[jobs] = (text.stdout, report.stdout)
    assert outputs["1"] == outputs["2"] == outputs["5"]
    paths = [r["input"] for r in json.loads(outputs["2"][1])["results"]]
    assert paths == sorted(paths) and len(paths) == 80


def test_json_lists_every_file_with_a_summary(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    root = make_tree(fixtures, tmp_path / "tree")
    done = binslim("-r", str(root), "--no-verify", "--json")
    assert done.returncode == 0 and done.stderr == ""
    report = json.loads(done.stdout)
    jsonschema.validate(report, REPORT_SCHEMA)
    listed = [Path(r["input"]).relative_to(root).as_posix() for r in report["results"]]
    every = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_symlink() or p.is_file())
    assert listed == every
    summary = report["summary"]
    assert (summary["files"], summary["elf"], summary["not_elf"], summary["symlinks"]) == (12, 5, 4, 3)
    ok = [r for r in report["results"] if r["status"] == "ok"]
    assert summary["stripped"] == len(ok) == 4
    assert summary["bytes"]["saved"] == sum(r["size"]["original"] - r["size"]["final"] for r in ok)
    assert summary["dry_run"] is False


def test_dry_run_writes_nothing_and_predicts_the_saving(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    root = make_tree(fixtures, tmp_path / "tree")
    before = snapshot(root)
    folders = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_dir() and not p.is_symlink()}
    dry = binslim("-r", str(root), "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    assert snapshot(root) == before
    assert {p: p.stat().st_mtime_ns for p in folders} == folders  # not even a temporary file came and went
    predicted = json.loads(dry.stdout)
    assert predicted["summary"]["dry_run"] is True
    assert all(r["message"].startswith("dry run") for r in predicted["results"] if r["status"] == "ok")
    text = binslim("-r", str(root), "--dry-run")
    assert "would save" in text.stdout and "dry run, nothing written" in text.stdout
    real = json.loads(binslim("-r", str(root), "--no-verify", "--json").stdout)
    assert real["summary"]["bytes"] == predicted["summary"]["bytes"]
    for guess, done in zip(predicted["results"], real["results"]):
        assert (guess["input"], guess["size"], guess["removed"]) == (
            done["input"],
            done["size"],
            done["removed"],
        )


def test_upx_in_a_tree_packs_executables_only(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    require_tool("upx")
    root = make_tree(fixtures, tmp_path / "tree")
    done = binslim("-r", str(root), "--upx", "--json")  # verification on, as by default
    assert done.returncode == 0, done.stderr
    by_name = {Path(r["input"]).relative_to(root).as_posix(): r for r in json.loads(done.stdout)["results"]}
    for name in ("bin/hello", "bin/hello-cxx"):
        assert by_name[name]["size"]["packed"] is not None, by_name[name]
        assert by_name[name]["verify"]["same_behaviour"] is True
    assert by_name["lib/libgreet.so"]["size"]["packed"] is None
    assert "shared library" in by_name["lib/libgreet.so"]["message"]
    assert by_name["lib/greet.o"]["size"]["packed"] is None
    assert b"UPX!" not in (root / "lib" / "libgreet.so").read_bytes()
    summary = json.loads(done.stdout)["summary"]
    assert summary["packed"] == 3 and summary["not_packed"] == {"relocatable object": 1, "shared library": 1}
    assert run_fixture(fixtures["hello-cxx"], path=root / "bin" / "hello-cxx")[0] == 0
    code, out, _ = run_with_library(fixtures, "libgreet", root / "lib" / "libgreet.so", tmp_path / "run")
    assert code == 0 and fixtures["libgreet"].expected_stdout in out


def test_tree_usage_errors(tmp_path: Path) -> None:
    for args in (["-o", str(tmp_path / "x")], ["--upx-force"], ["--upx-required"]):
        done = binslim("-r", str(tmp_path), *args)
        assert done.returncode == 2 and "cannot be used with -r" in done.stderr, args
    done = binslim(str(tmp_path), "--no-verify")
    assert done.returncode == 1 and "use -r" in done.stderr


def test_missing_root_is_a_failure_not_a_crash(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    shutil.copy2(fixtures["hello-c-pie"].path, tmp_path / "prog")
    done = binslim("-r", str(tmp_path / "missing"), str(tmp_path), "--no-verify")
    assert done.returncode == 1 and f"error: {tmp_path / 'missing'}: No such file" in done.stderr
    assert "1 slimmed" in done.stdout


def test_overlapping_roots_process_each_file_once(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    shutil.copy2(fixtures["hello-c-pie"].path, tmp_path / "sub" / "prog")
    done = binslim("-r", str(tmp_path / "sub"), str(tmp_path), "--no-verify", "--json")
    assert done.returncode == 0, done.stderr
    assert [r["status"] for r in json.loads(done.stdout)["results"]] == ["ok"]


def read_pty(argv: list[str], env: dict[str, str]) -> str:
    """Run ``argv`` with stdout and stderr on a pseudo-terminal; return all it wrote there."""
    main_fd, child_fd = pty.openpty()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=child_fd, stderr=child_fd, env=env)
    os.close(child_fd)
    chunks = []
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        ready, _, _ = select.select([main_fd], [], [], 1.0)
        if not ready:
            if proc.poll() is not None:
                break
            continue
        try:
            chunk = os.read(main_fd, 65536)
        except OSError as exc:  # EIO: the child side is closed
            if exc.errno != errno.EIO:
                raise
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(main_fd)
    assert proc.wait(timeout=TIMEOUT) == 0
    return b"".join(chunks).decode()


def test_progress_bar_only_on_a_terminal_outside_ci(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    root = tree_of_copies(fixtures, tmp_path / "tree", 8)
    argv = [sys.executable, "-m", "binslim", "-r", str(root), "--no-verify", "--dry-run"]
    on_terminal = read_pty(argv, clean_env(TERM="xterm"))
    assert "\r[" in on_terminal and "8/8 ELF files" in on_terminal
    assert "\x1b" not in on_terminal  # no colours, no escape sequences
    assert "\r[" not in read_pty(argv, clean_env(TERM="xterm", CI="true"))
    assert "\r[" not in read_pty([*argv, "--json"], clean_env(TERM="xterm"))
    piped = binslim("-r", str(root), "--no-verify", "--dry-run")
    assert "\r" not in piped.stdout + piped.stderr and "\x1b" not in piped.stdout + piped.stderr


def test_interrupt_leaves_every_file_whole(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    root = tmp_path / "tree"
    root.mkdir()
    original = Path(fixtures["hello-cxx"].path).read_bytes()
    slim(fixtures["hello-cxx"].path, tmp_path / "expected", verify=False)
    expected = (tmp_path / "expected").read_bytes()
    for index in range(200):
        (root / f"f{index:03d}").write_bytes(original)
    proc = subprocess.Popen(
        [sys.executable, "-m", "binslim", "-r", str(root), "--no-verify", "-j", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=clean_env(),
        start_new_session=True,
    )
    assert proc.stdout is not None
    proc.stdout.readline()  # the first file is done: the walk is over and the pool is at work
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does: the whole foreground group
    _, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode in (0, 130), err
    if proc.returncode == 130:
        assert "interrupted" in err.decode() and "Traceback" not in err.decode()
    assert not temp_files(root)
    contents = {(root / f"f{index:03d}").read_bytes() for index in range(200)}
    assert contents <= {original, expected}


def test_library_reports_in_sorted_order_with_progress(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    root = tree_of_copies(fixtures, tmp_path / "tree", 24)
    seen: list[str] = []
    progress: list[tuple[int, int]] = []
    tree = slim_tree(
        [root],
        jobs=2,
        verify=False,
        on_result=lambda r: seen.append(r.input),
        on_progress=lambda done, total: progress.append((done, total)),
    )
    assert seen == sorted(seen) and len(seen) == 24  # ELF files only
    assert len(tree.results) == 48 and [r.input for r in tree.results] == sorted(
        r.input for r in tree.results
    )
    assert progress[-1] == (24, 24) and [d for d, _ in progress] == sorted(d for d, _ in progress)
    assert tree.summary.stripped == 24 and tree.summary.not_elf == 24


def test_a_pool_starts_only_for_a_tree_big_enough_to_pay_for_it() -> None:
    from binslim.tree import PER_FILE_SECONDS, POOL_MIN_SECONDS, _default_workers, _Job, default_jobs

    small = [_Job(f"f{i}", 20_000) for i in range(10)]
    assert _default_workers(small, verify=False) == 1
    assert _default_workers(small[:1], verify=True) == 1  # one program's runs cost less than a pool
    many = [_Job(f"f{i}", 20_000) for i in range(int(POOL_MIN_SECONDS / PER_FILE_SECONDS) + 1)]
    assert _default_workers(many, verify=False) == default_jobs()
    big = [_Job("big", 1 << 30)]
    assert _default_workers(big, verify=False) == default_jobs()
    assert _default_workers(small[:7], verify=True) == default_jobs()


def test_a_small_tree_runs_without_workers(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    from tests.test_startup import loaded_after

    root = tree_of_copies(fixtures, tmp_path / "tree", 4)
    loaded = loaded_after(
        "from binslim.cli import main\n"
        f"try:\n    main(['-r', {str(root)!r}, '--no-verify'])\nexcept SystemExit as exc:\n"
        "    assert exc.code == 0, exc.code"
    )
    assert "binslim.tree" in loaded
    assert "multiprocessing" not in loaded and "concurrent.futures" not in loaded


def test_tree_lines_say_overlay_kept_and_verification_not_run(
    fixtures: dict[str, Fixture], tmp_path: Path
) -> None:
    root = tmp_path / "tree"
    root.mkdir()
    shutil.copy2(fixtures["hello-c-overlay"].path, root / "with-overlay")
    shutil.copy2(fixtures["libgreet"].path, root / "libgreet.so")
    done = binslim("-r", str(root))
    assert done.returncode == 0, done.stderr
    lines = {line.split(":", 1)[0]: line for line in done.stdout.splitlines()}
    assert "; overlay of 12,288 B kept" in lines[str(root / "with-overlay")]
    assert "; not run to verify: " in lines[str(root / "libgreet.so")]


def children_of_this_process() -> list[int]:
    """Live or zombie children of the test process: a forked worker nobody reaped shows up here."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == os.getpid():
                    found.append(int(entry))
    return found


def test_a_worker_dying_before_it_records_its_batch_has_that_batch_failed(
    fixtures: dict[str, Fixture], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker killed between taking a batch and writing down which it took: that batch is reported as
    failed (it used to be lost, and the tree ended in a KeyError traceback); every other file is done."""
    from binslim import tree as tree_module

    root = tmp_path / "tree"
    root.mkdir()
    for index in range(12):
        shutil.copy2(fixtures["hello-c-pie"].path, root / f"f{index:02}")
    original = (root / "f00").read_bytes()
    parent = os.getpid()
    real_set = tree_module._ForkedRun._set

    def dying_set(self: tree_module._ForkedRun, word: int, value: int) -> None:
        if os.getpid() != parent and word >= 2 and value != tree_module._NO_BATCH:
            os.kill(os.getpid(), signal.SIGKILL)
        real_set(self, word, value)

    monkeypatch.setattr(tree_module._ForkedRun, "_set", dying_set)
    seen: list[str] = []
    result = slim_tree([root], jobs=2, verify=False, on_result=lambda r: seen.append(r.input))
    failed = [r for r in result.results if r.status == "failed"]
    assert failed, "the worker's batch should be failed"
    for failure in failed:
        assert failure.message == f"{failure.input}: worker process died before reporting it"
        assert Path(failure.input).read_bytes() == original  # never touched
    assert all(r.status == "ok" for r in result.results if r not in failed)
    assert seen == sorted(seen) == [r.input for r in result.results]
    assert result.summary.failed == len(failed) and result.summary.stripped == 12 - len(failed)
    assert children_of_this_process() == []
    assert temp_files(root) == []


def test_verifying_workers_survive_the_runs_without_a_pid_namespace(
    fixtures: dict[str, Fixture], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a PID namespace a verification run ends every unknown child of this process as an orphan:
    it used to kill and reap the forked -r workers (ChildProcessError traceback). They are claimed now."""
    from binslim import children, runner

    monkeypatch.setattr(runner, "_namespace_prefix", lambda: ())
    root = tmp_path / "tree"
    root.mkdir()
    for index in range(9):
        shutil.copy2(fixtures["hello-c-pie"].path, root / f"f{index:02}")
    result = slim_tree([root], jobs=3, verify=True)
    assert [r.status for r in result.results] == ["ok"] * 9, [r.message for r in result.results]
    assert all(r.verify is not None and r.verify.ran for r in result.results)
    assert children_of_this_process() == []
    assert not children.started, "a registered worker was never unregistered"


def hostile_tree(fixtures: dict[str, Fixture], work: Path) -> Path:
    """Everything a tree may hold at once: one big program (18 MB, streamed, a batch of its own) among many
    small ones, hard links inside and outside the tree, symlinks, broken and truncated ELF files, an empty
    file named like a library, ELF magic alone, an unreadable mode, a FIFO, and a file that cannot be
    replaced."""
    root = tree_of_copies(fixtures, work / "tree", 30)
    data = Path(fixtures["hello-c-pie"].path).read_bytes()
    shutil.copy2(fixtures["go-cmd"].path, root / "d1" / "go-cmd")
    os.link(root / "d0" / "f000", root / "d2" / "f000-link")
    shutil.copy2(fixtures["hello-c-pie"].path, root / "d1" / "shared")
    os.link(root / "d1" / "shared", work / "outside-link")
    (root / "d0" / "to-go").symlink_to("../d1/go-cmd")
    (root / "d0" / "dangling").symlink_to("nowhere")
    (root / "d0" / "broken").write_bytes(data[:4] + b"\x07" + data[5:])
    (root / "d0" / "truncated").write_bytes(data[: len(data) // 3])
    (root / "d2" / "libempty.so").write_bytes(b"")
    (root / "d2" / "magic-only").write_bytes(b"\x7fELF")
    shutil.copy2(fixtures["hello-cxx"].path, root / "d2" / "no-mode")
    (root / "d2" / "no-mode").chmod(0)
    os.mkfifo(root / "d2" / "fifo")
    (root / "locked").mkdir()
    shutil.copy2(fixtures["hello-c-pie"].path, root / "locked" / "prog")
    return root


def test_many_workers_on_two_cpus_say_and_do_what_one_does(
    fixtures: dict[str, Fixture], tmp_path: Path
) -> None:
    """-j 3 and -j 8 (more workers than this machine's CPUs) over the hostile tree: stdout, stderr, exit code
    and every file's resulting bytes are the same as with -j 1."""
    runs = {}
    trees = {}
    for jobs in ("1", "3", "8"):
        work = tmp_path / f"j{jobs}"
        root = hostile_tree(fixtures, work)
        with immutable(root / "locked" / "prog"):
            runs[jobs] = binslim("-r", "tree", "--no-verify", "-j", jobs, cwd=work)
        assert "Traceback" not in runs[jobs].stderr
        assert not temp_files(root) and not temp_files(work)
        trees[jobs] = {name: content for name, (_, _, content) in snapshot(root).items()}
        (root / "d2" / "no-mode").chmod(0o644)
        assert (work / "outside-link").read_bytes() == (root / "d1" / "shared").read_bytes()
    assert runs["1"].returncode == 1, runs["1"].stderr
    errors = [line for line in runs["1"].stderr.splitlines() if line.startswith("error: ")]
    assert [line.split(":")[1].strip() for line in errors] == [
        "tree/d0/broken",
        "tree/d0/truncated",
        "tree/d2/magic-only",
        "tree/locked/prog",
    ], runs["1"].stderr
    assert "truncated ELF identification" in errors[2] and "permission denied" in errors[3]
    for jobs in ("3", "8"):
        assert (runs[jobs].returncode, runs[jobs].stdout, runs[jobs].stderr) == (
            runs["1"].returncode,
            runs["1"].stdout,
            runs["1"].stderr,
        )
        assert trees[jobs] == trees["1"]
    big = Path(fixtures["go-cmd"].path).stat().st_size
    assert len(trees["1"]["d1/go-cmd"]) < big
    assert trees["1"]["d2/libempty.so"] == b"" and trees["1"]["d2/magic-only"] == b"\x7fELF"


@pytest.mark.parametrize("jobs", [1, 2])
def test_files_swapped_between_the_walk_and_the_strip(
    fixtures: dict[str, Fixture], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, jobs: int
) -> None:
    """After the walk, files are replaced: by a FIFO (must not block), an empty file, a truncated ELF file,
    and a file far bigger than the walk saw (past IN_MEMORY_BYTES: streamed). Each gets its own clear result;
    the others go on; nothing temporary is left."""
    from binslim import tree as tree_module

    root = tmp_path / "tree"
    root.mkdir()
    for name in ("a-ok", "b-fifo", "c-empty", "d-truncated", "e-grown", "f-ok"):
        shutil.copy2(fixtures["hello-c-pie"].path, root / name)
    data = Path(fixtures["hello-c-pie"].path).read_bytes()
    big = Path(fixtures["gofmt"].path).read_bytes()
    real_walk = tree_module._walk

    def walk_then_swap(roots: list[str]) -> list[object]:
        entries = real_walk(roots)
        (root / "b-fifo").unlink()
        os.mkfifo(root / "b-fifo")
        (root / "c-empty").write_bytes(b"")
        (root / "d-truncated").write_bytes(data[: len(data) // 3])
        (root / "e-grown").write_bytes(big)
        return entries

    monkeypatch.setattr(tree_module, "_walk", walk_then_swap)
    result = slim_tree([root], jobs=jobs, verify=False)
    outcome = {os.path.basename(r.input): (r.status, r.message) for r in result.results}
    assert outcome["b-fifo"] == ("failed", f"{root / 'b-fifo'}: is a FIFO, not a regular file")
    assert outcome["c-empty"] == ("failed", f"{root / 'c-empty'}: empty file, not an ELF file")
    assert outcome["d-truncated"][0] == "failed"
    assert outcome["d-truncated"][1].startswith(f"{root / 'd-truncated'}: ")
    assert "past the end of the file" in outcome["d-truncated"][1]
    assert [outcome[name][0] for name in ("a-ok", "e-grown", "f-ok")] == ["ok"] * 3
    assert len(big) > result.results[4].final_size == (root / "e-grown").stat().st_size
    assert result.results[4].original_size == len(big)
    assert (root / "d-truncated").read_bytes() == data[: len(data) // 3]
    assert stat.S_ISFIFO((root / "b-fifo").lstat().st_mode)
    assert not temp_files(root)


def test_ctrl_c_right_after_a_fork_leaves_no_child_behind(
    fixtures: dict[str, Fixture], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C arriving just after a worker is forked, before it is on record: it is held until the worker is,
    so the stop reaches it and it is waited for (else it was left as a zombie nobody reaps)."""
    from binslim import children

    root = tree_of_copies(fixtures, tmp_path / "tree", 12)
    before = {p: p.read_bytes() for p in root.rglob("f*")}
    done = {}  # what each file is once slimmed (the same whoever does it)
    for name in ["hello-c-pie", "hello-cxx", "libgreet", "greet-obj"]:
        strip(fixtures[name].path, tmp_path / name)
        done[Path(fixtures[name].path).read_bytes()] = (tmp_path / name).read_bytes()
    real_register = children.register

    def interrupted_register(pid: int) -> None:
        os.kill(os.getpid(), signal.SIGINT)
        real_register(pid)

    monkeypatch.setattr(children, "register", interrupted_register)
    with pytest.raises(KeyboardInterrupt):
        slim_tree([root], jobs=3, verify=False)
    assert children_of_this_process() == []
    assert not children.started
    # The worker may have begun a file before the stop reached it (it runs at once): done or as it was.
    for path, content in before.items():
        assert path.read_bytes() in (content, done[content]), path
    assert not temp_files(root)


def test_a_second_ctrl_c_waits_until_every_worker_is_reaped(
    fixtures: dict[str, Fixture], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C in the middle of a tree, then another while the workers are being waited for: the second is
    held until the last worker is reaped (it used to cut the wait short and leave workers behind); every
    file is done or as it was."""
    from binslim import tree as tree_module

    root = tree_of_copies(fixtures, tmp_path / "tree", 24)
    before = {p: p.read_bytes() for p in root.rglob("f*")}
    parent = os.getpid()
    real_run_job = tree_module._run_job
    real_wait = tree_module._ForkedRun._wait
    jobs_here = []

    def run_job(job: tree_module._Job, options: object) -> list[object]:
        if os.getpid() == parent:
            jobs_here.append(job.path)
            if len(jobs_here) == 2:
                raise KeyboardInterrupt
        return real_run_job(job, options)  # type: ignore[arg-type]

    def wait_interrupted(pid: int) -> int:
        os.kill(os.getpid(), signal.SIGINT)
        return real_wait(pid)

    monkeypatch.setattr(tree_module, "_run_job", run_job)
    monkeypatch.setattr(tree_module._ForkedRun, "_wait", staticmethod(wait_interrupted))
    with pytest.raises(KeyboardInterrupt):
        slim_tree([root], jobs=3, verify=False)
    assert children_of_this_process() == []
    after = {p: p.read_bytes() for p in root.rglob("f*")}
    assert any(after[p] != before[p] for p in before) and any(after[p] == before[p] for p in before)
    assert not temp_files(root)


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_hard_link_replaced_after_the_walk_is_not_overwritten(
    fixtures: dict[str, Fixture], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, jobs: int
) -> None:
    """Three names of one program; after the walk one name gets other content and one is removed. The new
    file used to be renamed onto both (the other content lost, the removed name back). Now the first name is
    stripped, the second keeps its new content, the third stays removed, each reported as failed."""
    from binslim import tree as tree_module

    root = tmp_path / "tree"
    root.mkdir()
    shutil.copy2(fixtures["hello-c-pie"].path, root / "a")
    os.link(root / "a", root / "b")
    os.link(root / "a", root / "c")
    for index in range(8):  # enough work for a worker
        shutil.copy2(fixtures["hello-c-pie"].path, root / f"z{index}")
    real_walk = tree_module._walk

    def walk_then_swap(roots: list[str]) -> list[object]:
        entries = real_walk(roots)
        (root / "b").unlink()
        (root / "b").write_text("new content\n")
        (root / "c").unlink()
        return entries

    monkeypatch.setattr(tree_module, "_walk", walk_then_swap)
    result = slim_tree([root], jobs=jobs, verify=False)
    outcome = {os.path.basename(r.input): (r.status, r.message) for r in result.results}
    assert outcome["a"][0] == "ok"
    for name in ("b", "c"):
        assert outcome[name] == (
            "failed",
            f"{root / name}: no longer a hard link of {root / 'a'} (replaced or removed since the walk); "
            "left as it was",
        )
    assert (root / "b").read_text() == "new content\n"
    assert not (root / "c").exists()
    assert (root / "a").stat().st_size < Path(fixtures["hello-c-pie"].path).stat().st_size
    assert not temp_files(root)


def test_no_process_to_be_had_means_this_one_does_the_work(
    fixtures: dict[str, Fixture], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fork failing (EAGAIN: a process limit reached) after one worker: the tree is still done in full, by
    this process and that worker, and no descriptor is left open."""
    from binslim import tree as tree_module

    root = tree_of_copies(fixtures, tmp_path / "tree", 16)
    real_fork = os.fork
    forks = []

    def limited_fork() -> int:
        if forks:
            raise OSError(errno.EAGAIN, "Resource temporarily unavailable")
        forks.append(1)
        return real_fork()

    monkeypatch.setattr(tree_module.os, "fork", limited_fork)
    open_before = sorted(os.listdir("/proc/self/fd"))
    result = slim_tree([root], jobs=4, verify=False)
    assert sorted(os.listdir("/proc/self/fd")) == open_before
    assert result.summary.stripped == 16 and result.summary.failed == 0
    assert children_of_this_process() == []
