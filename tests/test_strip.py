"""The strip engine against real oracles: GNU strip / llvm-strip for size, readelf and eu-elflint for
validity,
pyelftools as an independent reader, and running each fixture for behaviour."""

from __future__ import annotations

import dataclasses
import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from binslim import strip
from binslim.debuginfo import DebugLink
from binslim.elf.reader import ElfFile
from binslim.errors import VerificationError
from binslim.strip import strip_to_fd
from binslim.verifier import static_check
from testdata.build import Fixture, FixtureBuildError, fixture_names, insert_padding_page
from tests.helpers import (
    require_tool,
    run_linked_object,
    run_with_library,
)
from tests.helpers import (
    run_as as twin_run,
)

ALL = fixture_names()
EXECUTABLES = fixture_names(kind="exec")
TIMEOUT = 120


def _run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT, check=False, **kwargs)  # type: ignore[call-overload, no-any-return]


def reference_strip(fixture: Fixture, out: Path) -> Path:
    """GNU strip where it reads the architecture, else llvm-strip. Objects get --strip-debug, as binslim
    gives them (--strip-all would make them unlinkable)."""
    flag = "--strip-debug" if fixture.kind == "object" else "--strip-all"
    gnu = _run([require_tool("strip"), flag, "-o", str(out), fixture.path])
    if gnu.returncode == 0:
        return out
    llvm = _run([require_tool("llvm-strip"), flag, "-o", str(out), fixture.path])
    assert llvm.returncode == 0, llvm.stderr
    return out


def loaded_bytes(path: str) -> list[tuple[int, int, int, int, bytes]]:
    """(p_type, p_offset, p_vaddr, p_align, file bytes) of every segment, read with pyelftools."""
    with open(path, "rb") as handle:
        elf = ELFFile(handle)
        result = []
        for segment in elf.iter_segments():
            handle.seek(segment["p_offset"])
            data = handle.read(segment["p_filesz"])
            fields = (segment["p_type"], segment["p_offset"], segment["p_vaddr"], segment["p_align"])
            result.append((*fields, data))
        return result


def header_masked(path: str, data: bytes, start: int) -> bytes:
    """Bytes of a segment starting at file offset ``start`` with the header fields a new layout must change
    masked out: e_shoff, e_shnum, e_shstrndx, e_phoff (a table no segment covers moves), and each p_offset
    and p_filesz (compared separately)."""
    with ElfFile(path) as elf:
        layout, phoff, phnum = elf.layout, elf.header.e_phoff, elf.header.e_phnum
    masked = bytearray(data)
    at, fmt = layout.e_shoff_at
    spans = [(at, struct.calcsize(fmt)), (layout.e_shnum_at, 2), (layout.e_shstrndx_at, 2)]
    at, fmt = layout.e_phoff_at
    spans.append((at, struct.calcsize(fmt)))
    word = 8 if layout.is64 else 4
    offset_at, filesz_at = (8, 32) if layout.is64 else (4, 16)
    for i in range(phnum):
        spans += [
            (phoff + i * layout.phdr.size + offset_at, word),
            (phoff + i * layout.phdr.size + filesz_at, word),
        ]
    for offset, length in spans:
        relative = offset - start
        if 0 <= relative and relative + length <= len(masked):
            masked[relative : relative + length] = bytes(length)
    return bytes(masked)


def assert_loaded_bytes_unchanged(original: str, stripped: str) -> None:
    """Every segment maps the same bytes. A segment may start earlier in the file (moved down over removed
    sections) only by a multiple of its alignment, so p_offset stays congruent to p_vaddr."""
    before, after = loaded_bytes(original), loaded_bytes(stripped)
    assert [(t, v, a) for t, _, v, a, _ in before] == [(t, v, a) for t, _, v, a, _ in after]
    with ElfFile(original) as elf:
        unused = {segment.index for segment in elf.orphan_loads}
    for index, (old_segment, new_segment) in enumerate(zip(before, after)):
        _, old_offset, _, align, old = old_segment
        _, new_offset, _, _, new = new_segment
        assert new_offset <= old_offset and (old_offset - new_offset) % max(1, align) == 0, index
        if index in unused and not new:
            continue  # a PT_LOAD nothing refers to, emptied (its p_memsz is compared by static_check)
        old, new = header_masked(original, old, old_offset), header_masked(stripped, new, new_offset)
        # A last segment may end earlier when only zero padding followed its last section.
        assert old[: len(new)] == new, f"segment {index} bytes changed"
        assert old[len(new) :].count(0) == len(old) - len(new), f"segment {index} lost non-zero bytes"


# GNU strip's output of a fat LTO object no longer links (test_fat_lto_object_still_links): no reference.
@pytest.mark.parametrize("name", [name for name in ALL if name != "greet-fat-lto-obj"])
def test_no_bigger_than_reference_strip(fixtures: dict[str, Fixture], name: str, tmp_path: Path) -> None:
    fixture = fixtures[name]
    ours = tmp_path / "ours"
    result = strip(fixture.path, ours)
    reference = reference_strip(fixture, tmp_path / "reference")
    assert result.stripped_size == ours.stat().st_size
    # GNU strip destroys an overlay that binslim keeps; compare the ELF images.
    assert ours.stat().st_size - result.overlay <= reference.stat().st_size
    assert result.saved > 0, "every fixture carries symbols or debug info"


@pytest.mark.parametrize("name", ALL)
def test_output_is_valid_elf(fixtures: dict[str, Fixture], name: str, tmp_path: Path) -> None:
    fixture = fixtures[name]
    ours = tmp_path / "ours"
    strip(fixture.path, ours)
    readelf = require_tool("readelf")
    before = _run([readelf, "-a", "-W", fixture.path])
    after = _run([readelf, "-a", "-W", str(ours)])
    assert after.returncode == 0
    new_warnings = set(after.stderr.splitlines()) - set(before.stderr.splitlines())
    assert not new_warnings, new_warnings
    with open(ours, "rb") as handle:  # pyelftools, an independent reader
        elf = ELFFile(handle)
        names = [s.name for s in elf.iter_sections()]
        assert ".symtab" not in names or fixture.kind == "object"
        # Loaded sections stay even when named like debug info (Rust's .debug_gdb_scripts is SHF_ALLOC).
        unloaded = [s.name for s in elf.iter_sections() if not s["sh_flags"] & 0x2]
        assert not any(n.startswith((".debug", ".zdebug")) for n in unloaded)
        for segment in elf.iter_segments():
            assert segment["p_offset"] + segment["p_filesz"] <= ours.stat().st_size
    elflint = require_tool("eu-elflint")
    if _run([elflint, "--gnu-ld", fixture.path]).returncode == 0:
        lint = _run([elflint, "--gnu-ld", str(ours)])
        assert lint.returncode == 0, lint.stdout + lint.stderr


@pytest.mark.parametrize("name", ALL)
def test_loaded_bytes_unchanged(fixtures: dict[str, Fixture], name: str, tmp_path: Path) -> None:
    fixture = fixtures[name]
    ours = tmp_path / "ours"
    strip(fixture.path, ours)
    assert_loaded_bytes_unchanged(fixture.path, str(ours))


@pytest.mark.parametrize("name", EXECUTABLES)
def test_behaviour_unchanged(fixtures: dict[str, Fixture], name: str, tmp_path: Path) -> None:
    fixture = fixtures[name]
    if fixture.qemu:
        require_tool(fixture.qemu)
    ours = tmp_path / "ours"
    strip(fixture.path, ours)
    assert os.access(ours, os.X_OK), "the exec bit is kept"
    for number, args in enumerate((fixture.run_args, fixture.fail_args)):
        before = twin_run(fixtures, name, Path(fixture.path), tmp_path / f"original-{number}", args)
        after = twin_run(fixtures, name, ours, tmp_path / f"stripped-{number}", args)
        assert after == before
        assert before[0] == (0 if number == 0 else fixture.fail_returncode)


@pytest.mark.parametrize("name", fixture_names(kind="shared"))
def test_stripped_library_serves_its_program(fixtures: dict[str, Fixture], name: str, tmp_path: Path) -> None:
    library = fixtures[name]
    stripped = tmp_path / "stripped.so"
    strip(library.path, stripped)
    returncode, stdout, _ = run_with_library(fixtures, name, stripped, tmp_path / "app")
    assert returncode == 0
    assert library.expected_stdout in stdout


@pytest.mark.parametrize("name", fixture_names(kind="object"))
def test_stripped_object_still_links(fixtures: dict[str, Fixture], name: str, tmp_path: Path) -> None:
    fixture = fixtures[name]
    stripped = tmp_path / "stripped.o"
    result = strip(fixture.path, stripped)
    assert result.relocatable
    assert any("still links" in m for m in result.messages)
    with open(stripped, "rb") as handle:
        assert ELFFile(handle).get_section_by_name(".symtab") is not None
    returncode, stdout, _ = run_linked_object(fixture, stripped, tmp_path)
    assert returncode == 0
    assert fixture.expected_stdout in stdout


@pytest.mark.parametrize("name", ["hello-c-pie", "hello-go", "greet-obj"])
def test_stripping_twice_changes_nothing(fixtures: dict[str, Fixture], name: str, tmp_path: Path) -> None:
    once, twice = tmp_path / "once", tmp_path / "twice"
    strip(fixtures[name].path, once)
    second = strip(once, twice)
    assert once.read_bytes() == twice.read_bytes()
    assert second.saved == 0 and not second.changed and second.removed == ()


@pytest.mark.parametrize("name", ["hello-cxx", "gofmt"])
def test_output_is_deterministic(fixtures: dict[str, Fixture], name: str, tmp_path: Path) -> None:
    strip(fixtures[name].path, tmp_path / "a")
    strip(fixtures[name].path, tmp_path / "b")
    assert (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes()


@pytest.mark.parametrize("level", ["all", "sections"])
@pytest.mark.parametrize("name", ALL)
def test_built_in_memory_or_streamed_the_bytes_are_the_same(
    fixtures: dict[str, Fixture], name: str, level: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file up to IN_MEMORY_BYTES is read whole and its output built in one buffer; a bigger one is copied
    range by range. Both ways must write the same bytes (or refuse the same way)."""
    from binslim.elf import reader
    from binslim.errors import BinslimError

    def attempt(target: Path) -> bytes | str:
        try:
            strip(fixtures[name].path, target, level=level)
        except BinslimError as exc:
            return str(exc).replace(str(target), "OUT")
        return target.read_bytes()

    in_memory = attempt(tmp_path / "memory")
    monkeypatch.setattr(reader, "IN_MEMORY_BYTES", -1)
    assert attempt(tmp_path / "streamed") == in_memory


def test_overlay_is_kept_byte_for_byte(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    from testdata.build import overlay_payload

    fixture = fixtures["hello-c-overlay"]
    ours = tmp_path / "ours"
    result = strip(fixture.path, ours)
    payload = overlay_payload()
    assert result.overlay == len(payload)
    assert ours.read_bytes().endswith(payload)
    assert any("overlay" in m for m in result.messages)
    gnu = reference_strip(fixture, tmp_path / "gnu")
    assert not gnu.read_bytes().endswith(payload), "GNU strip drops overlays; binslim exists to keep them"


def test_report_accounts_for_every_byte(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    result = strip(fixtures["hello-cxx"].path, tmp_path / "ours")
    by_kind = result.removed_by_kind()
    assert sum(by_kind.values()) == result.saved
    assert by_kind["debug"] > 0 and by_kind["symbols"] > 0
    assert {n.name for n in result.kept_notes} >= {".note.gnu.build-id"}


def test_loader_notes_and_debuglink_are_kept(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    fixture = fixtures["hello-c-pie"]
    with_link = tmp_path / "with-link"
    debug_file = tmp_path / "hello.debug"
    debug_file.write_bytes(b"debug")
    objcopy = require_tool("objcopy")
    assert _run([objcopy, f"--add-gnu-debuglink={debug_file}", fixture.path, str(with_link)]).returncode == 0
    ours = tmp_path / "ours"
    strip(with_link, ours)
    with open(ours, "rb") as handle:
        names = {s.name for s in ELFFile(handle).iter_sections()}
    assert {".gnu_debuglink", ".note.gnu.build-id", ".note.ABI-tag", ".note.gnu.property"} <= names
    assert ".comment" not in names


def test_strip_debug_keeps_symbols(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    fixture = fixtures["hello-cxx"]
    ours = tmp_path / "ours"
    result = strip(fixture.path, ours, level="debug")
    assert set(result.removed_by_kind()) <= {"debug", "headers"}
    gnu = tmp_path / "gnu"
    assert _run([require_tool("strip"), "--strip-debug", "-o", str(gnu), fixture.path]).returncode == 0
    assert ours.stat().st_size <= gnu.stat().st_size
    nm = _run([require_tool("nm"), "-C", str(ours)])
    assert nm.returncode == 0 and " main" in nm.stdout
    assert_loaded_bytes_unchanged(fixture.path, str(ours))


def test_keep_and_remove_section_globs(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    fixture = fixtures["hello-c-pie"]
    ours = tmp_path / "ours"
    strip(fixture.path, ours, keep_sections=[".comment", ".debug_*"], remove_sections=[".gnu_debuglink"])
    with open(ours, "rb") as handle:
        names = {s.name for s in ELFFile(handle).iter_sections()}
    assert ".comment" in names and ".debug_info" in names and ".symtab" not in names


def test_removing_a_loaded_section_is_refused(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    from binslim.errors import UnsupportedError

    with pytest.raises(UnsupportedError, match=r"refusing to remove loaded section \.text"):
        strip(fixtures["hello-c-pie"].path, tmp_path / "ours", remove_sections=[".text"])
    assert not (tmp_path / "ours").exists()
    assert [p.name for p in tmp_path.iterdir()] == []


def test_mode_and_in_place(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    copy = tmp_path / "prog"
    shutil.copy2(fixtures["hello-c-pie"].path, copy)
    copy.chmod(0o751)
    before = copy.stat().st_size
    result = strip(copy)
    assert result.output == str(copy)
    assert copy.stat().st_size == result.stripped_size < before
    assert copy.stat().st_mode & 0o777 == 0o751
    assert [p.name for p in tmp_path.iterdir()] == ["prog"], "no temporary file is left behind"


def test_preserve_dates(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    copy = tmp_path / "prog"
    shutil.copy2(fixtures["hello-c-pie"].path, copy)
    os.utime(copy, ns=(1_000_000_000_000_000_000, 1_100_000_000_000_000_000))
    strip(copy, preserve_dates=True)
    assert copy.stat().st_mtime_ns == 1_100_000_000_000_000_000
    strip(fixtures["hello-c-pie"].path, tmp_path / "other")
    assert (tmp_path / "other").stat().st_mtime_ns != 1_100_000_000_000_000_000


@pytest.mark.skipif(os.geteuid() != 0, reason="file capabilities and chown need root")
def test_capability_xattr_and_owner_are_kept(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    copy = tmp_path / "prog"
    shutil.copy2(fixtures["hello-c-pie"].path, copy)
    os.chown(copy, 1234, 4321)
    capability = bytes.fromhex("0100000200040000000000000000000000000000")  # cap_net_raw+p, v2 layout
    try:
        os.setxattr(copy, "security.capability", capability)
    except OSError as exc:  # some container filesystems refuse security.* attributes
        pytest.skip(f"this filesystem does not store security.capability: {exc}")
    strip(copy)
    assert os.getxattr(copy, "security.capability") == capability
    assert (copy.stat().st_uid, copy.stat().st_gid) == (1234, 4321)


def test_extended_section_numbering(tmp_path: Path) -> None:
    """More than 65,280 sections: e_shnum == 0, SHN_XINDEX and a SYMTAB_SHNDX table."""
    count = 66_000
    source = tmp_path / "many.s"
    with open(source, "w") as handle:
        for i in range(count):
            handle.write(f'.section .text.f{i},"ax",@progbits\n.globl f{i}\nf{i}: ret\n')
        handle.write('.section .debug_str,"MS",@progbits,1\n.string "debug data"\n')
        handle.write('.section .comment,"MS",@progbits,1\n.string "compiler"\n')
    obj = tmp_path / "many.o"
    assert _run([require_tool("as"), "-o", str(obj), str(source)]).returncode == 0
    with ElfFile(str(obj)) as elf:
        assert elf.header.e_shnum > 0xFF00
        assert any(s.name == ".symtab_shndx" for s in elf.sections)
    ours = tmp_path / "ours.o"
    result = strip(obj, ours)
    assert any(r.name == ".debug_str" for r in result.removed)
    gnu = tmp_path / "gnu.o"
    assert _run([require_tool("strip"), "--strip-debug", "-o", str(gnu), str(obj)]).returncode == 0
    assert ours.stat().st_size <= gnu.stat().st_size
    readelf = _run([require_tool("readelf"), "-S", "-s", "-W", str(ours)])
    assert readelf.returncode == 0 and not readelf.stderr
    assert "f65999" in readelf.stdout
    with open(ours, "rb") as handle:
        elf = ELFFile(handle)
        names = {s.name for s in elf.iter_sections()}
        assert ".debug_str" not in names and ".text.f65999" in names and ".symtab_shndx" in names
    symbol_line = next(line for line in readelf.stdout.splitlines() if line.endswith(" f65999"))
    section_line = next(line for line in readelf.stdout.splitlines() if " .text.f65999 " in line)
    assert symbol_line.split()[6] == section_line.split("]")[0].strip(" [")


def test_segments_behind_removed_sections_move_down(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    """patchelf (auditwheel uses it on every Python wheel) appends a loaded segment after the symbol table
    and debug info. GNU strip moves that segment down over them; so must binslim, or it saves nothing."""
    library = tmp_path / "libgreet.so"
    shutil.copy2(fixtures["libgreet"].path, library)
    long_rpath = "/opt/" + "x" * 200
    patched = _run([require_tool("patchelf"), "--set-rpath", long_rpath, str(library)])
    assert patched.returncode == 0, patched.stderr
    with ElfFile(str(library)) as elf:
        symtab = next(s for s in elf.sections if s.name == ".symtab")
        assert any(p.p_type == 1 and p.p_offset > symtab.sh_offset for p in elf.segments), (
            "layout as patchelf"
        )
    ours = tmp_path / "ours.so"
    result = strip(library, ours)
    reference = reference_strip(
        dataclasses.replace(fixtures["libgreet"], path=str(library)), tmp_path / "gnu.so"
    )
    assert ours.stat().st_size <= reference.stat().st_size
    assert result.removed_by_kind()["symbols"] > 0
    assert_loaded_bytes_unchanged(str(library), str(ours))
    static_check(str(library), str(ours), packed=False)
    lint = _run([require_tool("eu-elflint"), "--gnu-ld", str(ours)])
    assert lint.returncode == 0, lint.stdout
    readelf = _run([require_tool("readelf"), "-a", "-W", str(ours)])
    assert readelf.returncode == 0 and not readelf.stderr
    assert long_rpath in _run([require_tool("readelf"), "-d", str(ours)]).stdout
    returncode, stdout, _ = run_with_library(fixtures, "libgreet", ours, tmp_path / "app")
    assert returncode == 0 and fixtures["libgreet"].expected_stdout in stdout


@pytest.mark.parametrize("name", ["hello-go", "gofmt", "hello-go-ppc64", "hello-go-mips"])
def test_go_section_table_inside_a_loaded_segment(
    fixtures: dict[str, Fixture], name: str, tmp_path: Path
) -> None:
    """Go's linker puts the section header table right after the program headers, inside the first PT_LOAD:
    those bytes stay as they are and the new table goes at the end."""
    fixture = fixtures[name]
    with ElfFile(fixture.path) as elf:
        old_table = (elf.header.e_shoff, elf.section_table_end)
        first_load = next(p for p in elf.segments if p.p_type == 1)
        assert first_load.p_offset <= old_table[0] and old_table[1] <= first_load.file_end
        old_bytes = elf.read(old_table[0], old_table[1] - old_table[0])
    ours = tmp_path / "ours"
    strip(fixture.path, ours)
    with ElfFile(str(ours)) as elf:
        assert elf.header.e_shoff >= elf.segments_end
        assert elf.read(old_table[0], old_table[1] - old_table[0]) == old_bytes
    assert_loaded_bytes_unchanged(fixture.path, str(ours))


def test_padding_pages_between_segments_go(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    """hello-c-padded has a page of padding in front of its second PT_LOAD; GNU strip moves the segment
    down over it, and so must binslim, keeping each p_offset congruent to its p_vaddr."""
    fixture = fixtures["hello-c-padded"]
    ours = tmp_path / "ours"
    strip(fixture.path, ours)
    reference = reference_strip(fixture, tmp_path / "gnu")
    plain = tmp_path / "plain"
    strip(fixtures["hello-c-pie"].path, plain)
    assert ours.stat().st_size <= reference.stat().st_size
    assert ours.stat().st_size == plain.stat().st_size  # the page is gone entirely
    assert_loaded_bytes_unchanged(fixture.path, str(ours))
    static_check(fixture.path, str(ours), packed=False)
    assert twin_run(fixtures, "hello-c-padded", ours, tmp_path / "run", fixture.run_args)[0] == 0


def _loads(path: str) -> list[tuple[int, int, int, int, int]]:
    with ElfFile(path) as elf:
        return [
            (p.p_offset, p.p_vaddr, p.p_filesz, p.p_memsz, p.p_align) for p in elf.segments if p.p_type == 1
        ]


def test_unused_segments_of_patchelf_are_emptied_safely(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    """patchelf leaves stale .dynstr copies in PT_LOADs no section covers. binslim drops their file bytes
    and keeps the layout valid (p_offset congruent to p_vaddr, p_memsz unchanged); the library still
    loads. GNU strip's output of the same file no longer loads."""
    fixture = fixtures["libgreet-patchelf"]
    with ElfFile(fixture.path) as elf:
        unused = elf.orphan_loads
        assert len(unused) >= 2, "patchelf left stale segments"
        dropped = sorted(elf.segments[index].p_filesz - kept for index, kept in elf.unused_tails.items())
    ours = tmp_path / "ours.so"
    result = strip(fixture.path, ours)
    listed = [r for r in result.removed if r.kind == "unused_segments"]
    assert sorted(r.size for r in listed) == dropped
    assert any(r.name.startswith("(unused end of PT_LOAD") for r in listed)  # stale bytes behind .dynamic
    with ElfFile(str(ours)) as elf:
        for segment in unused:
            emptied = elf.segments[segment.index]
            assert (emptied.p_filesz, emptied.p_memsz, emptied.p_vaddr) == (
                0,
                segment.p_memsz,
                segment.p_vaddr,
            )
            assert (emptied.p_offset - emptied.p_vaddr) % emptied.p_align == 0
            assert emptied.p_offset <= elf.size
    assert_loaded_bytes_unchanged(fixture.path, str(ours))
    static_check(fixture.path, str(ours), packed=False)
    returncode, stdout, stderr = run_with_library(fixtures, "libgreet-patchelf", ours, tmp_path / "ours")
    assert returncode == 0 and fixture.expected_stdout in stdout, stderr

    gnu = reference_strip(fixture, tmp_path / "gnu.so")
    assert ours.stat().st_size < gnu.stat().st_size
    returncode, _, stderr = run_with_library(fixtures, "libgreet-patchelf", gnu, tmp_path / "gnu")
    assert returncode != 0 and "ELF load command address/offset not page-aligned" in stderr


def test_static_check_accepts_only_unused_segments_emptied(
    fixtures: dict[str, Fixture], tmp_path: Path
) -> None:
    fixture = fixtures["libgreet-patchelf"]
    ours = tmp_path / "ours.so"
    strip(fixture.path, ours)
    with ElfFile(fixture.path) as elf:
        unused = {p.index for p in elf.orphan_loads}
        used = next(p for p in elf.segments if p.p_type == 1 and p.index not in unused and p.p_offset)
        layout, phoff = elf.layout, elf.header.e_phoff
    broken = tmp_path / "broken.so"
    data = bytearray(ours.read_bytes())
    struct.pack_into(layout.order + "Q", data, phoff + used.index * layout.phdr.size + 32, 0)  # p_filesz
    broken.write_bytes(bytes(data))
    with pytest.raises(VerificationError, match=rf"segment {used.index} \(PT_LOAD\) p_filesz changed"):
        static_check(fixture.path, str(broken), packed=False)


def test_an_object_loses_its_file_symbols_as_with_gnu(tmp_path: Path) -> None:
    """gcc's crt objects carry no debug info; --strip-debug (all an object gets) still drops their file
    symbols, as GNU strip does."""
    gcc = require_tool("gcc")
    for name in ("crtbegin.o", "crtend.o", "crti.o"):
        found = _run([gcc, f"-print-file-name={name}"]).stdout.strip()
        assert os.path.isabs(found), found
        ours, gnu = tmp_path / f"ours-{name}", tmp_path / f"gnu-{name}"
        strip(found, ours)
        assert _run([require_tool("strip"), "--strip-debug", "-o", str(gnu), found]).returncode == 0
        assert ours.stat().st_size <= gnu.stat().st_size, name
        symbols = _run([require_tool("readelf"), "-sW", str(ours)]).stdout
        assert " FILE " not in symbols, name
    crtbegin = _run([gcc, "-print-file-name=crtbegin.o"]).stdout.strip()
    assert os.path.getsize(tmp_path / "ours-crtbegin.o") < os.path.getsize(crtbegin)


def test_fat_lto_object_still_links(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    """A fat LTO object defines a global symbol in its early debug info (.gnu.debuglto_*), which the
    link-time optimizer's output refers to. binslim keeps those sections; GNU strip's output fails to link."""
    fixture = fixtures["greet-fat-lto-obj"]
    ours = tmp_path / "ours.o"
    result = strip(fixture.path, ours)
    assert result.saved > 0 and any(".gnu.debuglto_" in m for m in result.messages)
    returncode, stdout, _ = run_linked_object(fixture, ours, tmp_path)
    assert returncode == 0 and fixture.expected_stdout in stdout
    gnu = tmp_path / "gnu.o"
    assert _run([require_tool("strip"), "--strip-debug", "-o", str(gnu), fixture.path]).returncode == 0
    (tmp_path / "gnu").mkdir()
    with pytest.raises(FixtureBuildError, match="undefined reference"):
        run_linked_object(fixture, gnu, tmp_path / "gnu")


def test_usdt_probes_are_kept_unless_removed(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    fixture = fixtures["hello-c-usdt"]
    kept = strip(fixture.path, tmp_path / "kept")
    assert ".note.stapsdt" in {n.name for n in kept.kept_notes}
    notes = _run([require_tool("readelf"), "-n", str(tmp_path / "kept")]).stdout
    assert (
        notes.count("stapsdt")
        == _run([require_tool("readelf"), "-n", fixture.path]).stdout.count("stapsdt")
        > 0
    )
    removed = strip(fixture.path, tmp_path / "removed", remove_sections=[".note.stapsdt"])
    assert ".note.stapsdt" not in {n.name for n in removed.kept_notes}
    assert [r.kind for r in removed.removed if r.name == ".note.stapsdt"] == ["notes"]
    assert "stapsdt" not in _run([require_tool("readelf"), "-n", str(tmp_path / "removed")]).stdout


def test_padding_goes_even_when_no_section_does(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    """An already stripped file with a padding page between segments still gets smaller: nothing to remove
    is not the same as nothing to gain."""
    stripped_once = tmp_path / "once"
    strip(fixtures["hello-c-pie"].path, stripped_once)
    padded = tmp_path / "padded"
    padded.write_bytes(insert_padding_page(stripped_once.read_bytes()))
    padded.chmod(0o755)
    ours = tmp_path / "ours"
    result = strip(padded, ours)
    assert result.changed and ours.stat().st_size == stripped_once.stat().st_size
    assert [r.kind for r in result.removed] == ["headers"]
    assert_loaded_bytes_unchanged(str(padded), str(ours))
    assert twin_run(fixtures, "hello-c-pie", ours, tmp_path / "run", ("--version",))[0] == 0


def test_one_byte_is_one_byte(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    program = tmp_path / "program"
    program.write_bytes(Path(fixtures["hello-c-pie"].path).read_bytes() + b"!")
    result = strip(program, tmp_path / "out")
    assert "overlay of 1 byte after the ELF image kept byte for byte" in result.messages


def test_no_negative_figure_in_the_report(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    """A stripped program with one 1-byte debug section: linking it to its debug file (.gnu_debuglink) makes
    the new section table and names larger than the old. A note says so; no figure is negative."""
    stripped, with_debug = tmp_path / "stripped", tmp_path / "with-debug"
    assert _run([require_tool("strip"), "-o", str(stripped), fixtures["hello-c-pie"].path]).returncode == 0
    (tmp_path / "one").write_bytes(b"x")
    objcopy = [
        require_tool("objcopy"),
        "--remove-section",
        ".comment",
        "--add-section",
        f".debug_str={tmp_path / 'one'}",
    ]
    assert _run([*objcopy, str(stripped), str(with_debug)]).returncode == 0
    result = strip(with_debug, tmp_path / "out", keep_debug=tmp_path / "out.debug")
    assert [(r.kind, r.size) for r in result.removed] == [("debug", 1)]
    (note,) = [m for m in result.messages if m.startswith("section headers, names and alignment take")]
    grown = int(note.split(" take ")[1].split(" B ")[0])
    assert result.saved == 1 - grown < 0


def test_a_segment_something_points_into_keeps_its_bytes(
    fixtures: dict[str, Fixture], tmp_path: Path
) -> None:
    """The same library with one dynamic-section word holding an address inside an unused segment: that
    segment is no longer unused, and keeps its bytes."""
    fixture = fixtures["libgreet-patchelf"]
    with ElfFile(fixture.path) as elf:
        target = elf.orphan_loads[0]
        dynamic = next(s for s in elf.sections if s.sh_type == 6)  # SHT_DYNAMIC
        entries = elf.read_section(dynamic)
        order = elf.layout.order
    last = len(entries) - 16
    assert struct.unpack_from(order + "qQ", entries, last) == (0, 0), "a trailing DT_NULL to write into"
    data = bytearray(Path(fixture.path).read_bytes())
    struct.pack_into(order + "Q", data, dynamic.sh_offset + last + 8, target.p_vaddr + 16)
    pointed = tmp_path / "libgreet.so"
    pointed.write_bytes(bytes(data))
    with ElfFile(str(pointed)) as elf:
        assert target.index not in elf.unused_tails
    ours = tmp_path / "ours.so"
    strip(pointed, ours)
    with ElfFile(str(ours)) as elf:
        assert elf.segments[target.index].p_filesz == target.p_filesz
    static_check(str(pointed), str(ours), packed=False)


@pytest.mark.parametrize(
    "name",
    [".debug_info", ".zdebug_info", ".line", ".stab", ".stab.index", ".stabstr", ".stabx", ".gdb_index",
     ".gdb_index2", ".gnu.debuglto_.x", ".gnu_debugdata", ".gnu_debuglink", ".text", ".comment", "debug"],
)  # fmt: skip
def test_debug_names_are_the_debug_patterns(name: str) -> None:
    """is_debug_section tests names without fnmatch (no regular expression to compile); same answers."""
    import fnmatch

    from binslim.elf.reader import Section
    from binslim.stripplan import DEBUG_PATTERNS, is_debug_section

    section = Section(1, name, 0, 1, 0, 0, 0, 0, 0, 0, 1, 0)
    assert is_debug_section(section) == any(fnmatch.fnmatchcase(name, p) for p in DEBUG_PATTERNS)


_TINY_PROGRAM = r"""
static const char message[] = "hello from the end\n";
static long sys(long n, long a, long b, long c) {
    long r;
    __asm__ volatile("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
    return r;
}
void _start(void) {
    sys(1, 1, (long)message, sizeof message - 1);
    sys(60, 0, 0, 0);
}
"""


def _program_headers_at_end(tmp_path: Path, *, named: bool) -> Path:
    """A tiny static x86-64 program with debug info whose program header table is copied to the end of the
    file, after the debug sections and the section table, as IAR toolchains place it. No segment covers the
    table there, unless ``named``: then its PT_GNU_STACK becomes a PT_PHDR naming it. The program needs no
    AT_PHDR (no libc), so it runs."""
    if os.uname().machine != "x86_64":
        pytest.skip("the program makes x86-64 system calls")
    source = tmp_path / "tiny.c"
    source.write_text(_TINY_PROGRAM)
    built = tmp_path / "tiny"
    flags = ["-g", "-O1", "-static", "-nostdlib", "-no-pie", "-fno-stack-protector"]
    compiled = _run([require_tool("gcc"), *flags, "-o", str(built), str(source)])
    assert compiled.returncode == 0, compiled.stderr
    image = bytearray(built.read_bytes())
    (phoff,) = struct.unpack_from("<Q", image, 32)
    (phnum,) = struct.unpack_from("<H", image, 56)
    entries = [bytes(image[phoff + 56 * i : phoff + 56 * (i + 1)]) for i in range(phnum)]
    image += bytes(-len(image) % 8)
    struct.pack_into("<Q", image, 32, len(image))
    assert not any(struct.unpack_from("<I", e)[0] == 6 for e in entries), "a static link has no PT_PHDR"
    if named:
        stack = next(i for i, e in enumerate(entries) if struct.unpack_from("<I", e)[0] == 0x6474E551)
        size = 56 * phnum  # p_type, p_flags, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, p_align
        entries[stack] = struct.pack("<IIQQQQQQ", 6, 4, len(image), 0, 0, size, size, 8)
    image += b"".join(entries)
    patched = tmp_path / ("tiny-phdr-at-end" + ("-named" if named else ""))
    patched.write_bytes(bytes(image))
    patched.chmod(0o755)
    return patched


def _phdr_table(path: Path) -> bytes:
    with ElfFile(str(path)) as elf:
        return elf.read(elf.header.e_phoff, elf.header_end - elf.header.e_phoff)


def test_program_headers_at_the_end_move(tmp_path: Path) -> None:
    """A program header table behind the debug sections that no segment covers pinned every byte before it.
    It moves after the loaded bytes (e_phoff follows) and the debug sections go; GNU strip does worse."""
    original = _program_headers_at_end(tmp_path, named=False)
    with ElfFile(str(original)) as elf:
        assert elf.phdrs_movable and elf.header.e_phoff > max(s.file_end for s in elf.sections)
    ours = tmp_path / "ours"
    result = strip(original, ours)
    assert result.removed_by_kind()["debug"] > 0
    gnu = tmp_path / "gnu"
    assert _run([require_tool("strip"), "--strip-all", "-o", str(gnu), str(original)]).returncode == 0
    assert ours.stat().st_size <= gnu.stat().st_size
    with ElfFile(str(ours)) as elf:
        assert elf.header.e_phoff < max(p.file_end for p in elf.segments) + 8  # right after the loaded bytes
    assert _phdr_table(ours) == _phdr_table(original)  # every program header reads the same
    assert_loaded_bytes_unchanged(str(original), str(ours))
    static_check(str(original), str(ours), packed=False)
    readelf = _run([require_tool("readelf"), "-lW", str(ours)])
    assert readelf.returncode == 0 and not readelf.stderr
    lint = _run([require_tool("eu-elflint"), "--gnu-ld", str(ours)])
    assert lint.returncode == 0, lint.stdout
    before = _run([str(original)])
    assert before.returncode == 0 and before.stdout == "hello from the end\n"
    after = _run([str(ours)])
    assert (after.returncode, after.stdout) == (before.returncode, before.stdout)
    twice = tmp_path / "twice"
    assert not strip(ours, twice).changed and twice.read_bytes() == ours.read_bytes()
    # A debug link rewrites the file while the table is already where it would move to: it is still written.
    linked = tmp_path / "linked"
    with open(linked, "wb") as handle:
        strip_to_fd(str(ours), handle.fileno(), debuglink=DebugLink("tiny.debug", 0x1234))
    linked.chmod(0o755)
    assert _phdr_table(linked) == _phdr_table(original)
    static_check(str(original), str(linked), packed=False)
    assert _run([str(linked)]).stdout == before.stdout


def test_program_headers_a_segment_names_stay(tmp_path: Path) -> None:
    """With PT_PHDR the table's place is part of the program: it stays where it is, and the static check
    refuses a moved one."""
    original = _program_headers_at_end(tmp_path, named=True)
    with ElfFile(str(original)) as elf:
        assert not elf.phdrs_movable
        phoff = elf.header.e_phoff
    ours = tmp_path / "ours"
    strip(original, ours)
    with ElfFile(str(ours)) as elf:
        assert elf.header.e_phoff == phoff
    assert_loaded_bytes_unchanged(str(original), str(ours))
    static_check(str(original), str(ours), packed=False)
    moved = bytearray(ours.read_bytes())
    table = _phdr_table(ours)
    struct.pack_into("<Q", moved, 32, len(moved))
    moved += table
    (tmp_path / "moved").write_bytes(bytes(moved))
    with pytest.raises(VerificationError, match="e_phoff changed"):
        static_check(str(original), str(tmp_path / "moved"), packed=False)


@pytest.mark.parametrize("keep_debug", [False, True], ids=["plain", "keep-debug"])
def test_inputs_either_side_of_the_in_memory_limit(
    fixtures: dict[str, Fixture], tmp_path: Path, keep_debug: bool
) -> None:
    """hello-c-pie with an overlay making it exactly IN_MEMORY_BYTES long (read whole, output built in one
    buffer) and one byte longer (streamed): the outputs differ by that one overlay byte only, with or without
    a debug companion (and the .gnu_debuglink section added to name it)."""
    from binslim.elf.reader import IN_MEMORY_BYTES

    image = Path(fixtures["hello-c-pie"].path).read_bytes()
    filler = bytes(range(256)) * (IN_MEMORY_BYTES // 256)
    at_limit = tmp_path / "at-limit"
    at_limit.write_bytes(image + filler[: IN_MEMORY_BYTES - len(image)])
    past_limit = tmp_path / "past-limit"
    past_limit.write_bytes(at_limit.read_bytes() + b"\xee")
    with ElfFile(str(at_limit)) as whole, ElfFile(str(past_limit)) as streamed:
        assert whole.data is not None and streamed.data is None
        assert whole.size == IN_MEMORY_BYTES
    outputs = []
    for source in (at_limit, past_limit):
        target = tmp_path / f"{source.name}.out" / "prog"
        target.parent.mkdir()
        companion = target.parent / "prog.debug" if keep_debug else None
        result = strip(source, target, keep_debug=companion)
        assert result.overlay == source.stat().st_size - len(image)
        outputs.append(target.read_bytes())
        if companion is not None:
            with open(target, "rb") as handle:
                assert ELFFile(handle).get_section_by_name(".gnu_debuglink") is not None
    assert outputs[1] == outputs[0] + b"\xee"
    assert outputs[0].endswith(filler[: IN_MEMORY_BYTES - len(image)])
    assert at_limit.stat().st_size == IN_MEMORY_BYTES  # inputs untouched
    assert past_limit.read_bytes() == at_limit.read_bytes() + b"\xee"


def test_an_empty_file_named_like_a_library(tmp_path: Path) -> None:
    """In place, with -o and under inspect: one line naming the file, exit 1, the file still there and
    empty, no output and nothing temporary left."""
    from tests.helpers import run_binslim

    empty = tmp_path / "libempty.so.1"
    empty.write_bytes(b"")
    for args in ([str(empty)], [str(empty), "-o", str(tmp_path / "out")], ["inspect", str(empty)]):
        done = run_binslim(*args)
        assert (done.returncode, done.stdout, done.stderr) == (
            1,
            "",
            f"error: {empty}: empty file, not an ELF file\n",
        )
        assert empty.read_bytes() == b""
        assert sorted(p.name for p in tmp_path.iterdir()) == ["libempty.so.1"]
