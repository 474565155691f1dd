"""Static checks: compare a slimmed ELF with its original without running anything.

For a stripped (not packed) result every byte a program header maps from the file, the entry point, the
interpreter, DT_NEEDED, DT_SONAME and the build-id must be unchanged; for a UPX-packed one only the ELF
identity.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO, cast

from elftools.common.exceptions import ELFError
from elftools.construct import ConstructError
from elftools.elf.dynamic import DynamicSegment
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import NoteSection
from elftools.elf.segments import InterpSegment, NoteSegment

from ..errors import BinslimError, MalformedELFError, NotELFError, VerificationError, file_error

_CHUNK = 1 << 20
# pyelftools signals bad input with ELFError, but malformed tables also surface as these.
_PARSE_ERRORS = (ELFError, ConstructError, ValueError, LookupError, struct.error, EOFError)


@dataclass(frozen=True)
class ElfFacts:
    """What the checks compare, read once. Header values as pyelftools gives them (names for enums)."""

    path: str
    is64: bool
    little_endian: bool
    header: dict[str, Any]
    segments: tuple[dict[str, Any], ...]
    interp: str | None
    needed: tuple[str, ...]
    soname: str | None
    build_id: str | None


# Fields of the ELF header that stripping may change: they only locate the section header table.
_SECTION_TABLE_FIELDS = ("e_shoff", "e_shentsize", "e_shnum", "e_shstrndx")
_HEADER_FIELDS = (
    "e_type",
    "e_machine",
    "e_version",
    "e_entry",
    "e_phoff",
    "e_flags",
    "e_ehsize",
    "e_phentsize",
    "e_phnum",
)
_SEGMENT_FIELDS = ("p_type", "p_flags", "p_offset", "p_vaddr", "p_paddr", "p_filesz", "p_memsz", "p_align")


def static_check(original: str | os.PathLike[str], result: str | os.PathLike[str], *, packed: bool) -> None:
    """Check ``result`` against ``original`` without running anything.

    Raises NotELFError or MalformedELFError when the original cannot be read as ELF, and VerificationError
    (naming the result and what changed) when the result cannot be read or differs where it must not.
    For a UPX-packed result only the ELF identity (class, byte order, machine) is compared.
    """
    check(os.fspath(original), os.fspath(result), packed=packed)


def check(original: str, result: str, *, packed: bool) -> ElfFacts:
    """``static_check`` that returns the original's facts."""
    before = read_facts(original, full=True, error=MalformedELFError)
    after = read_facts(result, full=not packed, error=VerificationError)

    def fail(problem: str) -> VerificationError:
        return VerificationError(f"{result}: {problem}")

    if (before.is64, before.little_endian) != (after.is64, after.little_endian):
        raise fail(f"ELF class or byte order changed: {_identity(before)}→{_identity(after)}")
    if before.header["e_machine"] != after.header["e_machine"]:
        raise fail(f"machine changed: {before.header['e_machine']}→{after.header['e_machine']}")
    if packed:
        return before
    if before.header["e_entry"] != after.header["e_entry"]:
        raise fail(f"entry point changed: {before.header['e_entry']:#x}→{after.header['e_entry']:#x}")
    for label, old, new in (
        ("interpreter (PT_INTERP)", before.interp, after.interp),
        ("DT_NEEDED", list(before.needed), list(after.needed)),
        ("DT_SONAME", before.soname, after.soname),
        ("build-id", before.build_id, after.build_id),
    ):
        if old != new:
            raise fail(f"{label} changed: {_show(old)}→{_show(new)}")
    for field in _HEADER_FIELDS:
        if field == "e_phoff" and not _phdrs_covered(before):
            continue  # no segment maps the table, so the strip engine may move it; entries compared below
        if before.header[field] != after.header[field]:
            raise fail(
                f"ELF header {field} changed: {_show(before.header[field])}→{_show(after.header[field])}"
            )
    if len(before.segments) != len(after.segments):
        raise fail(f"number of program headers changed: {len(before.segments)}→{len(after.segments)}")
    trimmed: list[int] = []
    unused: dict[int, int] | None = None
    for index, (old_seg, new_seg) in enumerate(zip(before.segments, after.segments)):
        for field in _SEGMENT_FIELDS:
            if old_seg[field] == new_seg[field]:
                continue
            if field == "p_filesz" and _trims_zeros_only(before, old_seg, new_seg):
                trimmed.append(index)
                continue
            if field == "p_filesz" and new_seg[field] < old_seg[field]:
                if unused is None:
                    unused = _unused_tails(before.path)
                if index in unused and _drops_unused_only(before, old_seg, new_seg, unused[index]):
                    trimmed.append(index)  # nothing refers to the dropped bytes; p_memsz is unchanged
                    continue
            if field == "p_offset" and (new_seg[field] - old_seg[field]) % max(1, old_seg["p_align"]) == 0:
                continue  # moved down over removed sections, still congruent to p_vaddr; bytes compared below
            raise fail(
                f"segment {index} ({old_seg['p_type']}) {field} changed: "
                f"{_show(old_seg[field])}→{_show(new_seg[field])}"
            )
    _compare_segment_bytes(before, after, trimmed, fail)
    return before


def _phdrs_covered(facts: ElfFacts) -> bool:
    """Whether a segment names or maps the program header table: a PT_PHDR, or any byte of it in a
    segment's file bytes. Only a table covered by none may move (ElfFile.phdrs_movable)."""
    start = facts.header["e_phoff"]
    end = start + facts.header["e_phnum"] * facts.header["e_phentsize"]
    return any(
        seg["p_type"] == "PT_PHDR"
        or (seg["p_filesz"] and seg["p_offset"] < end and start < seg["p_offset"] + seg["p_filesz"])
        for seg in facts.segments
    )


def _unused_tails(original: str) -> dict[int, int]:
    """{segment: file bytes to keep} of the PT_LOADs whose ends the strip engine may drop
    (ElfFile.unused_tails), judged afresh from the original."""
    from ..elf.reader import ElfFile

    with ElfFile(original) as elf:
        return dict(elf.unused_tails)


def _drops_unused_only(facts: ElfFacts, old_seg: dict[str, Any], new_seg: dict[str, Any], kept: int) -> bool:
    """The segment keeps at least its used bytes, and whatever else it lost is zeros."""
    new_size = new_seg["p_filesz"]
    if new_size >= kept:
        return bool(new_size < old_seg["p_filesz"])
    with open(facts.path, "rb") as handle:
        dropped = _read_at(handle, old_seg["p_offset"] + new_size, kept - new_size)
    return bool(dropped.count(0) == kept - new_size)


def _trims_zeros_only(facts: ElfFacts, old_seg: dict[str, Any], new_seg: dict[str, Any]) -> bool:
    """A PT_LOAD whose file part now stops before trailing zero bytes maps the same memory: the loader
    zero-fills up to p_memsz. The strip engine trims a last segment's zero padding this way, as GNU strip
    does."""
    old_size, new_size = old_seg["p_filesz"], new_seg["p_filesz"]
    if old_seg["p_type"] != "PT_LOAD" or not 0 < new_size < old_size <= old_seg["p_memsz"]:
        return False
    with open(facts.path, "rb") as handle:
        dropped = _read_at(handle, old_seg["p_offset"] + new_size, old_size - new_size)
    return bool(dropped.count(0) == old_size - new_size)


def _compare_segment_bytes(
    before: ElfFacts, after: ElfFacts, trimmed: Sequence[int], fail: Callable[[str], VerificationError]
) -> None:
    """Every byte a program header maps from the file must be the same, wherever the segment now starts,
    except the header fields that locate the section table and the segments (p_offset, and the p_filesz of
    segments whose zero tail was trimmed)."""
    old_masks, new_masks = _header_masks(before, trimmed), _header_masks(after, trimmed)
    with open(before.path, "rb") as old_file, open(after.path, "rb") as new_file:
        for new_seg, old_seg in zip(after.segments, before.segments):
            size, old_start, new_start = new_seg["p_filesz"], old_seg["p_offset"], new_seg["p_offset"]
            for done in range(0, size, _CHUNK):
                length = min(_CHUNK, size - done)
                old_chunk = _masked(_read_at(old_file, old_start + done, length), old_start + done, old_masks)
                new_chunk = _masked(_read_at(new_file, new_start + done, length), new_start + done, new_masks)
                if len(new_chunk) < len(old_chunk):
                    raise fail(
                        f"file ends at {new_start + done + len(new_chunk):#x}, inside a segment ending at"
                        f" {new_start + size:#x}"
                    )
                if old_chunk != new_chunk[: len(old_chunk)]:
                    position = next(i for i, (a, b) in enumerate(zip(old_chunk, new_chunk)) if a != b)
                    raise fail(_describe_changed_byte(before, old_start + done + position))


def _header_masks(facts: ElfFacts, trimmed: Sequence[int]) -> list[tuple[int, int]]:
    """File spans of the header fields stripping may change in ``facts``' file (e_phoff only where check
    let it change)."""
    masked = _section_table_field_spans(facts.is64)
    masked.append((32, 40) if facts.is64 else (28, 32))  # e_phoff: compared field by field in check
    offset_at, offset_size = (8, 8) if facts.is64 else (4, 4)  # p_offset within a program header
    filesz_at, filesz_size = (32, 8) if facts.is64 else (16, 4)  # p_filesz
    for index in range(len(facts.segments)):
        entry = facts.header["e_phoff"] + index * facts.header["e_phentsize"]
        masked.append((entry + offset_at, entry + offset_at + offset_size))
        if index in trimmed:
            masked.append((entry + filesz_at, entry + filesz_at + filesz_size))
    return masked


def _masked(chunk: bytes, offset: int, spans: Sequence[tuple[int, int]]) -> bytes:
    """``chunk`` (read at ``offset``) with the bytes in ``spans`` zeroed."""
    if not any(low < offset + len(chunk) and offset < high for low, high in spans):
        return chunk
    edited = bytearray(chunk)
    for low, high in spans:
        for at in range(max(low, offset), min(high, offset + len(chunk))):
            edited[at - offset] = 0
    return bytes(edited)


def _describe_changed_byte(facts: ElfFacts, offset: int) -> str:
    holders = [
        (index, seg)
        for index, seg in enumerate(facts.segments)
        if seg["p_offset"] <= offset < seg["p_offset"] + seg["p_filesz"]
    ]
    # Name the loaded segment when there is one: that is what the program sees.
    index, seg = next(((i, s) for i, s in holders if s["p_type"] == "PT_LOAD"), holders[0])
    address = seg["p_vaddr"] + offset - seg["p_offset"]
    return f"segment {index} ({seg['p_type']}) changed at file offset {offset:#x} (address {address:#x})"


def _section_table_field_spans(is64: bool) -> list[tuple[int, int]]:
    if is64:  # e_shoff at 40 (8 bytes); e_shentsize, e_shnum, e_shstrndx at 58..64
        return [(40, 48), (58, 64)]
    return [(32, 36), (46, 52)]


def _read_at(handle: BinaryIO, offset: int, size: int) -> bytes:
    handle.seek(offset)
    return handle.read(size)


def read_facts(path: str, *, full: bool, error: type[BinslimError]) -> ElfFacts:
    """Parse ``path`` with pyelftools. Problems become ``error`` (NotELFError for a non-ELF original)."""
    try:
        handle = open(path, "rb")
    except OSError as exc:
        raise file_error(path, exc.strerror or str(exc), error) from exc
    with handle:
        if handle.read(4) != b"\x7fELF":
            raise file_error(path, "not an ELF file", NotELFError if error is MalformedELFError else error)
        handle.seek(0)
        try:
            return _parse(path, handle, full=full)
        except _PARSE_ERRORS as exc:
            raise file_error(path, f"cannot parse as ELF: {exc}", error) from exc


def _parse(path: str, handle: BinaryIO, *, full: bool) -> ElfFacts:
    elf = ELFFile(handle)
    header = {key: elf.header[key] for key in (*_HEADER_FIELDS, *_SECTION_TABLE_FIELDS)}
    segments: list[dict[str, Any]] = []
    interp: str | None = None
    needed: list[str] = []
    soname: str | None = None
    build_ids: list[str] = []
    if full:
        for segment in elf.iter_segments():
            segments.append({key: segment.header[key] for key in _SEGMENT_FIELDS})
            if isinstance(segment, InterpSegment):
                interp = str(segment.get_interp_name())
            elif isinstance(segment, DynamicSegment):
                for tag in segment.iter_tags():
                    if tag.entry.d_tag == "DT_NEEDED":
                        needed.append(str(cast(Any, tag).needed))
                    elif tag.entry.d_tag == "DT_SONAME":
                        soname = str(cast(Any, tag).soname)
            elif isinstance(segment, NoteSegment):
                build_ids.extend(_build_ids(segment.iter_notes()))
        if not build_ids:  # e.g. an object file: notes only as sections
            for section in elf.iter_sections():
                if isinstance(section, NoteSection):
                    build_ids.extend(_build_ids(section.iter_notes()))
    return ElfFacts(
        path=path,
        is64=elf.elfclass == 64,
        little_endian=bool(elf.little_endian),
        header=header,
        segments=tuple(segments),
        interp=interp,
        needed=tuple(needed),
        soname=soname,
        build_id=build_ids[0] if build_ids else None,
    )


def _build_ids(notes: Any) -> Iterator[str]:
    for note in notes:
        if note["n_type"] == "NT_GNU_BUILD_ID":
            yield str(note["n_desc"])


def _identity(facts: ElfFacts) -> str:
    return f"ELF{64 if facts.is64 else 32} {'little' if facts.little_endian else 'big'}-endian"


def _show(value: Any) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, int):
        return f"{value:#x}"
    return repr(value)
