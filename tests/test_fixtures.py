"""The fixture corpus itself: every fixture builds, is the ELF file it claims to be, and behaves."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile

from testdata.build import Fixture, absent_fixtures, build_all
from tests import helpers
from tests.helpers import (
    ALL_FIXTURE_NAMES,
    CROSS_FIXTURE_NAMES,
    EXEC_FIXTURE_NAMES,
    FIXTURE_DIR,
    NATIVE_EXEC_FIXTURE_NAMES,
    OBJECT_FIXTURE_NAMES,
    OPTIONAL_FIXTURE_NAMES,
    SHARED_FIXTURE_NAMES,
    overlay_payload,
    require_tool,
    run_fixture,
    run_linked_object,
    run_with_library,
    segment_bytes,
    stage_fixture,
)

# GOARCH -> (e_machine, ELF class, little-endian)
ARCH_ELF = {
    "amd64": ("EM_X86_64", 64, True),
    "386": ("EM_386", 32, True),
    "arm64": ("EM_AARCH64", 64, True),
    "arm": ("EM_ARM", 32, True),
    "s390x": ("EM_S390", 64, False),
    "ppc64": ("EM_PPC64", 64, False),
    "mips": ("EM_MIPS", 32, False),
    "riscv64": ("EM_RISCV", 64, True),
}
KIND_ELF_TYPES = {"exec": {"ET_EXEC", "ET_DYN"}, "shared": {"ET_DYN"}, "object": {"ET_REL"}}
OWN_PROGRAMS = ("hello-c-pie", "hello-c-musl", "hello-cxx", "hello-rust", "hello-go", "hello-go-s390x")


def _elf_summary(path: str) -> dict[str, object]:
    with open(path, "rb") as stream:
        elf = ELFFile(stream)
        segment_types = [segment["p_type"] for segment in elf.iter_segments()]
        section_names = [section.name for section in elf.iter_sections()]
        dynamic = elf.get_section_by_name(".dynamic")
        soname = None
        if isinstance(dynamic, DynamicSection):
            for tag in dynamic.iter_tags():
                if tag.entry.d_tag == "DT_SONAME":
                    soname = tag.soname
        return {
            "machine": elf["e_machine"],
            "class": elf.elfclass,
            "little_endian": elf.little_endian,
            "type": elf["e_type"],
            "segment_types": segment_types,
            "section_names": section_names,
            "group_count": sum(1 for section in elf.iter_sections() if section["sh_type"] == "SHT_GROUP"),
            "soname": soname,
        }


def test_every_required_fixture_is_built(fixtures: dict[str, Fixture]) -> None:
    missing = [name for name in ALL_FIXTURE_NAMES if name not in fixtures]
    assert not missing
    for fixture in fixtures.values():
        assert os.path.isabs(fixture.path)
        assert os.path.isfile(fixture.path), fixture.path
        assert os.path.getsize(fixture.path) > 0


def test_names_are_partitioned_by_kind() -> None:
    by_kind = set(EXEC_FIXTURE_NAMES) | set(SHARED_FIXTURE_NAMES) | set(OBJECT_FIXTURE_NAMES)
    assert by_kind == set(ALL_FIXTURE_NAMES)
    assert set(NATIVE_EXEC_FIXTURE_NAMES) | set(CROSS_FIXTURE_NAMES) == set(EXEC_FIXTURE_NAMES)
    assert not set(OPTIONAL_FIXTURE_NAMES) & set(ALL_FIXTURE_NAMES)


def test_second_build_reuses_the_cache(fixtures: dict[str, Fixture]) -> None:
    mtimes = {name: os.stat(fixture.path).st_mtime_ns for name, fixture in fixtures.items()}
    started = time.perf_counter()
    rebuilt = build_all(FIXTURE_DIR)
    seconds = time.perf_counter() - started
    assert rebuilt == fixtures
    assert {name: os.stat(fixture.path).st_mtime_ns for name, fixture in rebuilt.items()} == mtimes
    assert seconds < 10


def test_damaged_fixture_is_rebuilt(tmp_path: Path, fixtures: dict[str, Fixture]) -> None:
    """A test that writes into a fixture by mistake must not poison later runs."""
    del fixtures  # built first, so the copy below starts from a warm cache
    out_dir = tmp_path / "fixtures"
    shutil.copytree(FIXTURE_DIR, out_dir, ignore=shutil.ignore_patterns(".go", ".lock"))
    damaged = out_dir / "hello-c-pie"
    original = damaged.read_bytes()
    damaged.write_bytes(b"\0" * 64)
    rebuilt = build_all(out_dir, jobs=1)
    assert Path(rebuilt["hello-c-pie"].path).read_bytes() != b"\0" * 64
    assert len(Path(rebuilt["hello-c-pie"].path).read_bytes()) == len(original)


@pytest.mark.parametrize("name", ALL_FIXTURE_NAMES)
def test_fixture_is_the_elf_it_claims(fixtures: dict[str, Fixture], name: str) -> None:
    fixture = fixtures[name]
    summary = _elf_summary(fixture.path)
    machine, elf_class, little_endian = ARCH_ELF[fixture.arch]
    assert summary["machine"] == machine
    assert summary["class"] == elf_class
    assert summary["little_endian"] is little_endian
    assert summary["type"] in KIND_ELF_TYPES[fixture.kind]
    assert ".debug_info" in summary["section_names"] or ".zdebug_info" in summary["section_names"]
    if fixture.kind == "exec":
        assert ("PT_INTERP" not in summary["segment_types"]) is fixture.static


def test_pie_and_non_pie_differ_as_named(fixtures: dict[str, Fixture]) -> None:
    assert _elf_summary(fixtures["hello-c-pie"].path)["type"] == "ET_DYN"
    assert _elf_summary(fixtures["hello-c-nopie"].path)["type"] == "ET_EXEC"
    assert _elf_summary(fixtures["hello-c-static"].path)["type"] == "ET_EXEC"
    static_pie = _elf_summary(fixtures["hello-c-static-pie"].path)
    assert static_pie["type"] == "ET_DYN"
    assert "PT_INTERP" not in static_pie["segment_types"]


@pytest.mark.parametrize("name", EXEC_FIXTURE_NAMES)
def test_exec_fixture_runs(fixtures: dict[str, Fixture], name: str) -> None:
    fixture = fixtures[name]
    returncode, stdout, stderr = run_fixture(fixture)
    assert returncode == 0, stderr
    assert fixture.expected_stdout in stdout


@pytest.mark.parametrize("name", [name for name in EXEC_FIXTURE_NAMES if not name.startswith("hello-c-")])
def test_exec_fixture_fails_as_documented(fixtures: dict[str, Fixture], name: str) -> None:
    fixture = fixtures[name]
    assert fixture.fail_args
    returncode, _, stderr = run_fixture(fixture, args=fixture.fail_args)
    assert returncode == fixture.fail_returncode, stderr


@pytest.mark.parametrize("name", [name for name in EXEC_FIXTURE_NAMES if name.startswith("hello-c-")])
def test_c_hello_exit_code_is_comparable(fixtures: dict[str, Fixture], name: str) -> None:
    returncode, stdout, stderr = run_fixture(fixtures[name], args=fixtures[name].fail_args)
    assert (returncode, stdout, stderr) == (3, "", "exiting with 3\n")


@pytest.mark.parametrize("name", OWN_PROGRAMS)
def test_program_echoes_arguments(fixtures: dict[str, Fixture], name: str) -> None:
    returncode, stdout, _ = run_fixture(fixtures[name], args=["two words", "ünïcode"])
    assert returncode == 0
    assert stdout.splitlines()[1:] == ["argv[1] = two words", "argv[2] = ünïcode"]


@pytest.mark.parametrize("name", CROSS_FIXTURE_NAMES)
def test_cross_fixture_names_its_runner(fixtures: dict[str, Fixture], name: str) -> None:
    fixture = fixtures[name]
    if fixture.arch == "386":
        assert fixture.qemu in (None, "qemu-i386")
    else:
        assert fixture.qemu is not None and fixture.qemu.startswith("qemu-")
        require_tool(fixture.qemu)


def test_run_fixture_runs_a_copy(tmp_path: Path, fixtures: dict[str, Fixture]) -> None:
    copy = stage_fixture(fixtures, "hello-go-arm64", tmp_path)
    assert run_fixture(fixtures["hello-go-arm64"], path=copy)[1] == "hello-go 1.0.0\n"


@pytest.mark.parametrize("name", SHARED_FIXTURE_NAMES)
def test_shared_library_serves_its_program(tmp_path: Path, fixtures: dict[str, Fixture], name: str) -> None:
    library = fixtures[name]
    returncode, stdout, stderr = run_with_library(fixtures, name, library.path, tmp_path)
    assert returncode == 0, stderr
    assert library.expected_stdout in stdout
    assert _elf_summary(library.path)["soname"] == os.path.basename(library.path)
    assert "PT_TLS" in _elf_summary(library.path)["segment_types"]


def test_program_loads_the_library_beside_it(tmp_path: Path, fixtures: dict[str, Fixture]) -> None:
    program = tmp_path / "usegreet"
    shutil.copy2(fixtures["usegreet"].path, program)
    returncode, _, stderr = run_fixture(fixtures["usegreet"], path=program, env={"LD_LIBRARY_PATH": ""})
    assert returncode != 0
    assert "libgreet.so" in stderr


@pytest.mark.parametrize("name", OBJECT_FIXTURE_NAMES)
def test_object_links_into_a_program_that_runs(
    tmp_path: Path, fixtures: dict[str, Fixture], name: str
) -> None:
    fixture = fixtures[name]
    copy = stage_fixture(fixtures, name, tmp_path)
    returncode, stdout, stderr = run_linked_object(fixture, copy, tmp_path)
    assert returncode == 0, stderr
    assert fixture.expected_stdout in stdout
    if fixture.fail_args:
        assert (
            run_linked_object(fixture, copy, tmp_path, args=fixture.fail_args)[0] == fixture.fail_returncode
        )


def test_comdat_object_has_section_groups(fixtures: dict[str, Fixture]) -> None:
    group_count = _elf_summary(fixtures["comdat-obj"].path)["group_count"]
    assert isinstance(group_count, int) and group_count >= 5
    # The companion main instantiates the same templates, so linking has to merge groups.
    assert _elf_summary(fixtures["comdat-obj"].link_main or "")["group_count"] >= 5


def test_overlay_is_the_pie_image_plus_payload(fixtures: dict[str, Fixture]) -> None:
    image = Path(fixtures["hello-c-pie"].path).read_bytes()
    overlaid = Path(fixtures["hello-c-overlay"].path).read_bytes()
    assert overlaid == image + overlay_payload()
    assert len(overlay_payload()) >= 4096
    assert segment_bytes(fixtures["hello-c-overlay"].path) == segment_bytes(fixtures["hello-c-pie"].path)


def test_segment_bytes_reads_each_program_header(fixtures: dict[str, Fixture]) -> None:
    path = fixtures["hello-c-static-pie"].path
    all_segments = segment_bytes(path)
    loads = segment_bytes(path, types={"PT_LOAD"})
    with open(path, "rb") as stream:
        elf = ELFFile(stream)
        assert len(all_segments) == elf.num_segments()
        assert [len(data) for data in loads] == [
            segment["p_filesz"] for segment in elf.iter_segments() if segment["p_type"] == "PT_LOAD"
        ]
    assert all(loads)


@pytest.mark.parametrize("name", OPTIONAL_FIXTURE_NAMES)
def test_optional_fixture_runs_when_built(fixtures: dict[str, Fixture], name: str) -> None:
    if name not in fixtures:
        pytest.skip(f"{name} is absent: {absent_fixtures(FIXTURE_DIR).get(name, 'unknown reason')}")
    fixture = fixtures[name]
    returncode, stdout, stderr = run_fixture(fixture)
    assert returncode == 0, stderr
    assert fixture.expected_stdout in stdout


def test_require_tool_finds_a_tool() -> None:
    assert require_tool("sh") == shutil.which("sh")


@pytest.mark.parametrize(
    ("in_ci", "outcome"), [(False, pytest.skip.Exception), (True, pytest.fail.Exception)]
)
def test_require_tool_names_the_package(monkeypatch: pytest.MonkeyPatch, in_ci: bool, outcome: type) -> None:
    monkeypatch.setattr(helpers, "IN_CI", in_ci)
    with pytest.raises(outcome, match="install Debian's qemu-user"):
        require_tool("qemu-binslim-nonexistent")
