"""Write a new ELF layout: the loaded prefix unchanged, kept sections appended, new names and section table.

The output is built from ranges of the input file and a few generated buffers; no step needs a big input's
contents in memory (a small one, read whole, is written from one buffer: see _Output).
"""

from __future__ import annotations

import functools
import os
import struct
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Callable

from .._record import Record
from ..errors import UnsupportedError, file_error
from . import constants as c
from .copy import copy_range, write_all
from .reader import NAME_ENCODING, ElfFile, Section, Segment

_ZERO_SCAN_CHUNK = 1 << 20
# Up to this size an output is built in memory and written with one call (see _Output).
BUFFERED_OUTPUT_BYTES = 1 << 20


class OutputSection:
    """A section as it will appear in the output. ``content`` replaces the input's bytes when set;
    ``sh_offset`` is set by plan_layout."""

    __slots__ = ("original", "sh_link", "sh_info", "content", "content_size", "sh_offset")

    def __init__(
        self,
        original: Section,
        sh_link: int,
        sh_info: int,
        content: Callable[[], Iterable[bytes]] | None = None,
        content_size: int | None = None,
    ) -> None:
        self.original = original
        self.sh_link = sh_link
        self.sh_info = sh_info
        self.content = content
        self.content_size = content_size
        self.sh_offset = 0

    @property
    def size(self) -> int:
        return self.original.sh_size if self.content_size is None else self.content_size


class WrittenLayout(Record):
    size: int
    overlay: int
    section_count: int


def align_up(value: int, alignment: int) -> int:
    if alignment <= 1:
        return value
    return (value + alignment - 1) // alignment * alignment


def build_string_table(names: Iterable[str]) -> tuple[bytes, dict[str, int]]:
    """A string table with suffix merging (".rela.dyn" also serves ".dyn"), as the GNU linker builds it."""
    unique = sorted({n for n in names if n}, key=lambda n: n[::-1], reverse=True)
    table = bytearray(b"\0")
    offsets = {"": 0}
    previous, previous_offset = "", 0
    for name in unique:
        if previous.endswith(name):
            offsets[name] = previous_offset + len(previous) - len(name)
            continue
        previous, previous_offset = name, len(table)
        offsets[name] = previous_offset
        table += name.encode(NAME_ENCODING) + b"\0"
    return bytes(table), offsets


@functools.lru_cache(maxsize=32)
def _section_name_table(names: tuple[str, ...]) -> tuple[bytes, Mapping[str, int]]:
    """build_string_table for section names, remembered: the files of a tree mostly share their set of
    section names (one toolchain), and sorting them anew for each costs a small strip more than its copy."""
    table, offsets = build_string_table(names)
    return table, MappingProxyType(offsets)


class LoadedBlock(Record):
    """A run of the input that segments (or the ELF and program headers) cover, copied as one piece.

    Each block after the first moves down to the lowest offset past the previous one that keeps ``start``'s
    remainder modulo the block's segment alignment (as GNU strip moves segments), so every p_offset stays
    congruent to its p_vaddr and every loaded byte is the same; the padding between segments goes.
    """

    start: int
    end: int
    new_start: int
    alignment: int

    @property
    def delta(self) -> int:
        return self.new_start - self.start

    @property
    def new_end(self) -> int:
        return self.new_start + self.end - self.start

    def holds(self, start: int, end: int) -> bool:
        return self.start <= start and end <= self.end


class EmptiedSegment(Record):
    """A PT_LOAD whose file bytes the output drops from some point on (see ElfFile.unused_tails): p_filesz
    becomes ``filesz``; p_memsz stays, so the address space does too. One that keeps nothing gets the
    p_offset ``new_offset``, still congruent to p_vaddr; the others (``new_offset`` -1) move with their
    block."""

    index: int  # type: ignore[assignment]  # the segment's number; shadows tuple.index on purpose
    size: int  # the file bytes dropped
    new_offset: int
    filesz: int


def loaded_blocks(elf: ElfFile) -> tuple[tuple[LoadedBlock, ...], tuple[EmptiedSegment, ...]]:
    """The blocks of loaded bytes placed for the output, and the segments whose unused ends it drops."""
    tails = elf.unused_tails
    ranges = sorted(
        [(0, elf.pinned_header_end)]
        + [
            (p.p_offset, p.p_offset + tails.get(p.index, p.p_filesz))
            for p in elf.segments
            if p.p_filesz and tails.get(p.index) != 0
        ]
    )
    merged: list[list[int]] = []
    for start, end in ranges:
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    if merged[-1][0] < elf.loaded_end:
        merged[-1][1] = min(merged[-1][1], elf.loaded_end)  # less a last segment's zero padding
    if merged[0][1] < elf.pinned_header_end:
        # The program headers lie behind other bytes and must stay there (a segment covers them): they name
        # every segment's offset, so nothing moves and nothing is dropped.
        merged = [[0, max(end for _, end in merged)]]
        tails = {}
    blocks: list[LoadedBlock] = []
    position = 0
    for start, end in merged:
        inside = [p for p in elf.segments if p.p_filesz and start <= p.p_offset < end]
        alignment = max(
            [p.p_align for p in inside if p.p_type == c.PT_LOAD] or [p.p_align for p in inside] or [1]
        )
        alignment = max(1, alignment)
        new_start = start if not blocks else position + (start - position) % alignment
        blocks.append(LoadedBlock(start, end, new_start, alignment))
        position = new_start + end - start
    emptied = []
    for index, kept in sorted(tails.items()):
        segment = elf.segments[index]
        new_offset = -1
        if not kept:
            before = [b for b in blocks if b.start <= segment.p_offset]
            # Inside the file, at or below the previous block's end: with no file bytes it overlaps nothing.
            align = segment.p_align
            new_offset = before[-1].new_end // align * align + segment.p_vaddr % align
        emptied.append(EmptiedSegment(index, segment.p_filesz - kept, new_offset, kept))
    return tuple(blocks), tuple(emptied)


class LayoutPlan(Record):
    """Where everything of an output goes; plan_layout also sets each OutputSection's sh_offset."""

    size: int
    names_offset: int
    table_offset: int
    names: bytes
    name_offsets: Mapping[str, int]
    blocks: tuple[LoadedBlock, ...]
    emptied: tuple[EmptiedSegment, ...]
    phoff: int  # where the program header table goes: moved after the loaded blocks when phdrs_movable


def plan_size(elf: ElfFile, sections: Sequence[OutputSection]) -> int:
    """The output size write_layout would produce, without writing anything."""
    return plan_layout(elf, sections).size


def plan_layout(elf: ElfFile, sections: Sequence[OutputSection]) -> LayoutPlan:
    """Give every output section its offset, and place the loaded blocks, names and section table."""
    blocks, emptied = loaded_blocks(elf)
    position = blocks[-1].new_end
    phoff = elf.header.e_phoff
    if elf.phdrs_movable:
        # No segment maps the table, so it need not stay behind the sections that go: it follows the loaded
        # bytes, and e_phoff says where.
        phoff = align_up(position, elf.layout.word_size)
        position = phoff + elf.header.e_phnum * elf.layout.phdr.size
    shstrndx = elf.header.e_shstrndx
    body = [s for s in sections if s.original.index not in (0, shstrndx)]
    for out in sorted(body, key=lambda s: (s.original.sh_offset, s.original.index)):
        original = out.original
        at = original.sh_offset
        if not original.has_file_bytes or out.size == 0:
            delta = _delta_at(blocks, at, at)
            out.sh_offset = at + delta if delta is not None else position
            continue
        delta = _delta_at(blocks, at, at + original.sh_size) if out.content is None else None
        if delta is not None:
            out.sh_offset = at + delta
        else:
            out.sh_offset = align_up(position, max(1, original.sh_addralign))
            position = out.sh_offset + out.size
    names, name_offsets = _section_name_table(tuple(s.original.name for s in sections))
    names_offset = position
    if shstrndx:
        position += len(names)
    table_offset = align_up(position, elf.layout.word_size)
    position = table_offset + len(sections) * elf.layout.shdr.size
    return LayoutPlan(
        position + elf.overlay_size, names_offset, table_offset, names, name_offsets, blocks, emptied, phoff
    )


def _delta_at(blocks: Sequence[LoadedBlock], start: int, end: int) -> int | None:
    """How far the first loaded block holding ``start``..``end`` moves, or None when none holds it."""
    for block in blocks:
        if block.holds(start, end):
            return block.delta
    return None


class _Output:
    """Where the writer puts bytes: straight into the file (copy_file_range, pwrite), or, for an input read
    whole (ElfFile.data) and an output of at most BUFFERED_OUTPUT_BYTES, into one buffer that ``finish``
    writes with a single call: a small file then costs one write instead of dozens of system calls."""

    def __init__(self, elf: ElfFile, fd: int, size: int) -> None:
        self.elf = elf
        self.fd = fd
        self.buffer = bytearray(size) if elf.data is not None and size <= BUFFERED_OUTPUT_BYTES else None
        if os.fstat(fd).st_size:  # truncating an empty file would make ext4 flush it at close
            os.ftruncate(fd, 0)

    def copy(self, src_offset: int, dst_offset: int, length: int) -> None:
        """``length`` bytes of the input at ``src_offset``, to ``dst_offset``."""
        if self.buffer is None:
            copy_range(self.elf.fd, self.fd, src_offset, dst_offset, length)
        else:
            self.buffer[dst_offset : dst_offset + length] = self.elf.read(src_offset, length)

    def write(self, data: bytes, offset: int) -> None:
        if self.buffer is None:
            write_all(self.fd, data, offset)
        else:
            self.buffer[offset : offset + len(data)] = data

    def pad(self, start: int, end: int) -> None:
        """Zeros from ``start`` to ``end`` (a buffer starts as zeros)."""
        if end > start and self.buffer is None:
            write_all(self.fd, bytes(end - start), start)

    def finish(self) -> None:
        if self.buffer is not None:
            write_all(self.fd, self.buffer, 0)


def write_unchanged(elf: ElfFile, dst_fd: int) -> None:
    """The input as it is, byte for byte: from memory when it was read whole, else copied in the kernel."""
    out = _Output(elf, dst_fd, elf.size)
    out.copy(0, 0, elf.size)
    out.finish()


def write_layout(
    elf: ElfFile, sections: Sequence[OutputSection], dst_fd: int, plan: LayoutPlan | None = None
) -> WrittenLayout:
    """Write ``sections`` (section 0 first, in output index order) to ``dst_fd``, following ``plan`` when
    the caller already made it with plan_layout for these same sections."""
    if plan is None:
        plan = plan_layout(elf, sections)
    out = _Output(elf, dst_fd, plan.size)
    position = _write_loaded(elf, out, plan)
    position = _write_sections(elf, out, sections, plan, position)
    shstrndx_old = elf.header.e_shstrndx
    if shstrndx_old:
        out.pad(position, plan.names_offset)
        out.write(plan.names, plan.names_offset)
        position = plan.names_offset + len(plan.names)
    new_index = {s.original.index: i for i, s in enumerate(sections)}
    shstrndx_new = new_index.get(shstrndx_old, 0)
    table = _section_table(elf, sections, plan, shstrndx_new)
    out.pad(position, plan.table_offset)
    out.write(table, plan.table_offset)
    position = plan.table_offset + len(table)
    if elf.overlay_size:
        out.copy(elf.image_end, position, elf.overlay_size)
        position += elf.overlay_size
    assert position == plan.size, (position, plan.size)

    _patch_program_headers(elf, out, plan)
    count = len(sections)
    _patch_section_table_fields(
        elf,
        out,
        plan.table_offset,
        count if count < c.SHN_LORESERVE else 0,
        shstrndx_new if shstrndx_new < c.SHN_LORESERVE else c.SHN_XINDEX,
    )
    out.finish()
    return WrittenLayout(size=plan.size, overlay=elf.overlay_size, section_count=count)


def _write_loaded(elf: ElfFile, out: _Output, plan: LayoutPlan) -> int:
    """The loaded blocks at their new offsets, and a movable program header table after them; returns
    where the output has reached."""
    position = 0
    for block in plan.blocks:
        out.pad(position, block.new_start)
        out.copy(block.start, block.new_start, block.end - block.start)
        position = block.new_end
    if elf.phdrs_movable:  # written even where it lands at its old offset: no block copied it
        layout, phoff = elf.layout, plan.phoff
        out.pad(position, phoff)
        out.copy(elf.header.e_phoff, phoff, elf.header_end - elf.header.e_phoff)
        position = elf.header_end - elf.header.e_phoff + phoff
        at, fmt = layout.e_phoff_at
        out.write(struct.pack(layout.order + fmt, phoff), at)
    return position


def _write_sections(
    elf: ElfFile, out: _Output, sections: Sequence[OutputSection], plan: LayoutPlan, position: int
) -> int:
    """Every kept section that no loaded block carried, at its planned offset; returns where the output
    has reached."""
    shstrndx_old = elf.header.e_shstrndx
    for section in sorted(sections[1:], key=lambda s: s.sh_offset):
        original = section.original
        if original.index == shstrndx_old or section.sh_offset < position or section.size == 0:
            continue
        if not original.has_file_bytes:
            continue
        out.pad(position, section.sh_offset)
        if section.content is None:
            out.copy(original.sh_offset, section.sh_offset, section.size)
        else:
            written = 0
            for chunk in section.content():
                out.write(chunk, section.sh_offset + written)
                written += len(chunk)
            if written != section.size:
                raise AssertionError(
                    f"section {original.name}: wrote {written} bytes, planned {section.size}"
                )
        position = section.sh_offset + section.size
    return position


def _section_table(
    elf: ElfFile, sections: Sequence[OutputSection], plan: LayoutPlan, shstrndx_new: int
) -> bytes:
    """The output's section header table, renumbered and pointing at the planned offsets."""
    layout = elf.layout
    shstrndx_old = elf.header.e_shstrndx
    name_offsets = plan.name_offsets
    count = len(sections)
    pack = layout.shdr.pack
    table = bytearray()
    for i, out in enumerate(sections):
        original = out.original
        if i == 0:
            # Extended numbering: counts that do not fit the ELF header live in section 0.
            size = count if count >= c.SHN_LORESERVE else 0
            link = shstrndx_new if shstrndx_new >= c.SHN_LORESERVE else 0
            # Everything else is zero (gABI), but sh_info: it holds the segment count when e_phnum is PN_XNUM.
            info = original.sh_info if elf.phnum_in_section0 else 0
            table += pack(0, c.SHT_NULL, 0, 0, 0, size, link, info, 0, 0)
            continue
        if original.index == shstrndx_old:  # the names, rebuilt where plan_layout put them
            offset, size, link, info = plan.names_offset, len(plan.names), 0, original.sh_info
        else:
            offset, size, link, info = out.sh_offset, out.size, out.sh_link, out.sh_info
        table += pack(
            name_offsets[original.name],
            original.sh_type,
            original.sh_flags,
            original.sh_addr,
            offset,
            size,
            link,
            info,
            original.sh_addralign,
            original.sh_entsize,
        )
    return bytes(table)


def _patch_program_headers(elf: ElfFile, out: _Output, plan: LayoutPlan) -> None:
    """p_offset and p_filesz of the segments that moved, lost a zero tail or an unused end."""
    phoff = plan.phoff
    _patch_zero_tail(elf, out, phoff)
    _patch_segment_offsets(elf, out, plan.blocks, phoff)
    zero_tail = elf.zero_tail
    for segment in plan.emptied:
        if segment.new_offset >= 0:
            _patch_offset(elf, out, phoff, segment.index, segment.new_offset)
        filesz = segment.filesz
        if zero_tail is not None and zero_tail[0].index == segment.index:
            filesz = min(filesz, zero_tail[1] - zero_tail[0].p_offset)
        _patch_filesz(elf, out, phoff, segment.index, filesz)


def added_section(
    elf: ElfFile, name: str, data: bytes, *, sh_type: int = c.SHT_PROGBITS, align: int = 1, number: int = 0
) -> OutputSection:
    """A new, unloaded section holding ``data``, written after every section taken from the input.

    Its ``original`` is a synthetic Section numbered past the input's sections (``number`` tells several
    added sections apart) and placed at the input's end, so offsets and renumbering treat it as the last.
    """
    synthetic = Section(
        len(elf.sections) + number, name, 0, sh_type, 0, 0, elf.size, len(data), 0, 0, align, 0
    )
    return OutputSection(synthetic, 0, 0, content=lambda: [data], content_size=len(data))


def headerless_end(elf: ElfFile) -> tuple[int, Segment | None]:
    """Where write_headerless ends the image, and the segment whose p_filesz then shrinks.

    After the headers and every segment's file bytes, less the zero bytes that end the last PT_LOAD (as
    ``sstrip -z`` does): the loader zero-fills a PT_LOAD's memory from p_filesz to p_memsz. Unlike sstrip,
    no other segment loses bytes, so only that one p_filesz changes.
    """
    end = elf.segments_end
    last = [p for p in elf.segments if p.p_filesz and p.file_end == end]
    if len(last) != 1 or last[0].p_type != c.PT_LOAD or last[0].p_memsz < last[0].p_filesz:
        return end, None
    segment = last[0]
    floor = max(
        [elf.header_end, segment.p_offset]
        + [p.file_end for p in elf.segments if p.p_filesz and p is not segment]
    )
    new_end = end
    while new_end > floor:
        start = max(floor, new_end - _ZERO_SCAN_CHUNK)
        chunk = elf.read(start, new_end - start)
        kept = len(chunk.rstrip(b"\0"))
        new_end = start + kept
        if kept:
            break
    return new_end, (segment if new_end < end else None)


def headerless_size(elf: ElfFile) -> int:
    """The output size write_headerless would produce."""
    return headerless_end(elf)[0] + elf.overlay_size


def write_headerless(elf: ElfFile, dst_fd: int) -> WrittenLayout:
    """Write only what the program headers cover (sstrip): no section header table, nothing that no segment
    maps, the file ending with the last segment's last non-zero byte. An overlay is kept after it, byte for
    byte."""
    end, trimmed = headerless_end(elf)
    out = _Output(elf, dst_fd, end + elf.overlay_size)
    out.copy(0, 0, end)
    position = end
    if elf.overlay_size:
        out.copy(elf.image_end, position, elf.overlay_size)
        position += elf.overlay_size
    if trimmed is not None:
        _patch_filesz(elf, out, elf.header.e_phoff, trimmed.index, end - trimmed.p_offset)
    _patch_section_table_fields(elf, out, 0, 0, 0)
    out.finish()
    return WrittenLayout(size=position, overlay=elf.overlay_size, section_count=0)


def _patch_zero_tail(elf: ElfFile, out: _Output, phoff: int) -> None:
    tail = elf.zero_tail
    if tail is not None:
        segment, new_end = tail
        _patch_filesz(elf, out, phoff, segment.index, new_end - segment.p_offset)


def _patch_section_table_fields(elf: ElfFile, out: _Output, shoff: int, shnum: int, shstrndx: int) -> None:
    layout = elf.layout
    shoff_at, shoff_fmt = layout.e_shoff_at
    phdrs_start = elf.header.e_phoff
    phdrs_end = phdrs_start + elf.header.e_phnum * layout.phdr.size
    if elf.header.e_phnum and phdrs_start < layout.e_shstrndx_at + 2 and shoff_at < phdrs_end:
        # Patching these fields would rewrite program headers that share their bytes.
        raise file_error(
            elf.path, "the program headers overlap the ELF header's section table fields", UnsupportedError
        )
    out.write(struct.pack(layout.order + shoff_fmt, shoff), shoff_at)
    out.write(struct.pack(layout.order + "H", shnum), layout.e_shnum_at)
    out.write(struct.pack(layout.order + "H", shstrndx), layout.e_shstrndx_at)


def _patch_segment_offsets(elf: ElfFile, out: _Output, blocks: Sequence[LoadedBlock], phoff: int) -> None:
    """Point the program headers of moved blocks at their new place (the table, at ``phoff``, is in block 0
    or was moved whole)."""
    for segment in elf.segments:
        block = next((b for b in blocks if b.start <= segment.p_offset < b.end), None)
        if block is not None and block.delta and segment.p_filesz:
            _patch_offset(elf, out, phoff, segment.index, segment.p_offset + block.delta)


def _patch_offset(elf: ElfFile, out: _Output, phoff: int, segment_index: int, offset: int) -> None:
    layout = elf.layout
    at, fmt = (8, "Q") if layout.is64 else (4, "I")  # p_offset
    entry = phoff + segment_index * layout.phdr.size
    out.write(struct.pack(layout.order + fmt, offset), entry + at)


def _patch_filesz(elf: ElfFile, out: _Output, phoff: int, segment_index: int, filesz: int) -> None:
    layout = elf.layout
    entry = phoff + segment_index * layout.phdr.size
    # p_filesz is the 6th field of Elf64_Phdr (offset 32) and the 5th of Elf32_Phdr (offset 16).
    at, fmt = (32, "Q") if layout.is64 else (16, "I")
    out.write(struct.pack(layout.order + fmt, filesz), entry + at)
