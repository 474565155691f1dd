"""The "sections" strip level (``--strip-section-headers``), after ELFkickers' sstrip: drop the section
header table and everything no segment covers, and end the file with its last segment.

The loader needs only the program headers, so the program runs the same; but every tool that reads
sections (gdb, objdump, patchelf, libbacktrace, the static linker) no longer can.
"""

from __future__ import annotations

from .elf import constants as c
from .elf.kind import kind_of
from .elf.reader import ElfFile
from .elf.writer import headerless_end, headerless_size, write_headerless, write_unchanged
from .errors import UnsupportedError, byte_count, file_error
from .stripplan import HEADERS, OTHER, RemovedSection, StripResult, plan_strip

SECTIONS = "sections"
TOOLS_WARNING = (
    "section headers dropped: tools that need them (gdb, objdump, patchelf, libbacktrace)"
    " no longer work on the result"
)


def check_headerless(elf: ElfFile, *, force: bool = False) -> None:
    """Raise UnsupportedError when ``elf`` must keep its section headers."""
    if elf.is_relocatable:
        raise file_error(
            elf.path,
            "refusing to drop the section headers of a relocatable object: the linker needs them",
            UnsupportedError,
        )
    if elf.header.e_type not in (c.ET_EXEC, c.ET_DYN):
        raise file_error(
            elf.path,
            f"refusing to drop section headers: ELF type {elf.header.e_type} is not an"
            " executable or shared library",
            UnsupportedError,
        )
    if not elf.segments:
        raise file_error(
            elf.path, "no program headers: dropping section headers would leave nothing", UnsupportedError
        )
    if elf.phnum_in_section0 or elf.header.e_phnum >= c.PN_XNUM:
        raise file_error(
            elf.path,
            "refusing to drop section headers: the program header count lives in"
            " section 0 (extended numbering)",
            UnsupportedError,
        )
    if kind_of(elf).is_shared_library and not force:
        raise file_error(
            elf.path,
            "refusing to drop the section headers of a shared library: the static"
            " linker needs them to link against it (--force drops them anyway; the dynamic"
            " loader does not need them)",
            UnsupportedError,
        )


def strip_section_headers(
    elf: ElfFile, dst_fd: int, *, output_name: str = "", force: bool = False
) -> StripResult:
    """Write ``elf`` without section headers into the open, empty ``dst_fd``."""
    check_headerless(elf, force=force)
    messages = [TOOLS_WARNING]
    if kind_of(elf).is_shared_library:
        messages.append("shared library: the static linker can no longer link against the result")
    if elf.overlay_size:
        messages.append(
            f"overlay of {byte_count(elf.overlay_size)} kept after the last segment,"
            " so the file cannot end there:"
            " --strip-section-headers is pointless for this file, and a program that finds its overlay"
            " through the section header table breaks; prefer --strip-all"
        )
    size = headerless_size(elf)
    if size >= elf.size:
        write_unchanged(elf, dst_fd)
        messages = ["no section headers or unmapped bytes to drop; left unchanged"]
        return StripResult(
            elf.path,
            output_name,
            SECTIONS,
            elf.size,
            elf.size,
            (),
            elf.overlay_size,
            messages=tuple(messages),
            changed=False,
        )
    written = write_headerless(elf, dst_fd)
    removed = _removed(elf)
    rest = elf.size - written.size - sum(r.size for r in removed)
    removed.append(RemovedSection("(section headers, unmapped bytes, trailing zeros)", HEADERS, rest))
    return StripResult(
        elf.path,
        output_name,
        SECTIONS,
        elf.size,
        written.size,
        tuple(removed),
        written.overlay,
        messages=tuple(messages),
    )


def _removed(elf: ElfFile) -> list[RemovedSection]:
    """The unloaded sections, with the bytes each one's removal saved (none when a segment covers it)."""
    end = headerless_end(elf)[0]
    kinds = plan_strip(elf, "all").removed  # what --strip-all would call each of them
    removed = []
    for s in elf.sections:
        if s.index == 0 or s.is_alloc:
            continue
        saved = max(0, s.file_end - max(s.sh_offset, end)) if s.has_file_bytes else 0
        kind = HEADERS if s.index == elf.header.e_shstrndx else kinds.get(s.index, OTHER)
        removed.append(RemovedSection(s.name, kind, saved))
    return removed
