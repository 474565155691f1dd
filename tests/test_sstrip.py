"""--strip-section-headers (the "sections" level): sizes against sstrip's rule, running every output (the
cross-arch Go builds under qemu), refusals, the overlay, the report's warnings and Go build information.

ELFkickers' sstrip is not packaged for Debian bookworm, so the size oracle is sstrip's documented rule,
ported from its source (sstrip.c 2.1): the file ends where the ELF header, the program header table and
the file bytes of every non-PT_NULL segment end; with -z, trailing zero bytes go too.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from binslim import UnsupportedError, slim, strip
from binslim.goinfo import find_go, read_build_info
from binslim.sstrip import TOOLS_WARNING
from testdata.build import Fixture, fixture_names, overlay_payload
from tests.helpers import require_tool, run_as, run_fixture, run_with_library, stage_fixture

TIMEOUT = 120
EXECUTABLES = fixture_names(kind="exec")
GO = fixture_names(language="go")


def sstrip_size(path: str | os.PathLike[str], *, zeroes: bool = False) -> int:
    """The size ELFkickers' sstrip (``-z`` with ``zeroes``) leaves ``path`` at."""
    data = Path(path).read_bytes()
    is64, order = data[4] == 2, "<" if data[5] == 1 else ">"
    (phoff,) = struct.unpack_from(order + ("Q" if is64 else "I"), data, 32 if is64 else 28)
    ehsize, phentsize, phnum = struct.unpack_from(order + "HHH", data, 52 if is64 else 40)
    size = max(phoff + phnum * phentsize, ehsize)
    for index in range(phnum):
        entry = phoff + index * phentsize
        if is64:
            p_type, _, p_offset, _, _, p_filesz = struct.unpack_from(order + "IIQQQQ", data, entry)
        else:
            p_type, p_offset, _, _, p_filesz = struct.unpack_from(order + "IIIII", data, entry)
        if p_type != 0:
            size = max(size, p_offset + p_filesz)
    if zeroes:
        size = len(data[:size].rstrip(b"\0"))
    return int(max(size, phoff + phnum * phentsize))


@pytest.mark.parametrize("name", EXECUTABLES)
def test_runs_and_is_no_bigger_than_sstrip(fixtures: dict[str, Fixture], name: str, tmp_path: Path) -> None:
    fixture = fixtures[name]
    out = tmp_path / "out"
    result = strip(fixture.path, out, level="sections")
    size = out.stat().st_size
    assert result.stripped_size == size and result.level == "sections"
    # sstrip drops an overlay, which binslim keeps: compare the ELF images. Even sstrip -z, which also cuts
    # the zero bytes that end the last segment, is no smaller.
    assert size - result.overlay <= sstrip_size(fixture.path, zeroes=True)
    assert sum(r.size for r in result.removed) == result.saved
    with open(out, "rb") as handle:
        elf = ELFFile(handle)
        assert (elf["e_shoff"], elf["e_shnum"], elf["e_shstrndx"]) == (0, 0, 0)
        segments = elf.num_segments()
    with open(fixture.path, "rb") as handle:
        assert ELFFile(handle).num_segments() == segments
    for args in (fixture.run_args, fixture.fail_args):
        if args:
            assert run_as(fixtures, name, out, tmp_path / "run", args) == run_fixture(fixture, args=args)


@pytest.mark.parametrize("name", EXECUTABLES)
def test_readelf_reads_the_result(fixtures: dict[str, Fixture], name: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    strip(fixtures[name].path, out, level="sections")
    done = subprocess.run(
        [require_tool("readelf"), "-h", "-l", "-d", "-n", "-W", str(out)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert done.returncode == 0 and not done.stderr, done.stderr
    assert (
        "There are no sections in this file." in done.stdout
        or "Number of section headers:         0" in done.stdout
    )


@pytest.mark.parametrize("name", EXECUTABLES)
def test_passes_verification(fixtures: dict[str, Fixture], name: str, tmp_path: Path) -> None:
    """Static checks and running, as for any output; a Go binary's report says its build info still reads."""
    fixture = fixtures[name]
    folder = tmp_path / "in"
    source = stage_fixture(fixtures, name, folder)
    out = folder / "slim"
    result = slim(
        source,
        out,
        level="sections",
        verify_runs=1,
        measure_startup=False,
        verify_args=fixture.run_args,
        verify_env={**fixture.env, "LD_LIBRARY_PATH": str(folder)},
    )
    assert result.status == "ok" and result.verify is not None and result.verify.same_behaviour
    assert TOOLS_WARNING in result.notes
    if fixture.language == "go" and find_go() is not None:
        assert any(n.startswith("Go build information still readable") for n in result.notes), result.notes


@pytest.mark.parametrize("name", ["greet-obj", "comdat-obj"])
def test_objects_are_refused(fixtures: dict[str, Fixture], name: str, tmp_path: Path) -> None:
    with pytest.raises(UnsupportedError, match="relocatable object: the linker needs them"):
        strip(fixtures[name].path, tmp_path / "out", level="sections", force=True)
    assert os.listdir(tmp_path) == []


def test_shared_libraries_need_force(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    library = fixtures["libgreet"].path
    with pytest.raises(UnsupportedError, match="shared library.*--force"):
        strip(library, tmp_path / "refused.so", level="sections")
    out = tmp_path / "libgreet.so"
    result = strip(library, out, level="sections", force=True)
    assert any("static linker" in m for m in result.messages)
    assert out.stat().st_size <= sstrip_size(library, zeroes=True)
    returncode, stdout, _ = run_with_library(fixtures, "libgreet", out, tmp_path / "run")
    assert returncode == 0 and fixtures["libgreet"].expected_stdout in stdout


def test_static_pie_is_an_executable_not_a_library(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    """ET_DYN without an interpreter, but DF_1_PIE: no --force needed."""
    result = strip(fixtures["hello-c-static-pie"].path, tmp_path / "out", level="sections")
    assert not any("static linker" in m for m in result.messages)


def test_overlay_is_kept_and_the_level_called_pointless(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    fixture = fixtures["hello-c-overlay"]
    out = tmp_path / "out"
    result = strip(fixture.path, out, level="sections")
    assert out.read_bytes().endswith(overlay_payload())
    assert result.overlay == len(overlay_payload())
    assert any("pointless" in m for m in result.messages)


def test_already_headerless_is_left_identical(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    once, twice = tmp_path / "once", tmp_path / "twice"
    strip(fixtures["hello-c-pie"].path, once, level="sections")
    result = strip(once, twice, level="sections")
    assert not result.changed and once.read_bytes() == twice.read_bytes()


def test_keep_section_cannot_be_combined(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    with pytest.raises(UnsupportedError, match="--keep-section"):
        strip(fixtures["hello-c-pie"].path, tmp_path / "out", level="sections", keep_sections=[".comment"])


@pytest.mark.parametrize("name", GO)
def test_go_build_information_survives(fixtures: dict[str, Fixture], name: str, tmp_path: Path) -> None:
    go = find_go()
    if go is None:
        pytest.skip("go not found: install golang-1.23-go from bookworm-backports")
    out = tmp_path / name
    strip(fixtures[name].path, out, level="sections")
    before = read_build_info(fixtures[name].path, go=go)
    after = read_build_info(str(out), go=go)
    assert before.readable and after.readable, after.reason
    assert (after.go_version, after.main_path) == (before.go_version, before.main_path)


def test_report_says_so(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    """The text report warns about tools, and for a Go binary says whether its build information reads."""
    out = tmp_path / "hello-go"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "binslim",
            fixtures["hello-go"].path,
            "-o",
            str(out),
            "--strip-section-headers",
            "--no-verify",
        ],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "gdb, objdump, patchelf, libbacktrace" in done.stdout
    if find_go() is not None:
        assert "Go build information still readable without section headers" in done.stdout
    refused = subprocess.run(
        [
            sys.executable,
            "-m",
            "binslim",
            fixtures["libgreet"].path,
            "-o",
            str(tmp_path / "lib.so"),
            "--strip-section-headers",
            "--no-verify",
        ],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert refused.returncode == 1 and "--force" in refused.stderr
    assert not (tmp_path / "lib.so").exists()


def test_upx_packs_the_result(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    require_tool("upx")
    out = tmp_path / "hello"
    result = slim(fixtures["hello-c-pie"].path, out, level="sections", upx=True, verify_runs=1)
    assert result.packed_size is not None and result.packed_size < result.stripped_size
    assert run_as(fixtures, "hello-c-pie", out, tmp_path / "run", ("--version",))[0] == 0
