"""--keep-debug: the companion file against real clients (gdb, readelf, eu-readelf, eu-elflint) and against
objcopy --only-keep-debug; the .gnu_debuglink section; and the promise that the stripped binary grows only
by that section."""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from binslim import UnsupportedError, slim, strip
from binslim.debuginfo import DEBUGLINK_SECTION, keep_debug
from binslim.elf.reader import ElfFile
from testdata.build import Fixture, fixture_names
from tests.helpers import require_tool, run_fixture, run_with_library, stage_fixture
from tests.test_strip import assert_loaded_bytes_unchanged

TIMEOUT = 120
# Executables and shared libraries (objects keep their debug information for the linker).
LINKED = fixture_names(kind="exec") + fixture_names(kind="shared")
NATIVE = tuple(name for name in LINKED if name in fixture_names(arch="amd64"))
# What gdb is asked, per fixture: functions by name and source lines, as a user would.
GDB_QUERIES = {
    "hello-cxx": (
        "info line main",
        "info line banner",
        "info address main",
        "info scope banner",
        "info functions ^main",
    ),
    "hello-rust": (
        "info line hello_rust::main",
        "info line hello_rust::banner",
        "info functions ^hello_rust::",
    ),
}


def _run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT, check=False, **kwargs)  # type: ignore[call-overload, no-any-return]


def gdb_answers(binary: Path | str, queries: tuple[str, ...], *, cwd: Path) -> list[str]:
    """gdb's answer to each query, without the warnings that name the file."""
    argv = [require_tool("gdb"), "-nx", "-batch"]
    for query in queries:
        argv += ["-ex", f"echo >>> {query}\\n", "-ex", query]
    done = _run([*argv, str(binary)], cwd=cwd)
    assert "CRC mismatch" not in done.stderr, done.stderr
    answers: list[str] = []
    for line in done.stdout.splitlines():
        if line.startswith(">>> "):
            answers.append("")
        elif answers:
            answers[-1] += line
    assert len(answers) == len(queries), done.stdout + done.stderr
    return answers


def split(fixtures: dict[str, Fixture], name: str, folder: Path) -> tuple[Path, Path]:
    """Strip a copy of fixture ``name`` into ``folder`` with its companion beside it, as gdb expects."""
    folder.mkdir(parents=True, exist_ok=True)
    binary = folder / os.path.basename(fixtures[name].path)
    companion = folder / (binary.name + ".debug")
    result = strip(fixtures[name].path, binary, keep_debug=companion)
    assert result.debug_file is not None and result.debug_file.path == str(companion)
    return binary, companion


def objcopy_companion(fixture: Fixture, out: Path) -> Path | None:
    """objcopy --only-keep-debug, where GNU objcopy knows the architecture."""
    done = _run([require_tool("objcopy"), "--only-keep-debug", fixture.path, str(out)])
    return out if done.returncode == 0 else None


def section_table(path: Path | str) -> list[tuple[str, str, int, int, int]]:
    """(name, type, flags, address, size) of every section, read with pyelftools."""
    with open(path, "rb") as handle:
        return [
            (s.name, s["sh_type"], s["sh_flags"], s["sh_addr"], s["sh_size"])
            for s in ELFFile(handle).iter_sections()
        ]


def section_contents(path: Path | str, name: str) -> bytes:
    """A section's bytes as stored (compressed debug sections stay compressed)."""
    with open(path, "rb") as handle:
        section = ELFFile(handle).get_section_by_name(name)
        assert section is not None, name
        handle.seek(section["sh_offset"])
        return handle.read(section["sh_size"])


@pytest.mark.parametrize("name", sorted(GDB_QUERIES))
def test_gdb_resolves_functions_and_lines_through_the_companion(
    fixtures: dict[str, Fixture], name: str, tmp_path: Path
) -> None:
    queries = GDB_QUERIES[name]
    expected = gdb_answers(fixtures[name].path, queries, cwd=tmp_path)
    assert all(answer and not answer.startswith("No ") for answer in expected), expected
    binary, companion = split(fixtures, name, tmp_path / "split")
    assert gdb_answers(binary, queries, cwd=tmp_path) == expected
    # And it really is the companion that answers: without it gdb knows nothing.
    companion.rename(tmp_path / "elsewhere.debug")
    assert gdb_answers(binary, queries, cwd=tmp_path) != expected
    # The split binary still runs as before.
    assert run_fixture(fixtures[name], path=binary) == run_fixture(fixtures[name])


def test_gdb_finds_the_companion_by_build_id(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    """The notes stay in the companion, so build-id lookup (gdb, debuginfod) finds it too."""
    binary, companion = split(fixtures, "hello-cxx", tmp_path / "split")
    with open(binary, "rb") as handle:
        note = ELFFile(handle).get_section_by_name(".note.gnu.build-id")
        build_id = next(iter(note.iter_notes()))["n_desc"]  # type: ignore[union-attr]
    store = tmp_path / "debug" / ".build-id" / build_id[:2]
    store.mkdir(parents=True)
    shutil.move(companion, store / f"{build_id[2:]}.debug")
    gdb = require_tool("gdb")
    done = _run(
        [
            gdb,
            "-nx",
            "-batch",
            "-ex",
            f"set debug-file-directory {tmp_path / 'debug'}",
            "-ex",
            "file " + str(binary),
            "-ex",
            "info line main",
        ],
        cwd=tmp_path,
    )
    assert 'Line 32 of "' in done.stdout and "hello.cpp" in done.stdout, done.stdout + done.stderr


@pytest.mark.parametrize("name", LINKED)
def test_companion_has_objcopys_layout(fixtures: dict[str, Fixture], name: str, tmp_path: Path) -> None:
    fixture = fixtures[name]
    _, companion = split(fixtures, name, tmp_path)
    original = section_table(fixture.path)
    ours = section_table(companion)
    assert [(n, f, a) for n, _, f, a, _ in ours] == [(n, f, a) for n, _, f, a, _ in original]
    with ElfFile(fixture.path) as elf:
        for section, (_, sh_type, _, _, size) in zip(elf.sections, ours):
            if section.is_alloc and section.sh_type not in (7, 8):  # SHT_NOTE, SHT_NOBITS
                assert sh_type == "SHT_NOBITS", section.name
            elif section.has_file_bytes:
                assert section_contents(companion, section.name) == elf.read_section(section), section.name
            assert size == section.sh_size
    reference = objcopy_companion(fixture, tmp_path / "objcopy.debug")
    if reference is None:
        return  # GNU objcopy does not know this architecture
    # The same sections as objcopy's (which moves .shstrtab last), of the same types.
    assert sorted(s[:2] for s in section_table(reference)) == sorted(s[:2] for s in ours)
    # objcopy rebuilds .strtab without duplicate strings; that is the only way it can be smaller.
    strtab_saving = len(section_contents(fixture.path, ".strtab")) - len(
        section_contents(reference, ".strtab")
    )
    assert companion.stat().st_size <= reference.stat().st_size + strtab_saving


@pytest.mark.parametrize("name", LINKED)
def test_readelf_and_elfutils_accept_the_companion(
    fixtures: dict[str, Fixture], name: str, tmp_path: Path
) -> None:
    fixture = fixtures[name]
    _, companion = split(fixtures, name, tmp_path)
    reference = objcopy_companion(fixture, tmp_path / "objcopy.debug")
    readelf = require_tool("readelf")
    ours = _run([readelf, "-a", "-W", str(companion)])
    assert ours.returncode == 0, ours.stderr
    if reference is not None:
        # objcopy's companion draws the same complaints (a PT_INTERP whose bytes are gone), no fewer.
        theirs = _run([readelf, "-a", "-W", str(reference)])
        assert set(ours.stderr.splitlines()) <= set(theirs.stderr.splitlines())
    else:
        assert "Error" not in ours.stderr and "Warning" not in ours.stderr, ours.stderr
    eu_readelf = _run([require_tool("eu-readelf"), "-a", str(companion)])
    assert eu_readelf.returncode == 0 and not eu_readelf.stderr, eu_readelf.stderr
    elflint = require_tool("eu-elflint")
    verdict = _run([elflint, "--debuginfo", str(companion)])
    # eu-elflint judges the symbols the companion carries on; it must say no more than of objcopy's.
    if reference is not None:
        # Section numbers may differ (objcopy keeps the input's order, binslim the file order).
        theirs_lint = _run([elflint, "--debuginfo", str(reference)]).stdout.replace(
            str(reference), str(companion)
        )
        assert _unnumbered(verdict.stdout) <= _unnumbered(theirs_lint)
    else:
        original = _run([elflint, "--debuginfo", fixture.path]).stdout
        assert set(verdict.stdout.splitlines()) <= set(original.splitlines()) | {""}


@pytest.mark.parametrize("name", ["hello-c-pie", "hello-go-s390x", "hello-go-arm"])
def test_debuglink_names_the_companion_and_its_crc(
    fixtures: dict[str, Fixture], name: str, tmp_path: Path
) -> None:
    binary, companion = split(fixtures, name, tmp_path)
    with ElfFile(str(binary)) as elf:
        (link,) = [s for s in elf.sections if s.name == DEBUGLINK_SECTION]
        data = elf.read_section(link)
        order = elf.layout.order
    assert (link.sh_type, link.sh_flags, link.sh_addralign) == (1, 0, 4)  # PROGBITS, not loaded, 4-aligned
    file_name, _, rest = data.partition(b"\0")
    assert file_name == companion.name.encode()
    assert len(data) % 4 == 0 and len(file_name) + 1 + 4 <= len(data) <= len(file_name) + 1 + 3 + 4
    assert set(rest[:-4]) <= {0}
    (crc,) = struct.unpack(order + "I", data[-4:])
    assert crc == zlib.crc32(companion.read_bytes())
    links = _run([require_tool("readelf"), "--debug-dump=links", str(binary)], cwd=tmp_path)
    assert f"Separate debug info file: {companion.name}" in links.stdout
    assert f"CRC value: {crc:#x}" in links.stdout


@pytest.mark.parametrize("name", NATIVE)
def test_stripped_binary_grows_only_by_the_debuglink(
    fixtures: dict[str, Fixture], name: str, tmp_path: Path
) -> None:
    fixture = fixtures[name]
    plain = tmp_path / "plain"
    strip(fixture.path, plain)
    linked, companion = split(fixtures, name, tmp_path / "split")
    with ElfFile(str(linked)) as elf:
        word, entry = elf.layout.word_size, elf.layout.shdr.size
        (link,) = [s for s in elf.sections if s.name == DEBUGLINK_SECTION]
    # Its contents, its header, its name in .shstrtab, and at most the padding that aligns them.
    most = link.sh_size + entry + len(DEBUGLINK_SECTION) + 1 + 3 + (word - 1)
    assert 0 < linked.stat().st_size - plain.stat().st_size <= most
    assert_loaded_bytes_unchanged(fixture.path, str(linked))
    if fixture.kind == "shared":
        assert run_with_library(fixtures, name, linked, tmp_path / "run")[0] == 0
    else:
        staged = stage_fixture(fixtures, name, tmp_path / "run")
        shutil.copy2(linked, staged)
        assert run_fixture(fixture, path=staged)[0] == 0


def test_strip_debug_level_keeps_symbols_and_links(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    binary, companion = tmp_path / "hello", tmp_path / "hello.debug"
    strip(fixtures["hello-c-pie"].path, binary, level="debug", keep_debug=companion)
    names = [s[0] for s in section_table(binary)]
    assert ".symtab" in names and DEBUGLINK_SECTION in names
    assert not any(n.startswith(".debug") for n in names)
    assert any(n.startswith(".debug_info") for n, *_ in section_table(companion))


def test_an_existing_debuglink_is_replaced(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    old = tmp_path / "old.debug"
    old.write_bytes(b"not the debug file")
    with_link = tmp_path / "with-link"
    done = _run(
        [require_tool("objcopy"), f"--add-gnu-debuglink={old}", fixtures["hello-c-pie"].path, str(with_link)]
    )
    assert done.returncode == 0, done.stderr
    binary, companion = tmp_path / "hello", tmp_path / "new.debug"
    strip(with_link, binary, keep_debug=companion)
    names = [s[0] for s in section_table(binary)]
    assert names.count(DEBUGLINK_SECTION) == 1
    assert section_contents(binary, DEBUGLINK_SECTION).startswith(b"new.debug\0")


def test_keep_debug_alone_leaves_the_input(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    copy = Path(stage_fixture(fixtures, "hello-cxx", tmp_path))
    before = copy.read_bytes()
    written = keep_debug(copy, tmp_path / "hello-cxx.debug")
    assert copy.read_bytes() == before
    assert written.size == (tmp_path / "hello-cxx.debug").stat().st_size
    assert written.crc32 == zlib.crc32((tmp_path / "hello-cxx.debug").read_bytes())


@pytest.mark.parametrize(
    ("name", "options", "problem"),
    [
        ("greet-obj", {}, "relocatable"),
        ("hello-c-pie", {"level": "sections"}, "--strip-section-headers"),
    ],
)
def test_refusals_write_nothing(
    fixtures: dict[str, Fixture], name: str, options: dict[str, str], problem: str, tmp_path: Path
) -> None:
    out, companion = tmp_path / "out", tmp_path / "out.debug"
    with pytest.raises(UnsupportedError, match=problem):
        strip(fixtures[name].path, out, keep_debug=companion, **options)  # type: ignore[arg-type]
    assert sorted(os.listdir(tmp_path)) == []


@pytest.mark.parametrize(
    ("output", "debug_name"),
    [("out", "input"), (None, "input"), ("out", "out")],
    ids=["input-with-o", "input-in-place", "output"],
)
def test_a_debug_file_reaching_the_binary_through_a_folder_link_is_refused(
    fixtures: dict[str, Fixture], output: str | None, debug_name: str, tmp_path: Path
) -> None:
    """``--keep-debug alias/NAME``, ``alias`` a link to the binary's folder, names the input or the output
    itself: installed first, the companion would replace the input (lost, with -o) or the output."""
    real = tmp_path / "real"
    copy = Path(stage_fixture(fixtures, "hello-c-pie", real))
    (tmp_path / "alias").symlink_to("real")
    before = copy.read_bytes()
    debug_file = tmp_path / "alias" / (copy.name if debug_name == "input" else debug_name)
    with pytest.raises(UnsupportedError, match="would overwrite the binary"):
        strip(copy, real / output if output else None, keep_debug=debug_file)
    assert copy.read_bytes() == before
    assert sorted(os.listdir(real)) == [copy.name]


def test_already_stripped_input_keeps_its_companion(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    """A second run on the split binary must not replace the good companion with an empty one."""
    binary, companion = split(fixtures, "hello-c-pie", tmp_path)
    before = companion.read_bytes()
    with pytest.raises(UnsupportedError, match="already stripped"):
        strip(binary, keep_debug=companion)
    assert companion.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == sorted([binary.name, companion.name])


def test_failure_after_the_companion_installs_neither(
    fixtures: dict[str, Fixture], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(sys.modules["binslim.strip"], "strip_to_fd", broken)
    with pytest.raises(Exception, match="space"):
        strip(fixtures["hello-c-pie"].path, tmp_path / "out", keep_debug=tmp_path / "out.debug")
    assert os.listdir(tmp_path) == []


def test_slim_verifies_then_installs_both(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    out, companion = tmp_path / "hello-cxx", tmp_path / "hello-cxx.debug"
    result = slim(fixtures["hello-cxx"].path, out, keep_debug=companion, verify_runs=1)
    assert result.status == "ok" and result.verify is not None and result.verify.same_behaviour
    assert companion.exists() and out.exists()
    assert any(f"debug information written to {companion}" in n for n in result.notes)
    assert sorted(os.listdir(tmp_path)) == ["hello-cxx", "hello-cxx.debug"]


def test_cli_keep_debug(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    out = tmp_path / "hello"
    done = _run(
        [
            sys.executable,
            "-m",
            "binslim",
            fixtures["hello-c-pie"].path,
            "-o",
            str(out),
            "--keep-debug",
            str(tmp_path / "hello.debug"),
            "--no-verify",
        ]
    )
    assert done.returncode == 0, done.stderr
    assert "linked through .gnu_debuglink" in done.stdout
    assert (tmp_path / "hello.debug").exists()
    two = _run(
        [
            sys.executable,
            "-m",
            "binslim",
            fixtures["hello-c-pie"].path,
            fixtures["hello-cxx"].path,
            "--keep-debug",
            str(tmp_path / "x.debug"),
            "--no-verify",
        ]
    )
    assert two.returncode == 2 and "--keep-debug takes exactly one input" in two.stderr


def _unnumbered(lint: str) -> set[str]:
    return {re.sub(r"section \[\d+\]", "section [#]", line) for line in lint.splitlines()}
