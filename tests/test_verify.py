"""binslim.verifier: static checks, behaviour comparison, startup timing, foreign architectures."""

from __future__ import annotations

import json
import os
import shutil
import statistics
import struct
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from elftools.elf.elffile import ELFFile

from binslim.errors import MalformedELFError, NotELFError, ToolNotFoundError, VerificationError
from binslim.runner import Completed, run
from binslim.verification.launch import tiny_i386_program
from binslim.verification.measure import measure, paired_difference, t975
from binslim.verifier import (
    Timing,
    VerifyResult,
    measure_startup,
    qemu_for,
    require_same,
    static_check,
    verify,
)
from tests.helpers import clean_env, require_tool, run_binslim

# One program, a mode per behaviour. "Stripped" modes look for a symbol name that only the symbol table
# holds (the needle is assembled at run time so that .rodata does not contain it).
PROBE_SOURCE = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

extern char **environ;

__attribute__((noinline)) int probe_marker_symbol_for_tests(int x) { return x + 1; }

static int has_symbol_table(void) {
    char needle[64];
    strcpy(needle, "probe_marker_");
    strcat(needle, "symbol_for_tests");
    FILE *self = fopen("/proc/self/exe", "rb");
    if (!self) return -1;
    static char data[1 << 22];
    size_t size = fread(data, 1, sizeof data, self);
    fclose(self);
    size_t length = strlen(needle);
    for (size_t i = 0; i + length <= size; i++)
        if (!memcmp(data + i, needle, length)) return 1;
    return 0;
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "";
    if (!strcmp(mode, "--version")) { printf("probe 1.0\n"); return probe_marker_symbol_for_tests(-1); }
    if (!strcmp(mode, "selfsize")) {
        struct stat info;
        stat("/proc/self/exe", &info);
        printf("probe\nsize %lld\n", (long long)info.st_size);
        return 0;
    }
    if (!strcmp(mode, "exit-if-stripped")) return has_symbol_table() ? 0 : 1;
    if (!strcmp(mode, "hang-if-stripped")) { if (!has_symbol_table()) pause(); return 0; }
    if (!strcmp(mode, "hang")) {
        if (fork() == 0) { sleep(60); _exit(0); }  /* a grandchild in the same group */
        pause();
    }
    if (!strcmp(mode, "argv0")) {
        printf("%s\n", argv[0]);
        fprintf(stderr, "usage: %s\n", argv[0]);
        return 2;
    }
    if (!strcmp(mode, "stdin")) { char c; printf("read %zd\n", read(0, &c, 1)); return 0; }
    if (!strcmp(mode, "flood")) { for (int i = 0; i < (3 << 20); i++) putchar('y'); return 0; }
    if (!strcmp(mode, "where")) {
        char cwd[4096];
        printf("cwd %s\nhome %s\n", getcwd(cwd, sizeof cwd), getenv("HOME"));
        for (char **entry = environ; *entry; entry++) printf("env %s\n", *entry);
        return 0;
    }
    return 0;
}
"""

LIBRARY_SOURCE = "int probe_library_function(int x) { return 2 * x; }\n"

GO_SOURCE = """package main

import (
\t"fmt"
\t"os"
)

func main() {
\tfmt.Println("hello from go", len(os.Args))
}
"""


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The probe, a GNU-stripped copy, an object file and a shared library, built once."""
    gcc = require_tool("gcc")
    strip = require_tool("strip")
    folder = tmp_path_factory.mktemp("verify-probe")
    source = folder / "probe.c"
    source.write_text(PROBE_SOURCE)
    library_source = folder / "lib.c"
    library_source.write_text(LIBRARY_SOURCE)
    paths = {name: str(folder / name) for name in ("probe", "stripped/probe", "probe.o", "libprobe.so")}
    os.mkdir(folder / "stripped")
    subprocess.run([gcc, "-O1", "-o", paths["probe"], str(source)], check=True, timeout=120)
    subprocess.run([strip, "-o", paths["stripped/probe"], paths["probe"]], check=True, timeout=120)
    subprocess.run([gcc, "-c", "-o", paths["probe.o"], str(source)], check=True, timeout=120)
    subprocess.run(
        [gcc, "-shared", "-fPIC", "-o", paths["libprobe.so"], str(library_source)], check=True, timeout=120
    )
    return paths


@pytest.fixture(scope="session")
def go_arm64(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A static Go hello world for arm64 (cross-compiled, no cgo)."""
    go = "/usr/lib/go-1.23/bin/go" if os.path.exists("/usr/lib/go-1.23/bin/go") else None
    if go is None:
        go = require_tool("go", "golang-1.23-go from bookworm-backports")
    folder = tmp_path_factory.mktemp("go-arm64")
    (folder / "go.mod").write_text("module hello\n\ngo 1.21\n")
    (folder / "main.go").write_text(GO_SOURCE)
    env = {
        **os.environ,
        "GOARCH": "arm64",
        "GOOS": "linux",
        "CGO_ENABLED": "0",
        "GOTOOLCHAIN": "local",
        "GOFLAGS": "-mod=mod",
        "GOCACHE": str(folder / "cache"),
        "GOPATH": str(folder / "gopath"),
    }
    binary = folder / "hello"
    subprocess.run([go, "build", "-o", str(binary), "."], cwd=folder, env=env, check=True, timeout=600)
    return str(binary)


class Recorder:
    """A runner that records what the real one returned (a spy: every run is real)."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], dict[str, Any], Completed]] = []

    def __call__(self, argv: Sequence[str], **options: Any) -> Completed:
        done = run(argv, **options)
        self.calls.append((list(argv), options, done))
        return done


def copy_of(path: str, folder: Path, name: str | None = None) -> str:
    target = folder / (name or os.path.basename(path))
    shutil.copy2(path, target)
    return str(target)


def patch(path: str, offset: int, data: bytes) -> None:
    with open(path, "r+b") as handle:
        handle.seek(offset)
        handle.write(data)


# --- static checks ----------------------------------------------------------------------------------------


def test_static_check_accepts_gnu_strip_output(built: dict[str, str]) -> None:
    static_check(built["probe"], built["stripped/probe"], packed=False)
    static_check(built["probe"], built["probe"], packed=False)


def test_static_check_catches_a_changed_entry_point(built: dict[str, str], tmp_path: Path) -> None:
    changed = copy_of(built["stripped/probe"], tmp_path)
    with open(changed, "rb") as handle:
        header = handle.read(32)
    entry = struct.unpack_from("<Q", header, 24)[0]
    patch(changed, 24, struct.pack("<Q", entry + 16))
    with pytest.raises(
        VerificationError, match=rf"entry point changed: {entry:#x}→{entry + 16:#x}"
    ) as caught:
        static_check(built["probe"], changed, packed=False)
    assert caught.value.exit_code == 3
    assert str(caught.value).startswith(changed)


def test_static_check_catches_a_changed_loaded_byte(built: dict[str, str], tmp_path: Path) -> None:
    changed = copy_of(built["stripped/probe"], tmp_path)
    data = Path(changed).read_bytes()
    offset = data.index(b"probe 1.0")  # in .rodata, inside a PT_LOAD segment
    patch(changed, offset, b"P")
    with pytest.raises(
        VerificationError, match=rf"segment \d+ \(PT_LOAD\) changed at file offset {offset:#x}"
    ):
        static_check(built["probe"], changed, packed=False)


def test_static_check_allows_a_missing_section_table(built: dict[str, str], tmp_path: Path) -> None:
    # Like sstrip: e_shoff, e_shnum and e_shstrndx zeroed. They sit inside the first PT_LOAD but only
    # locate the section table, which nothing loads.
    changed = copy_of(built["stripped/probe"], tmp_path)
    patch(changed, 40, bytes(8))
    patch(changed, 60, bytes(4))
    static_check(built["probe"], changed, packed=False)


def last_load_segment(path: str) -> tuple[int, int, int]:
    """(file offset of its p_filesz field, p_offset, p_filesz) of the last PT_LOAD of an ELF64 file."""
    with open(path, "rb") as handle:
        elf = ELFFile(handle)
        phoff, phentsize = elf.header["e_phoff"], elf.header["e_phentsize"]
        index, segment = [(i, s) for i, s in enumerate(elf.iter_segments()) if s["p_type"] == "PT_LOAD"][-1]
        return phoff + index * phentsize + 32, segment["p_offset"], segment["p_filesz"]


def test_static_check_allows_trimming_a_zero_tail_only(built: dict[str, str], tmp_path: Path) -> None:
    # The loader zero-fills past p_filesz, so dropping trailing zeros from the file maps the same memory.
    original = copy_of(built["probe"], tmp_path, "original")
    field, offset, size = last_load_segment(original)
    patch(original, offset + size - 16, bytes(16))
    trimmed = copy_of(original, tmp_path, "trimmed")
    patch(trimmed, field, struct.pack("<Q", size - 16))
    static_check(original, trimmed, packed=False)

    patch(original, offset + size - 1, b"\xaa")  # now the dropped tail holds data
    with pytest.raises(VerificationError, match=rf"p_filesz changed: {size:#x}→{size - 16:#x}"):
        static_check(original, trimmed, packed=False)


def test_static_check_catches_other_header_fields(built: dict[str, str], tmp_path: Path) -> None:
    changed = copy_of(built["stripped/probe"], tmp_path)
    patch(changed, 48, struct.pack("<I", 0x1234))  # e_flags
    with pytest.raises(VerificationError, match="ELF header e_flags changed: 0x0→0x1234"):
        static_check(built["probe"], changed, packed=False)


def test_static_check_catches_a_changed_build_id(built: dict[str, str], tmp_path: Path) -> None:
    changed = copy_of(built["stripped/probe"], tmp_path)
    data = Path(changed).read_bytes()
    # The note header: namesz 4, descsz 20, type NT_GNU_BUILD_ID (3), "GNU\0", then the id.
    offset = data.index(b"\x04\x00\x00\x00\x14\x00\x00\x00\x03\x00\x00\x00GNU\x00") + 16
    patch(changed, offset, bytes([data[offset] ^ 0xFF]))
    with pytest.raises(VerificationError, match="build-id changed"):
        static_check(built["probe"], changed, packed=False)


def test_static_check_packed_only_compares_identity(built: dict[str, str], go_arm64: str) -> None:
    static_check(built["probe"], built["libprobe.so"], packed=True)  # different content, same machine
    with pytest.raises(VerificationError, match="machine changed: EM_X86_64→EM_AARCH64"):
        static_check(built["probe"], go_arm64, packed=True)


def test_static_check_rejects_non_elf(built: dict[str, str], tmp_path: Path) -> None:
    text = tmp_path / "text"
    text.write_text("#!/bin/sh\necho hi\n")
    with pytest.raises(NotELFError, match="not an ELF file"):
        static_check(str(text), built["probe"], packed=False)
    with pytest.raises(VerificationError, match="not an ELF file"):
        static_check(built["probe"], str(text), packed=False)


def test_static_check_wraps_parse_errors(built: dict[str, str], tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.write_bytes(Path(built["probe"]).read_bytes()[:40])  # header cut short
    with pytest.raises(MalformedELFError, match="cannot parse as ELF") as caught:
        static_check(str(broken), built["probe"], packed=False)
    assert caught.value.__cause__ is not None
    with pytest.raises(VerificationError, match="cannot parse as ELF"):
        static_check(built["probe"], str(broken), packed=False)


# --- behaviour ----------------------------------------------------------------------------------------------


def test_same_binary_same_behaviour_with_sane_timings(built: dict[str, str]) -> None:
    result = verify(built["probe"], built["stripped/probe"], runs=3)
    assert result.ran and result.same_behaviour is True
    assert result.reason == "same exit code (0), stdout and stderr"
    assert result.args == ("--version",)
    for timing in (result.original, result.final):
        assert isinstance(timing, Timing)
        assert 0 < timing.min_ms <= timing.median_ms <= timing.max_ms
        assert 0 < timing.peak_rss_kib < 64 * 1024
    assert result.added_ms is not None and result.startup is not None and result.startup.pairs == 3
    assert result.startup.low_ms is not None and result.startup.high_ms is not None
    assert result.startup.low_ms <= result.added_ms <= result.startup.high_ms
    assert not result.original_varies and result.warnings == ()
    report = result.to_dict()
    assert list(report) == [
        "ran",
        "args",
        "same_behaviour",
        "original_varies",
        "reason",
        "warnings",
        "startup_ms",
        "peak_rss_kib",
    ]
    assert report["args"] == ["--version"] and report["original_varies"] is False and report["warnings"] == []
    assert set(report["startup_ms"]) == {"original", "final", "added", "added_low", "added_high"}
    assert set(report["peak_rss_kib"]) == {"original", "final"}
    require_same(result)  # does not raise


def test_behaviour_that_depends_on_the_file_is_caught(built: dict[str, str]) -> None:
    result = verify(built["probe"], built["stripped/probe"], args=("selfsize",), runs=1)
    size, stripped_size = os.path.getsize(built["probe"]), os.path.getsize(built["stripped/probe"])
    assert result.ran and result.same_behaviour is False
    assert result.reason == f"stdout line 2: 'size {size}'→'size {stripped_size}'"
    assert result.original is None and result.final is None
    with pytest.raises(VerificationError, match="does not behave like the original") as caught:
        require_same(result, path="some/binary")
    assert caught.value.exit_code == 3
    assert str(caught.value).startswith("some/binary: ")
    assert "(run with selfsize)" in str(caught.value)


def test_exit_code_difference_is_named(built: dict[str, str]) -> None:
    result = verify(built["probe"], built["stripped/probe"], args=("exit-if-stripped",))
    assert result.same_behaviour is False
    assert result.reason == "exit code 0→1"


def test_both_hanging_counts_as_the_same(built: dict[str, str]) -> None:
    recorder = Recorder()
    result = verify(built["probe"], built["stripped/probe"], args=("hang",), timeout=1.0, runner=recorder)
    assert result.ran and result.same_behaviour is True
    assert result.reason == "both timed out after 1 s; counted as the same; startup not measured"
    assert result.warnings and "only that was compared" in result.warnings[0]
    assert result.original is None and result.final is None  # nothing to time
    assert [done.timed_out for _, _, done in recorder.calls] == [True, True, True]  # the original twice


def test_one_hanging_is_a_difference(built: dict[str, str]) -> None:
    result = verify(built["probe"], built["stripped/probe"], args=("hang-if-stripped",), timeout=1.0)
    assert result.same_behaviour is False
    assert result.reason == "the result timed out after 1 s; the original exited with 0"


def test_timeout_leaves_no_orphan(built: dict[str, str]) -> None:
    before = set(os.listdir("/proc"))
    verify(built["probe"], built["probe"], args=("hang",), timeout=1.0)
    for name in set(os.listdir("/proc")) - before:
        try:
            cmdline = Path(f"/proc/{name}/cmdline").read_bytes()
        except OSError:
            continue
        assert b"probe" not in cmdline, f"process {name} outlived the run: {cmdline!r}"


def test_argv0_and_usage_are_the_same_on_both_sides(built: dict[str, str]) -> None:
    recorder = Recorder()
    # The stripped copy lives under the same name elsewhere; a copy under another name must not matter.
    renamed = copy_of(built["stripped/probe"], Path(built["stripped/probe"]).parent, "probe.slim")
    result = verify(built["probe"], renamed, args=("argv0",), measure=False, runner=recorder)
    assert result.same_behaviour is True, result.reason
    assert result.reason == "same exit code (2), stdout and stderr"
    assert result.warnings == (
        "the original exits with 2 (args: argv0): only that error path was exercised; choose --verify-args"
        " or --verify-cmd that make it succeed",
    )
    outputs = {(done.stdout, done.stderr) for _, _, done in recorder.calls}
    assert outputs == {(b"./probe\n", b"usage: ./probe\n")}


def test_stdin_is_closed(built: dict[str, str]) -> None:
    recorder = Recorder()
    verify(built["probe"], built["probe"], args=("stdin",), measure=False, runner=recorder)
    assert [done.stdout for _, _, done in recorder.calls] == [b"read 0\n"] * 3


def test_output_flood_is_capped(built: dict[str, str]) -> None:
    recorder = Recorder()
    result = verify(built["probe"], built["probe"], args=("flood",), measure=False, runner=recorder)
    assert result.same_behaviour is True
    assert "output past 1,048,576 bytes not compared" in result.reason
    for _, _, done in recorder.calls:
        assert len(done.stdout) == 1 << 20 and done.stdout_truncated


def test_minimal_environment_same_folder_and_extras(built: dict[str, str]) -> None:
    recorder = Recorder()
    result = verify(
        built["probe"],
        built["stripped/probe"],
        args=("where",),
        env={"EXTRA": "1"},
        measure=False,
        runner=recorder,
    )
    assert result.same_behaviour is True, result.reason  # same cwd and HOME on both sides
    lines = recorder.calls[0][2].stdout.decode().splitlines()
    cwd = lines[0].removeprefix("cwd ")
    assert lines[1] == f"home {cwd}"
    assert sorted(lines[2:]) == sorted(
        ["env EXTRA=1", f"env HOME={cwd}", "env LANG=C", f"env PATH={os.environ.get('PATH', os.defpath)}"]
    )
    assert not os.path.exists(cwd)  # the twin folders are removed afterwards
    argv, options, _ = recorder.calls[0]
    assert argv == ["./probe", "where"] and options["cwd"] == cwd
    assert "shell" not in options


def test_no_args_means_no_args(built: dict[str, str]) -> None:
    recorder = Recorder()
    result = verify(built["probe"], built["probe"], args=(), measure=False, runner=recorder)
    assert result.args == () and result.same_behaviour is True
    assert recorder.calls[0][0] == ["./probe"]


def test_verify_cmd_is_run_for_both(built: dict[str, str], tmp_path: Path) -> None:
    script = tmp_path / "check.sh"
    script.write_text('#!/bin/sh\nexec "$1" selfsize\n')
    script.chmod(0o755)
    differs = verify(built["probe"], built["stripped/probe"], verify_cmd=str(script), runs=1)
    assert differs.same_behaviour is False
    assert differs.reason.startswith("check.sh: stdout line 2: 'size ")
    same = verify(built["probe"], built["probe"], verify_cmd=str(script), runs=1)
    assert same.same_behaviour is True and same.reason.startswith("check.sh: same exit code (0)")
    assert same.original is not None  # startup is still timed, with args


def test_measure_startup_is_sane(built: dict[str, str]) -> None:
    timing = measure_startup(built["probe"], runs=3)
    assert 0 < timing.min_ms <= timing.median_ms <= timing.max_ms
    assert timing.peak_rss_kib > 0
    assert set(timing.to_dict()) == {"median_ms", "min_ms", "max_ms", "peak_rss_kib"}


def test_object_files_and_libraries_are_not_run(built: dict[str, str]) -> None:
    obj = verify(built["probe.o"], built["probe.o"])
    assert not obj.ran and obj.same_behaviour is None and "relocatable object" in obj.reason
    lib = verify(built["libprobe.so"], built["libprobe.so"])
    assert not lib.ran and "shared library without an entry point or interpreter" in lib.reason
    assert lib.to_dict()["startup_ms"] is None and lib.to_dict()["peak_rss_kib"] is None
    require_same(lib)  # not ran is not a failure


@pytest.fixture(scope="module")
def uses_lib(built: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> str:
    """A program linked against libprobe.so, which the loader only finds with LD_LIBRARY_PATH."""
    gcc = require_tool("gcc")
    folder = tmp_path_factory.mktemp("uses-lib")
    (folder / "main.c").write_text(
        "#include <stdio.h>\nint probe_library_function(int);\n"
        'int main(void) { printf("uses-lib %d\\n", probe_library_function(21)); return 0; }\n'
    )
    program = str(folder / "uses-lib")
    library_dir = str(Path(built["libprobe.so"]).parent)
    subprocess.run(
        [gcc, "-g", "-o", program, str(folder / "main.c"), "-L", library_dir, "-lprobe"],
        check=True,
        timeout=120,
    )
    return program


def test_missing_libraries_mean_not_run_unless_given(built: dict[str, str], uses_lib: str) -> None:
    alone = verify(uses_lib, uses_lib, args=())
    assert not alone.ran and alone.same_behaviour is None
    assert "cannot load its libraries here" in alone.reason and "libprobe.so" in alone.reason
    assert alone.reason.endswith("pass --verify-env LD_LIBRARY_PATH=DIR")
    library_dir = str(Path(built["libprobe.so"]).parent)
    given = verify(uses_lib, uses_lib, args=(), env={"LD_LIBRARY_PATH": library_dir}, runs=1)
    assert given.ran and given.same_behaviour is True, given.reason


def test_verify_env_from_the_command_line_and_the_environment(
    built: dict[str, str], uses_lib: str, tmp_path: Path
) -> None:
    library_dir = str(Path(built["libprobe.so"]).parent)
    common = ("--verify-args", "", "--verify-runs", "2", "--json")
    alone = run_binslim(uses_lib, "-o", str(tmp_path / "alone"), *common)
    assert alone.returncode == 0
    assert json.loads(alone.stdout)["results"][0]["verify"]["ran"] is False
    given = run_binslim(
        uses_lib, "-o", str(tmp_path / "given"), *common, "--verify-env", f"LD_LIBRARY_PATH={library_dir}"
    )
    assert given.returncode == 0, given.stderr
    verified = json.loads(given.stdout)["results"][0]["verify"]
    assert verified["ran"] is True and verified["same_behaviour"] is True
    env = {**clean_env(), "BINSLIM_VERIFY_ENV": f"EXTRA=1 LD_LIBRARY_PATH={library_dir}"}
    from_env = run_binslim(uses_lib, "-o", str(tmp_path / "from-env"), *common, env=env)
    assert from_env.returncode == 0, from_env.stderr
    assert json.loads(from_env.stdout)["results"][0]["verify"]["same_behaviour"] is True
    bad = run_binslim(uses_lib, "-o", str(tmp_path / "bad"), "--verify-env", "LD_LIBRARY_PATH")
    assert bad.returncode == 2 and "'LD_LIBRARY_PATH' is not NAME=VALUE" in bad.stderr


def test_verify_result_to_dict_without_timings() -> None:
    result = VerifyResult(ran=True, args=("-h",), same_behaviour=False, reason="exit code 0→1")
    assert result.added_ms is None
    assert result.to_dict() == {
        "ran": True,
        "args": ["-h"],
        "same_behaviour": False,
        "original_varies": False,
        "reason": "exit code 0→1",
        "warnings": [],
        "startup_ms": None,
        "peak_rss_kib": None,
    }


# --- foreign architectures --------------------------------------------------------------------------------


def test_qemu_for_native_and_foreign(built: dict[str, str], go_arm64: str) -> None:
    if os.uname().machine != "x86_64":
        pytest.skip("the native probe is x86_64")
    assert qemu_for(built["probe"]) is None
    assert qemu_for(go_arm64) == "qemu-aarch64"


def test_foreign_binary_runs_under_qemu(go_arm64: str) -> None:
    require_tool("qemu-aarch64")
    recorder = Recorder()
    result = verify(go_arm64, go_arm64, args=("a", "b"), runs=1, runner=recorder)
    assert result.ran and result.same_behaviour is True, result.reason
    argv, _, done = recorder.calls[0]
    assert os.path.basename(argv[0]) == "qemu-aarch64" and argv[1:] == ["./hello", "a", "b"]
    assert done.stdout == b"hello from go 3\n"
    assert result.original is not None and result.original.peak_rss_kib > 0


def test_foreign_binary_without_qemu_is_not_run(go_arm64: str, tmp_path: Path) -> None:
    result = verify(go_arm64, go_arm64, env={"PATH": str(tmp_path)})
    assert not result.ran and result.same_behaviour is None
    assert result.reason == "no qemu-aarch64 on PATH (install Debian's qemu-user)"
    with pytest.raises(ToolNotFoundError, match="no qemu-aarch64 on PATH"):
        measure_startup(go_arm64, env={"PATH": str(tmp_path)})


def test_i386_runs_natively_or_under_qemu(tmp_path: Path) -> None:
    """A 93-byte static i386 program that exits with 42: native when the kernel allows, else qemu-i386."""
    if os.uname().machine != "x86_64":
        pytest.skip("the IA-32 check is for x86_64 hosts")
    tiny = tmp_path / "tiny"
    tiny.write_bytes(tiny_i386_program())
    tiny.chmod(0o755)
    needed = qemu_for(str(tiny))
    assert needed in (None, "qemu-i386")
    if needed is not None:
        require_tool(needed)
    result = verify(str(tiny), str(tiny), args=(), runs=1)
    assert result.ran and result.same_behaviour is True
    assert result.reason == "same exit code (42), stdout and stderr"


# --- startup statistics -----------------------------------------------------------------------------------


def fake_completed(seconds: float, returncode: int = 0) -> Completed:
    return Completed(
        argv=("x",),
        returncode=returncode,
        stdout=b"",
        stderr=b"",
        seconds=seconds,
        timed_out=False,
        peak_rss_kib=7,
    )


def test_measure_alternates_the_order_of_each_pair() -> None:
    order: list[tuple[int, bool]] = []
    checked: list[tuple[int, str]] = []

    def run_once(side: int, measure_rss: bool) -> Completed:
        order.append((side, measure_rss))
        return fake_completed(0.010 if side == 0 else 0.012 + 0.0001 * len(order))

    timings, added = measure(
        run_once, [0, 1], runs=4, check=lambda side, label, _: checked.append((side, label))
    )
    timed = [side for side, rss in order[2:] if not rss]
    assert order[:2] == [(0, False), (1, False)]  # the warm-ups
    assert timed == [0, 1, 1, 0, 0, 1, 1, 0]  # ABBA
    assert [side for side, rss in order if rss] == [0, 1, 1, 0, 0, 1, 1, 0]
    assert len(checked) == len(order) == 2 + 4 * 4  # every run is checked
    assert ("timed run 3", "memory run 4") == (checked[10][1], checked[-1][1])
    assert added is not None and added.pairs == 4
    assert timings[0].median_ms == pytest.approx(10.0) and timings[0].peak_rss_kib == 7


def test_paired_difference_interval_and_text() -> None:
    added = paired_difference([10.0, 11.0, 10.5, 10.2], [85.0, 86.5, 85.1, 85.6])
    differences = [75.0, 75.5, 74.6, 75.4]
    mean = sum(differences) / 4
    half = 3.182 * statistics.stdev(differences) / 2  # t(0.975, 3) = 3.182
    assert added.added_ms == pytest.approx(mean)
    assert (added.low_ms, added.high_ms) == (pytest.approx(mean - half), pytest.approx(mean + half))
    assert added.describe() == f"+{mean:.1f} ms ({mean - half:.1f} to {mean + half:.1f})"
    assert not added.within_noise

    noisy = paired_difference([10.0, 12.0, 10.0, 12.0], [11.0, 11.0, 11.5, 11.0])
    assert noisy.within_noise and noisy.describe().endswith(", within noise")
    single = paired_difference([10.0], [12.5])
    assert (single.low_ms, single.high_ms) == (
        None,
        None,
    ) and single.describe() == "+2.5 ms (one pair: no interval)"


def test_t_quantiles() -> None:
    assert t975(1) == 12.706 and t975(8) == 2.306 and t975(30) == 2.042
    assert t975(31) == pytest.approx(2.040, abs=0.001) and t975(120) == pytest.approx(1.980, abs=0.001)
    assert t975(100_000) == pytest.approx(1.960, abs=0.001)
    with pytest.raises(ValueError):
        t975(0)


def test_verifier_modules_import_only_those_below_them() -> None:
    """static < launch < compare < measure < verifier, and the runner below them all."""
    import ast

    root = Path(__file__).resolve().parent.parent / "binslim"
    order = ["runner", "verification.static", "verification.launch", "verification.compare"]
    order += ["verification.measure", "verifier"]
    files = {name: root / (name.replace(".", "/") + ".py") for name in order}
    for rank, name in enumerate(order):
        package = name.rsplit(".", 1)[0] if "." in name else ""
        for node in ast.walk(ast.parse(files[name].read_text())):
            if not isinstance(node, ast.ImportFrom) or not node.level:
                continue
            base = package.split(".")[: max(0, len(package.split(".")) - (node.level - 1))] if package else []
            target = ".".join([*filter(None, base), *(node.module or "").split(".")]).strip(".")
            for imported in [target, *(f"{target}.{alias.name}".strip(".") for alias in node.names)]:
                if imported in order:
                    assert order.index(imported) < rank, f"{name} imports {imported}, which is above it"
