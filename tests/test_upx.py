"""Tests for binslim.upx: the real UPX on small programs built here, fake UPX scripts only for failures."""

from __future__ import annotations

import glob
import hashlib
import os
import platform
import random
import shutil
import stat
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from binslim.errors import (
    MalformedELFError,
    NotELFError,
    ToolFailedError,
    ToolNotFoundError,
    UnsupportedError,
)
from binslim.runner import run
from binslim.upx import UpxResult, UpxTool, compress, find_upx, is_upx_packed, pack_eligibility

# require_tool(name) skips, or fails under CI=true, when a tool is missing; only that effect is used here.
try:
    from helpers import require_tool  # type: ignore[import-not-found, unused-ignore]
except ImportError:  # pragma: no cover - until tests/helpers.py lands

    def require_tool(name: str) -> str:
        """The tool's path; a missing tool fails under CI=true and skips elsewhere."""
        path = shutil.which(name)
        if path is None:
            message = f"{name} is not installed"
            if os.environ.get("CI", "").lower() == "true":
                pytest.fail(message)
            pytest.skip(message)
        return path


NOT_FOUND = "upx not found: install Debian's upx-ucl (bookworm-backports), set BINSLIM_UPX, or drop --upx"
BUILD_TIMEOUT = 300.0
HOST_IS_X86_64 = platform.machine() == "x86_64"

HELLO_C = r"""
#include <stdio.h>
int main(int argc, char **argv) {
    printf("hello from C, argc=%d, last=%s\n", argc, argv[argc - 1]);
    return 3;
}
"""

HELLO_CXX = r"""
#include <iostream>
#include <stdexcept>
#include <string>
#include <vector>
int main(int argc, char **argv) {
    std::vector<std::string> args(argv, argv + argc);
    try {
        if (args.size() > 1) throw std::runtime_error("thrown " + args.back());
    } catch (const std::exception &e) {
        std::cout << "caught: " << e.what() << "\n";
    }
    std::cout << "hello from C++, " << args.size() << " args\n";
    return 5;
}
"""

HELLO_GO = """package main

import (
\t"fmt"
\t"os"
)

func main() {
\tfmt.Println("hello from Go", len(os.Args), os.Args[len(os.Args)-1])
\tos.Exit(4)
}
"""

LIBRARY_C = "int twice(int x) { return 2 * x; }\n"

# No libc, and the page padding folded away, so nearly every byte is random: UPX cannot shrink it.
RANDOM_BLOB_C = r"""
#include "blob.h"
void _start(void) {
    volatile const unsigned char *p = blob;
    for (;;) (void)p[0];
}
"""


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build(argv: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None) -> None:
    run(argv, timeout=BUILD_TIMEOUT, cwd=None if cwd is None else str(cwd), env=env, check=True)


def find_go() -> str:
    candidates = [shutil.which("go") or ""] + sorted(glob.glob("/usr/lib/go-*/bin/go"), reverse=True)
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    require_tool("go")
    pytest.skip("go is not installed")  # not reached: require_tool did not find it either


def behaviour(binary: Path) -> tuple[int | None, bytes, bytes]:
    done = run([str(binary), "first", "second arg"], timeout=60)
    return done.returncode, done.stdout, done.stderr


def assert_behaves_like(packed: Path, original: Path) -> None:
    expected = behaviour(original)
    assert expected[0] is not None
    assert behaviour(packed) == expected


def process_gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")  # a zombie is dead; only its parent can reap it


def write_script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


# --- fixtures: small programs built once per module ---


@pytest.fixture(scope="module")
def real_upx() -> UpxTool:
    try:
        return find_upx()
    except ToolNotFoundError:
        require_tool("upx")
        raise


@pytest.fixture(scope="module")
def programs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """C, static C, static-pie, musl, C++, a shared library, a .o and two refusals, each built here."""
    require_tool("gcc")
    src = tmp_path_factory.mktemp("src")
    out = tmp_path_factory.mktemp("programs")
    (src / "hello.c").write_text(HELLO_C)
    (src / "hello.cc").write_text(HELLO_CXX)
    (src / "lib.c").write_text(LIBRARY_C)
    built = {
        "static-glibc": ["gcc", "-O2", "-static"],
        "static-pie": ["gcc", "-O2", "-static-pie"],
        "dynamic-c": ["gcc", "-O2"],
    }
    paths: dict[str, Path] = {}
    for name, compiler in built.items():
        paths[name] = out / name
        build([*compiler, "-o", str(paths[name]), str(src / "hello.c")])
    paths["object"] = out / "hello.o"
    build(["gcc", "-O2", "-c", "-o", str(paths["object"]), str(src / "hello.c")])
    paths["shared-lib"] = out / "libtwice.so"
    build(["gcc", "-O2", "-shared", "-fPIC", "-o", str(paths["shared-lib"]), str(src / "lib.c")])
    # Without crt files there is no DT_INIT, which UPX needs to pack a library.
    paths["shared-lib-no-init"] = out / "libtwice-noinit.so"
    build(
        [
            "gcc",
            "-O2",
            "-shared",
            "-fPIC",
            "-nostartfiles",
            "-o",
            str(paths["shared-lib-no-init"]),
            str(src / "lib.c"),
        ]
    )

    blob = random.Random(20240103).randbytes(200_000)
    (src / "blob.h").write_text("const unsigned char blob[] = {" + ",".join(str(b) for b in blob) + "};\n")
    (src / "blob.c").write_text(RANDOM_BLOB_C)
    paths["random-blob"] = out / "random-blob"
    build(
        [
            "gcc",
            "-O2",
            "-static",
            "-nostdlib",
            "-s",
            "-Wl,-z,noseparate-code",
            "-Wl,--build-id=none",
            "-o",
            str(paths["random-blob"]),
            str(src / "blob.c"),
        ]
    )

    # A valid ELF header and one PT_LOAD, 120 bytes in all: far below what UPX will consider.
    header = bytearray(paths["static-glibc"].read_bytes()[:64])
    struct.pack_into("<QQ", header, 0x20, 64, 0)  # e_phoff, e_shoff
    struct.pack_into("<HHHHHH", header, 0x34, 64, 56, 1, 64, 0, 0)
    load = struct.pack("<IIQQQQQQ", 1, 5, 0, 0x400000, 0x400000, 120, 120, 0x1000)
    paths["too-small"] = out / "too-small"
    paths["too-small"].write_bytes(bytes(header) + load)
    paths["too-small"].chmod(0o755)
    return paths


@pytest.fixture(scope="module")
def musl_program(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_tool("musl-gcc")
    work = tmp_path_factory.mktemp("musl")
    (work / "hello.c").write_text(HELLO_C)
    build(["musl-gcc", "-O2", "-static", "-o", str(work / "hello-musl"), str(work / "hello.c")])
    return work / "hello-musl"


@pytest.fixture(scope="module")
def cxx_program(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_tool("g++")
    work = tmp_path_factory.mktemp("cxx")
    (work / "hello.cc").write_text(HELLO_CXX)
    build(["g++", "-O2", "-o", str(work / "hello-cxx"), str(work / "hello.cc")])
    return work / "hello-cxx"


@pytest.fixture(scope="module")
def go_builder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, dict[str, str]]]:
    go = find_go()
    work = tmp_path_factory.mktemp("go")
    (work / "go.mod").write_text("module example.com/hello\n\ngo 1.21\n")
    (work / "main.go").write_text(HELLO_GO)
    env = dict(os.environ)
    env.update(
        GOTOOLCHAIN="local",
        CGO_ENABLED="0",
        GOPROXY="off",
        GOFLAGS="-mod=mod",
        GOCACHE=str(work / "cache"),
        GOPATH=str(work / "gopath"),
        HOME=str(work),
    )
    yield go, work, env
    # The module cache is read-only by design; make it removable for pytest's tmp cleanup.
    for root, dirs, _files in os.walk(work):
        for name in dirs:
            os.chmod(os.path.join(root, name), stat.S_IRWXU)


@pytest.fixture(scope="module")
def go_program(go_builder: tuple[str, Path, dict[str, str]]) -> Path:
    go, work, env = go_builder
    build([go, "build", "-trimpath", "-o", str(work / "hello-go"), "."], cwd=work, env=env)
    return work / "hello-go"


@pytest.fixture(scope="module")
def foreign_go_program(go_builder: tuple[str, Path, dict[str, str]]) -> Path:
    go, work, env = go_builder
    arch = "arm64" if HOST_IS_X86_64 else "amd64"
    build(
        [go, "build", "-trimpath", "-o", str(work / f"hello-go-{arch}"), "."],
        cwd=work,
        env={**env, "GOARCH": arch},
    )
    return work / f"hello-go-{arch}"


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    path = tmp_path / "out"
    path.mkdir()
    return path


def pack_and_check(original: Path, out_dir: Path, tool: UpxTool, **options: object) -> UpxResult:
    """Pack with the real UPX; the packed file must run exactly like the original; input untouched."""
    before = sha256(original)
    target = out_dir / (original.name + ".upx")
    result = compress(str(original), str(target), tool=tool, **options)  # type: ignore[arg-type]
    assert result.packed, result.reason
    assert result.reason == ""
    assert result.output == str(target)
    assert result.input_size == original.stat().st_size
    assert result.output_size == target.stat().st_size < result.input_size
    assert result.seconds > 0
    assert result.version == tool.version
    assert sha256(original) == before
    assert is_upx_packed(str(target))
    assert os.access(target, os.X_OK)
    assert sorted(os.listdir(out_dir)) == [target.name]  # no temporary files left behind
    assert_behaves_like(target, original)
    return result


# --- finding UPX ---


def test_find_upx_reads_version(real_upx: UpxTool) -> None:
    assert os.path.isabs(real_upx.path)
    first_line = run([real_upx.path, "--version"], timeout=30).stdout.decode().splitlines()[0]
    assert first_line == f"upx {real_upx.version}"
    assert real_upx.version[0].isdigit()


def test_upx_missing_raises_with_install_hint(
    monkeypatch: pytest.MonkeyPatch, programs: dict[str, Path], tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", "")
    monkeypatch.delenv("BINSLIM_UPX", raising=False)
    with pytest.raises(ToolNotFoundError) as excinfo:
        find_upx()
    assert str(excinfo.value) == NOT_FOUND
    with pytest.raises(ToolNotFoundError, match="^upx not found: "):
        compress(str(programs["static-glibc"]), str(tmp_path / "packed"))
    assert not (tmp_path / "packed").exists()


def test_binslim_upx_is_honoured_first(tmp_path: Path, real_upx: UpxTool) -> None:
    fake = write_script(tmp_path / "my-upx", 'echo "upx 9.9.9-fake"\n')
    found = find_upx({"BINSLIM_UPX": str(fake), "PATH": os.path.dirname(real_upx.path)})
    assert found == UpxTool(path=str(fake), version="9.9.9-fake")


def test_binslim_upx_pointing_nowhere_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(ToolNotFoundError, match="BINSLIM_UPX=.*missing-upx"):
        find_upx({"BINSLIM_UPX": str(tmp_path / "missing-upx"), "PATH": os.defpath})


def test_falls_back_to_upx_ucl(tmp_path: Path, real_upx: UpxTool) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "upx-ucl").symlink_to(os.path.realpath(real_upx.path))
    found = find_upx({"PATH": str(bin_dir)})
    assert found.path == str(bin_dir / "upx-ucl")
    assert found.version == real_upx.version


# --- packing real programs ---


@pytest.mark.parametrize("name", ["static-glibc", "static-pie", "dynamic-c"])
def test_packs_c_programs(name: str, programs: dict[str, Path], out_dir: Path, real_upx: UpxTool) -> None:
    assert pack_eligibility(str(programs[name])) is None
    assert not is_upx_packed(str(programs[name]))
    result = pack_and_check(programs[name], out_dir, real_upx)
    assert (result.method, result.level) == ("default", "default")


def test_packs_musl_static(musl_program: Path, out_dir: Path, real_upx: UpxTool) -> None:
    pack_and_check(musl_program, out_dir, real_upx)


def test_packs_cxx_program(cxx_program: Path, out_dir: Path, real_upx: UpxTool) -> None:
    pack_and_check(cxx_program, out_dir, real_upx)


def test_packs_go_program_and_lzma_is_smaller(go_program: Path, tmp_path: Path, real_upx: UpxTool) -> None:
    (tmp_path / "nrv").mkdir()
    (tmp_path / "lzma").mkdir()
    default = pack_and_check(go_program, tmp_path / "nrv", real_upx)
    lzma = pack_and_check(go_program, tmp_path / "lzma", real_upx, method="lzma")
    assert lzma.method == "lzma"
    assert lzma.output_size is not None and default.output_size is not None
    assert lzma.output_size < default.output_size


def test_method_and_level_flags(
    programs: dict[str, Path], out_dir: Path, tmp_path: Path, real_upx: UpxTool
) -> None:
    """What reaches UPX's command line: nothing by default, and never --best/--brute."""
    log = tmp_path / "argv.log"
    wrapper = write_script(tmp_path / "upx-wrapper", f'echo "$@" >> "{log}"\nexec "{real_upx.path}" "$@"\n')
    tool = UpxTool(path=str(wrapper), version=real_upx.version)
    original = programs["static-glibc"]

    def packing_args(**options: object) -> list[str]:
        log.write_text("")
        for leftover in out_dir.iterdir():
            leftover.unlink()
        pack_and_check(original, out_dir, tool, **options)
        pack_line, test_line = log.read_text().splitlines()
        assert test_line.split()[0] == "-t"
        return pack_line.split()[:-3]  # drop "-o OUT IN"

    assert packing_args() == []
    assert packing_args(method="nrv", level=9) == ["--nrv2e", "-9"]
    assert packing_args(method="lzma", level=1) == ["--lzma", "-1"]
    assert packing_args(level=3, extra_args="--no-time  '--overlay=copy'") == [
        "-3",
        "--no-time",
        "--overlay=copy",
    ]


def test_result_to_dict(programs: dict[str, Path], out_dir: Path, real_upx: UpxTool) -> None:
    result = pack_and_check(programs["static-glibc"], out_dir, real_upx, method="nrv", level=7)
    assert result.to_dict() == {
        "version": real_upx.version,
        "method": "nrv2e",
        "level": "7",
        "seconds": result.seconds,
    }


# --- inputs binslim declines, and inputs UPX declines ---


def test_shared_library_is_skipped(programs: dict[str, Path], out_dir: Path, real_upx: UpxTool) -> None:
    library = str(programs["shared-lib"])
    reason = pack_eligibility(library)
    assert reason is not None and reason.startswith("shared library")
    result = compress(library, str(out_dir / "lib.so"), tool=real_upx)
    assert (result.packed, result.reason, result.output, result.seconds) == (False, reason, None, 0.0)
    assert os.listdir(out_dir) == []
    with pytest.raises(ToolFailedError, match="shared library"):
        compress(library, str(out_dir / "lib.so"), tool=real_upx, required=True)


def test_forced_library_without_dt_init_is_refused_by_upx(
    programs: dict[str, Path], out_dir: Path, real_upx: UpxTool
) -> None:
    result = compress(str(programs["shared-lib-no-init"]), str(out_dir / "lib.so"), tool=real_upx, force=True)
    assert not result.packed
    assert result.reason.startswith("UPX refused: CantPackException: need DT_INIT")
    assert os.listdir(out_dir) == []


def test_object_file_is_skipped(programs: dict[str, Path], out_dir: Path, real_upx: UpxTool) -> None:
    obj = str(programs["object"])
    reason = pack_eligibility(obj)
    assert reason is not None and "ET_REL" in reason
    assert compress(obj, str(out_dir / "x"), tool=real_upx).reason == reason
    forced = compress(obj, str(out_dir / "x"), tool=real_upx, force=True)
    assert forced.reason == "UPX refused: UnknownExecutableFormatException"
    assert os.listdir(out_dir) == []


def test_foreign_architecture_is_skipped(foreign_go_program: Path, out_dir: Path, real_upx: UpxTool) -> None:
    foreign = str(foreign_go_program)
    reason = pack_eligibility(foreign)
    expected_arch = "aarch64" if HOST_IS_X86_64 else "x86_64"
    assert reason is not None and reason.startswith(f"built for {expected_arch}, not this")
    assert compress(foreign, str(out_dir / "x"), tool=real_upx).reason == reason
    # Forced, UPX packs it; it cannot run here, but upx -t has checked it.
    forced = compress(foreign, str(out_dir / "x"), tool=real_upx, force=True)
    assert forced.packed, forced.reason
    assert is_upx_packed(str(out_dir / "x"))


def test_already_packed_input_is_recognised(
    programs: dict[str, Path], out_dir: Path, real_upx: UpxTool, tmp_path: Path
) -> None:
    packed = pack_and_check(programs["static-glibc"], out_dir, real_upx)
    assert packed.output is not None and is_upx_packed(packed.output)
    again = compress(packed.output, str(tmp_path / "twice"), tool=real_upx, force=True)
    assert (again.packed, again.reason) == (False, "already packed by UPX")
    assert again.seconds == 0.0  # recognised before UPX ran
    assert not (tmp_path / "twice").exists()
    with pytest.raises(ToolFailedError, match="already packed by UPX"):
        compress(packed.output, str(tmp_path / "twice"), tool=real_upx, required=True)


def test_too_small_file_is_refused(programs: dict[str, Path], out_dir: Path, real_upx: UpxTool) -> None:
    if not HOST_IS_X86_64:
        pytest.skip("the hand-made header is x86_64")
    result = compress(str(programs["too-small"]), str(out_dir / "x"), tool=real_upx)
    assert (result.packed, result.reason) == (False, "UPX refused: file is too small")
    assert os.listdir(out_dir) == []


def test_incompressible_file_is_refused(programs: dict[str, Path], out_dir: Path, real_upx: UpxTool) -> None:
    result = compress(str(programs["random-blob"]), str(out_dir / "x"), tool=real_upx)
    assert (result.packed, result.reason) == (False, "UPX refused: NotCompressibleException")
    assert result.seconds > 0
    assert os.listdir(out_dir) == []


def test_required_turns_refusal_into_error(
    programs: dict[str, Path], out_dir: Path, real_upx: UpxTool
) -> None:
    with pytest.raises(ToolFailedError) as excinfo:
        compress(str(programs["random-blob"]), str(out_dir / "x"), tool=real_upx, required=True)
    err = excinfo.value
    assert "UPX refused: NotCompressibleException" in str(err)
    assert err.returncode == 1 and "NotCompressibleException" in err.stderr_tail
    assert err.argv[0] == real_upx.path
    assert os.listdir(out_dir) == []


def test_refusal_leaves_existing_output_alone(
    programs: dict[str, Path], out_dir: Path, real_upx: UpxTool
) -> None:
    target = out_dir / "x"
    target.write_bytes(b"previous contents")
    result = compress(str(programs["random-blob"]), str(target), tool=real_upx)
    assert not result.packed
    assert target.read_bytes() == b"previous contents"
    assert os.listdir(out_dir) == ["x"]


def test_success_replaces_existing_output(
    programs: dict[str, Path], out_dir: Path, real_upx: UpxTool
) -> None:
    target = out_dir / "static-glibc.upx"
    target.write_bytes(b"previous contents")
    pack_and_check(programs["static-glibc"], out_dir, real_upx)


# --- bad requests and bad inputs ---


@pytest.mark.parametrize(
    "options",
    [
        {"method": "zstd"},
        {"method": "nrv2b"},
        {"level": 0},
        {"level": 10},
        {"extra_args": "-o /tmp/elsewhere"},
        {"extra_args": "--output=/tmp/elsewhere"},
        {"extra_args": "-d"},
        {"extra_args": "-qd"},
        {"extra_args": "-9o/tmp/elsewhere"},
        {"extra_args": "--test"},
        {"extra_args": "-- /bin/true"},
        {"extra_args": "--lzma another-file"},
        {"extra_args": "'unterminated"},
    ],
)
def test_bad_options_are_rejected(
    options: dict[str, object], programs: dict[str, Path], out_dir: Path, real_upx: UpxTool
) -> None:
    with pytest.raises(UnsupportedError):
        compress(str(programs["static-glibc"]), str(out_dir / "x"), tool=real_upx, **options)  # type: ignore[arg-type]
    assert os.listdir(out_dir) == []


def test_output_must_not_be_input(programs: dict[str, Path], tmp_path: Path, real_upx: UpxTool) -> None:
    copy = tmp_path / "copy"
    shutil.copy2(programs["static-glibc"], copy)
    with pytest.raises(UnsupportedError):
        compress(str(copy), str(copy), tool=real_upx)
    assert sha256(copy) == sha256(programs["static-glibc"])


def test_non_elf_and_truncated_inputs(tmp_path: Path, programs: dict[str, Path], real_upx: UpxTool) -> None:
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\necho UPX!\n")
    assert not is_upx_packed(str(script))
    with pytest.raises(NotELFError):
        pack_eligibility(str(script))
    with pytest.raises(NotELFError):
        compress(str(script), str(tmp_path / "x"), tool=real_upx)
    truncated = tmp_path / "truncated"
    truncated.write_bytes(programs["static-glibc"].read_bytes()[:40])
    assert not is_upx_packed(str(truncated))
    with pytest.raises(MalformedELFError):
        pack_eligibility(str(truncated))
    assert not is_upx_packed(str(tmp_path / "missing"))


# --- failures that are hard to cause with the real UPX: fake UPX scripts ---

FAKE_PREAMBLE = """case "$1" in --version) echo "upx 9.9.9-fake"; exit 0;; esac
out=""; prev=""
for arg; do [ "$prev" = "-o" ] && out="$arg"; prev="$arg"; done
"""


FakeUpx = Callable[[str], Path]


@pytest.fixture
def fake_upx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeUpx:
    """Install a fake UPX (given the script body) via BINSLIM_UPX, as a user would."""

    def install(body: str) -> Path:
        script = write_script(tmp_path / "fake-upx", FAKE_PREAMBLE + body)
        monkeypatch.setenv("BINSLIM_UPX", str(script))
        return script

    return install


def test_hanging_upx_times_out_cleanly(
    fake_upx: FakeUpx, tmp_path: Path, programs: dict[str, Path], out_dir: Path
) -> None:
    pids = tmp_path / "pids"
    fake_upx(f': > "$out"\necho $$ >> "{pids}"\nsleep 300 &\necho $! >> "{pids}"\nwait\n')
    started = time.monotonic()
    result = compress(str(programs["static-glibc"]), str(out_dir / "x"), timeout=1.0)
    assert time.monotonic() - started < 30
    assert (result.packed, result.reason) == (False, "upx timed out after 1 s")
    assert result.version == "9.9.9-fake"
    recorded = [int(line) for line in pids.read_text().split()]
    assert len(recorded) == 2
    deadline = time.monotonic() + 5
    while not all(process_gone(pid) for pid in recorded) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(process_gone(pid) for pid in recorded), "UPX or its child outlived the timeout"
    assert os.listdir(out_dir) == []  # the partial output and its folder are gone

    with pytest.raises(ToolFailedError) as excinfo:
        compress(str(programs["static-glibc"]), str(out_dir / "x"), timeout=0.5, required=True)
    assert excinfo.value.timed_out
    assert "upx timed out after 0.5 s" in str(excinfo.value)
    assert os.listdir(out_dir) == []


def test_crashing_upx_becomes_a_reason(fake_upx: FakeUpx, programs: dict[str, Path], out_dir: Path) -> None:
    fake_upx(': > "$out"\nkill -SEGV $$\n')
    result = compress(str(programs["static-glibc"]), str(out_dir / "x"))
    assert (result.packed, result.reason) == (False, "upx was killed by SIGSEGV")
    assert os.listdir(out_dir) == []


def test_failed_self_test_removes_packed_file(
    fake_upx: FakeUpx, real_upx: UpxTool, programs: dict[str, Path], out_dir: Path
) -> None:
    fake_upx(
        'if [ "$1" = "-t" ]; then\n'
        '  echo "upx: $2: Exception: compressed data violation" >&2; exit 1\n'
        "fi\n"
        f'exec "{real_upx.path}" "$@"\n'
    )
    result = compress(str(programs["static-glibc"]), str(out_dir / "x"))
    assert not result.packed
    assert result.reason == "packed file failed upx -t: Exception: compressed data violation"
    assert result.output is None and result.output_size is None
    assert os.listdir(out_dir) == []


@pytest.mark.parametrize(
    ("code", "stderr", "reason"),
    [
        (2, "upx: /x/y: AlreadyPackedException", "already packed by UPX"),
        (
            1,
            'upx: /x/y: CantPackException: need DT_INIT; try "void _init(void){}"',
            'UPX refused: CantPackException: need DT_INIT; try "void _init(void){}"',
        ),
        (
            1,
            "upx: /a: b/y: CantPackException: PT_NOTE above stub",
            "UPX refused: CantPackException: PT_NOTE above stub",
        ),
        (1, "upx: /x/y: IOException: file is too small -- skipped", "UPX refused: file is too small"),
        (1, "upx: /x/y: InternalError: bad loader", "upx failed: InternalError: bad loader"),
        (1, "something unexpected\nwent wrong", "upx exited with 1: something unexpected | went wrong"),
        (0, "", "upx exited 0 but wrote no output"),
    ],
)
def test_upx_messages_become_reasons(
    code: int, stderr: str, reason: str, fake_upx: FakeUpx, programs: dict[str, Path], out_dir: Path
) -> None:
    fake_upx(f"cat >&2 <<'EOF'\n{stderr}\nEOF\nexit {code}\n")
    result = compress(str(programs["static-glibc"]), str(out_dir / "x"))
    assert (result.packed, result.reason, result.version) == (False, reason, "9.9.9-fake")
    assert os.listdir(out_dir) == []
