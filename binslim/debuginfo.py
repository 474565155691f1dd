"""Split debug information into a companion file, and link a stripped binary to it with .gnu_debuglink.

The companion has the layout ``objcopy --only-keep-debug`` gives it: the input's ELF header, program
headers and section headers, with the same sections in the same order under the same names. Loaded
sections become NOBITS (their bytes stay in the stripped binary), except notes: the build ID is what
gdb's build-id lookup and debuginfod index debug files by. Every unloaded section (the debug sections,
.symtab, .strtab, .comment...) keeps its contents.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from . import fileops
from .elf import constants as c
from .elf.copy import copy_range, write_all
from .elf.reader import ElfFile, Section, Segment
from .elf.writer import OutputSection, added_section, align_up
from .errors import UnsupportedError, file_error
from .stripplan import is_debug_section

DEBUGLINK_SECTION = ".gnu_debuglink"
_CRC_CHUNK = 1 << 20


@dataclass(frozen=True)
class DebugLink:
    """What .gnu_debuglink holds: the companion's base name and the CRC32 of its contents."""

    file_name: str
    crc32: int

    def section_data(self, little_endian: bool) -> bytes:
        """The section's contents: the name, NUL-terminated and padded to 4 bytes, then the CRC32 as a
        4-byte word in the file's byte order (as gdb, perf and elfutils read it)."""
        name = os.fsencode(self.file_name) + b"\0"
        name += bytes(-len(name) % 4)
        return name + struct.pack("<I" if little_endian else ">I", self.crc32)

    def to_dict(self) -> dict[str, Any]:
        return {"file_name": self.file_name, "crc32": f"{self.crc32:08x}"}


@dataclass(frozen=True)
class DebugFile:
    """A written companion file."""

    path: str
    size: int
    crc32: int
    debug_bytes: int  # contents of the debug sections, .symtab and .strtab it carries

    @property
    def link(self) -> DebugLink:
        return DebugLink(os.path.basename(self.path), self.crc32)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "size": self.size,
            "crc32": f"{self.crc32:08x}",
            "debug_bytes": self.debug_bytes,
        }


def file_crc32(fd: int) -> int:
    """CRC32 of the whole file open at ``fd``, in chunks; zlib's CRC32 is the one .gnu_debuglink uses."""
    crc, offset = 0, 0
    while chunk := os.pread(fd, _CRC_CHUNK, offset):
        crc = zlib.crc32(chunk, crc)
        offset += len(chunk)
    return crc & 0xFFFFFFFF


def check_splittable(elf: ElfFile) -> None:
    """Raise UnsupportedError when ``elf`` cannot (or need not) get a companion file."""
    if elf.is_relocatable:
        raise file_error(
            elf.path,
            "--keep-debug is for executables and shared libraries, not relocatable"
            " objects (the linker carries their debug information on)",
            UnsupportedError,
        )
    if not elf.sections:
        raise file_error(elf.path, "no section headers, so no debug information to keep", UnsupportedError)
    if _debug_bytes(elf) == 0:
        # Running twice must not replace a good companion with an empty one.
        raise file_error(
            elf.path,
            "no debug sections or symbol table to keep (already stripped?); the debug file was not written",
            UnsupportedError,
        )


def _debug_bytes(elf: ElfFile) -> int:
    total = 0
    for s in elf.sections:
        if s.has_file_bytes and (
            is_debug_section(s)
            or s.sh_type == c.SHT_SYMTAB
            or (s.sh_type == c.SHT_STRTAB and not s.is_alloc and s.index != elf.header.e_shstrndx)
        ):
            total += s.sh_size
    return total


@dataclass(frozen=True)
class _NoteBlock:
    """A run of loaded note bytes the companion keeps, moved from ``start`` to ``new_start``."""

    start: int
    end: int
    new_start: int

    def moved(self, offset: int) -> int:
        return self.new_start + offset - self.start


def _note_ranges(elf: ElfFile) -> list[tuple[int, int, int]]:
    """(start, end, alignment) of loaded note sections and of the note segments that map them."""
    ranges = [
        (s.sh_offset, s.file_end, max(1, s.sh_addralign))
        for s in elf.sections
        if s.is_alloc and s.sh_type == c.SHT_NOTE and s.has_file_bytes
    ]
    ranges += [
        (p.p_offset, p.file_end, max(1, p.p_align))
        for p in elf.segments
        if p.p_type in (c.PT_NOTE, c.PT_GNU_PROPERTY) and p.p_filesz
    ]
    merged: list[list[int]] = []
    for start, end, align in sorted(ranges):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
            merged[-1][2] = max(merged[-1][2], align)
        else:
            merged.append([start, end, align])
    return [(start, end, align) for start, end, align in merged]


class _CompanionLayout:
    """Where each part of the companion goes."""

    def __init__(self, elf: ElfFile) -> None:
        self.elf = elf
        layout = elf.layout
        self.phoff = layout.ehdr.size if elf.header.e_phnum else 0
        position = self.phoff + elf.header.e_phnum * layout.phdr.size
        self.headers_end = position
        self.blocks: list[_NoteBlock] = []
        for start, end, align in _note_ranges(elf):
            # Same offset modulo the alignment, so every note inside keeps its own alignment.
            new_start = position + (start - position) % align
            self.blocks.append(_NoteBlock(start, end, new_start))
            position = new_start + end - start
        self.nobits_offset = position
        self.contents: dict[int, int] = {}  # section index -> new offset, for unloaded sections
        for s in sorted(elf.sections, key=lambda s: (s.sh_offset, s.index)):
            if s.index and not s.is_alloc and s.has_file_bytes:
                position = align_up(position, max(1, s.sh_addralign))
                self.contents[s.index] = position
                position += s.sh_size
        self.table_offset = align_up(position, layout.word_size)
        self.size = self.table_offset + len(elf.sections) * layout.shdr.size

    def note_offset(self, start: int, end: int) -> int | None:
        for block in self.blocks:
            if block.start <= start and end <= block.end:
                return block.moved(start)
        return None

    def section_header(self, s: Section) -> Section:
        if s.index == 0:
            return s
        if s.index in self.contents:
            return s._replace(sh_offset=self.contents[s.index])
        if s.is_alloc and s.sh_type == c.SHT_NOTE and s.has_file_bytes:
            moved = self.note_offset(s.sh_offset, s.file_end)
            assert moved is not None
            return s._replace(sh_offset=moved)
        sh_type = c.SHT_NOBITS if s.is_alloc and s.sh_type != c.SHT_NULL else s.sh_type
        return s._replace(sh_type=sh_type, sh_offset=self.nobits_offset)

    def segment_header(self, p: Segment) -> Segment:
        if p.p_type == c.PT_PHDR:
            return p._replace(p_offset=self.phoff)
        if p.p_filesz:
            moved = self.note_offset(p.p_offset, p.file_end)
            if moved is not None:
                return p._replace(p_offset=moved)
        if p.p_type == c.PT_LOAD and p.p_offset == 0 and p.p_filesz:
            # The segment that maps the headers still maps them; nothing else is kept where it was.
            return p._replace(p_filesz=min(p.p_filesz, self.headers_end))
        offset = p.p_offset
        if offset > self.size:
            offset = p.p_vaddr % p.p_align if p.p_align > 1 else 0
        return p._replace(p_offset=offset, p_filesz=0)


def write_debug_file(elf: ElfFile, dst_fd: int) -> int:
    """Write the companion of ``elf`` into the open, empty ``dst_fd``; return its size."""
    plan = _CompanionLayout(elf)
    layout = elf.layout
    h = elf.header
    os.ftruncate(dst_fd, 0)
    ehdr = bytearray(elf.read(0, layout.ehdr.size))
    # e_phoff and e_shoff move; the counts, e_shstrndx and everything else stay.
    phoff_at, shoff_at, word = (32, 40, "Q") if layout.is64 else (28, 32, "I")
    struct.pack_into(layout.order + word, ehdr, phoff_at, plan.phoff)
    struct.pack_into(layout.order + word, ehdr, shoff_at, plan.table_offset)
    write_all(dst_fd, bytes(ehdr), 0)
    if h.e_phnum:
        table = b"".join(_pack_phdr(elf, plan.segment_header(p)) for p in elf.segments)
        write_all(dst_fd, table, plan.phoff)
    for block in plan.blocks:
        copy_range(elf.fd, dst_fd, block.start, block.new_start, block.end - block.start)
    for s in elf.sections:
        if s.index in plan.contents:
            copy_range(elf.fd, dst_fd, s.sh_offset, plan.contents[s.index], s.sh_size)
    headers = b"".join(layout.pack_shdr(plan.section_header(s)) for s in elf.sections)
    write_all(dst_fd, headers, plan.table_offset)
    os.ftruncate(dst_fd, plan.size)  # zero padding between the parts
    return plan.size


def _pack_phdr(elf: ElfFile, p: Segment) -> bytes:
    layout = elf.layout
    if layout.is64:
        return layout.phdr.pack(
            p.p_type, p.p_flags, p.p_offset, p.p_vaddr, p.p_paddr, p.p_filesz, p.p_memsz, p.p_align
        )
    return layout.phdr.pack(
        p.p_type, p.p_offset, p.p_vaddr, p.p_paddr, p.p_filesz, p.p_memsz, p.p_flags, p.p_align
    )


def write_debug_file_to(elf: ElfFile, path: str, *, name: str | None = None) -> DebugFile:
    """Write the companion of ``elf`` to ``path`` (a new or temporary file) and checksum it; I/O errors name
    ``name`` (the target a temporary file stands for) or else ``path``."""
    with fileops.open_new(path, name=name) as fd:
        size = write_debug_file(elf, fd)
        crc = file_crc32(fd)
    return DebugFile(path, size, crc, _debug_bytes(elf))


def keep_debug(
    input: str | os.PathLike[str], debug_file: str | os.PathLike[str], *, preserve_dates: bool = False
) -> DebugFile:
    """Write the companion of ``input`` to ``debug_file`` atomically, leaving ``input`` as it is.

    To strip the input and link it to the companion in one step, use ``strip(..., keep_debug=...)``.
    """
    source, target = os.fspath(input), os.fspath(debug_file)
    with ElfFile(source) as elf:
        check_splittable(elf)
        with fileops.atomic_target(target, like=source, preserve_dates=preserve_dates) as tmp:
            written = write_debug_file_to(elf, tmp, name=target)
    return DebugFile(target, written.size, written.crc32, written.debug_bytes)


class PendingDebugFile:
    """A companion written to a temporary file beside its target, installed once the stripped binary is."""

    def __init__(self, target: str, written: DebugFile) -> None:
        self.target = target
        self.written = written
        self.installed = False

    @property
    def link(self) -> DebugLink:
        return DebugLink(os.path.basename(self.target), self.written.crc32)

    def install(self, *, like: str, preserve_dates: bool = False) -> DebugFile:
        fileops.install(self.written.path, self.target, like=like, preserve_dates=preserve_dates)
        self.installed = True
        return DebugFile(self.target, self.written.size, self.written.crc32, self.written.debug_bytes)

    def discard(self) -> None:
        if not self.installed:
            fileops.discard(self.written.path)


def prepare_debug_file(
    source: str, target: str, *, level: str = "all", output: str | None = None, temp_path: str | None = None
) -> PendingDebugFile:
    """Check that ``source`` can be split, and write its companion to ``temp_path`` (by default a new
    temporary file beside ``target``), ready to be installed at ``target``."""
    if level == "sections":
        raise file_error(
            source,
            "--keep-debug links the companion through a section, so it cannot be"
            " combined with --strip-section-headers",
            UnsupportedError,
        )
    # The companion replaces the name ``target`` in its real folder: through a link to the binary's folder
    # (``alias/prog``) that name is the input or the output itself.
    folder, name = os.path.split(os.path.abspath(target))
    landing = os.path.join(os.path.realpath(folder), name)
    for other in (source, output):
        if other is not None and (
            os.path.abspath(other) == os.path.abspath(target) or os.path.realpath(other) == landing
        ):
            raise file_error(source, f"the debug file {target} would overwrite the binary", UnsupportedError)
    with ElfFile(source) as elf:
        check_splittable(elf)
        tmp = temp_path if temp_path is not None else fileops.temp_path_beside(target)
        try:
            written = write_debug_file_to(elf, tmp, name=target)
        except BaseException:
            fileops.discard(tmp)
            raise
    return PendingDebugFile(target, written)


def with_debuglink(elf: ElfFile, sections: Sequence[OutputSection], link: DebugLink) -> list[OutputSection]:
    """``sections`` with .gnu_debuglink pointing at ``link``: an existing one gets the new contents, else a
    new section goes before the section name table when that is last (where objcopy puts it), else last."""
    data = link.section_data(elf.layout.little_endian)
    result = list(sections)
    for out in result:
        if out.original.name == DEBUGLINK_SECTION and out.original.index:
            out.content, out.content_size = (lambda: [data]), len(data)
            return result
    added = added_section(elf, DEBUGLINK_SECTION, data, align=4)
    names = elf.header.e_shstrndx
    if result and names and result[-1].original.index == names:
        result.insert(len(result) - 1, added)
    else:
        result.append(added)
    return result
