"""The strip stage: plan which sections go at each level (stripplan), then write the result with the ELF
writer; the "sections" level goes to sstrip, --keep-debug's companion to debuginfo."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from . import fileops
from .elf.reader import ElfFile
from .elf.writer import LayoutPlan, plan_layout, plan_size, write_layout, write_unchanged
from .errors import UnsupportedError, byte_count, file_error
from .stripplan import (
    DEBUG,
    HEADERS,
    LEVELS,
    NOTES,
    ORPHANS,
    OTHER,
    SYMBOLS,
    KeptNote,
    RemovedSection,
    StripPlan,
    StripResult,
    _has_symbols,
    _kept_notes,
    _output_sections,
    _saved_by_section,
    classify,
    is_debug_section,
    plan_strip,
)

if TYPE_CHECKING:
    from .debuginfo import DebugLink

__all__ = [
    "DEBUG",
    "HEADERS",
    "LEVELS",
    "NOTES",
    "ORPHANS",
    "OTHER",
    "SYMBOLS",
    "KeptNote",
    "RemovedSection",
    "StripPlan",
    "StripResult",
    "classify",
    "is_debug_section",
    "plan_strip",
    "planned_size",
    "strip",
    "strip_to_fd",
]


def strip_to_fd(
    input: str | ElfFile,
    dst_fd: int,
    *,
    output_name: str = "",
    level: str = "all",
    keep_sections: Sequence[str] = (),
    remove_sections: Sequence[str] = (),
    debuglink: DebugLink | None = None,
    force: bool = False,
) -> StripResult:
    """Strip ``input`` (a path, or an ElfFile the caller has open) into the open, empty file ``dst_fd``.
    The input is never modified.

    ``debuglink`` adds (or updates) a .gnu_debuglink section naming a companion file. ``force`` lets the
    "sections" level drop a shared library's section headers.
    """
    if not isinstance(input, ElfFile):
        with ElfFile(input) as elf:
            return strip_to_fd(
                elf,
                dst_fd,
                output_name=output_name,
                level=level,
                keep_sections=keep_sections,
                remove_sections=remove_sections,
                debuglink=debuglink,
                force=force,
            )
    elf = input
    try:
        result = _strip_open(
            elf, dst_fd, output_name, level, keep_sections, remove_sections, debuglink, force
        )
    except EOFError as exc:
        raise file_error(elf.path, "changed while being read") from exc
    after = os.fstat(elf.fd)
    if (after.st_size, after.st_mtime_ns) != (elf.stat.st_size, elf.stat.st_mtime_ns):
        raise file_error(elf.path, "changed while being read")
    return result


def _strip_open(
    elf: ElfFile,
    dst_fd: int,
    output_name: str,
    level: str,
    keep_sections: Sequence[str],
    remove_sections: Sequence[str],
    debuglink: DebugLink | None,
    force: bool,
) -> StripResult:
    input_path = elf.path
    if level == "sections":
        from .sstrip import strip_section_headers

        if keep_sections or debuglink is not None:
            raise file_error(
                input_path,
                "--strip-section-headers keeps no sections, so neither"
                " --keep-section nor --keep-debug (.gnu_debuglink) can be combined with it",
                UnsupportedError,
            )
        return strip_section_headers(elf, dst_fd, output_name=output_name, force=force)
    plan = plan_strip(elf, level, keep_sections, remove_sections)
    messages = list(plan.messages)
    if elf.overlay_size:
        overlay = byte_count(elf.overlay_size)
        messages.append(f"overlay of {overlay} after the ELF image kept byte for byte")
    # Always laid out anew: padding between segments and unused segment bytes go even when no section does.
    outputs = _output_sections(plan)
    if debuglink is not None:
        from .debuginfo import with_debuglink

        outputs = with_debuglink(elf, outputs, debuglink)
    layout = plan_layout(elf, outputs)
    if debuglink is None and layout.size >= elf.size:
        # Nothing to gain: the output is the input, byte for byte (stripping twice changes nothing).
        return _unchanged(elf, plan, dst_fd, output_name, messages)
    written = write_layout(elf, outputs, dst_fd, layout)
    removed = _removed(elf, plan, layout)
    headers = elf.size - written.size - sum(r.size for r in removed)
    if headers > 0:
        removed.append(RemovedSection("(section headers, names and padding)", HEADERS, headers))
    elif headers < 0:
        messages.append(f"section headers, names and alignment take {-headers:,} B more than before")
    return StripResult(
        input_path,
        output_name,
        level,
        elf.size,
        written.size,
        tuple(removed),
        written.overlay,
        _kept_notes(elf, plan),
        tuple(messages),
        elf.is_relocatable,
    )


def _unchanged(
    elf: ElfFile, plan: StripPlan, dst_fd: int, output_name: str, messages: list[str]
) -> StripResult:
    """The input copied as it is, and why nothing was gained."""
    write_unchanged(elf, dst_fd)
    if plan.removed:
        names = ", ".join(sorted({elf.sections[i].name or "?" for i in plan.removed}))
        messages.append(f"removing {names} would save nothing after alignment")
    elif plan.level == "debug" and not elf.is_relocatable and _has_symbols(elf):
        messages.append("no debug sections; --strip-debug keeps the symbol table")
    return StripResult(
        elf.path,
        output_name,
        plan.level,
        elf.size,
        elf.size,
        (),
        elf.overlay_size,
        _kept_notes(elf, plan),
        tuple(messages),
        elf.is_relocatable,
        changed=False,
        fully_stripped=not _has_symbols(elf) and not any(is_debug_section(s) for s in elf.sections),
    )


def _removed(elf: ElfFile, plan: StripPlan, layout: LayoutPlan) -> list[RemovedSection]:
    """What each removed section saved, and the unused segment ends the layout dropped."""
    removed = _saved_by_section(plan, layout.blocks)
    for e in layout.emptied:
        segment = elf.segments[e.index]
        where = "" if e.new_offset >= 0 else "end of "
        address = segment.p_vaddr + e.filesz
        removed.append(RemovedSection(f"(unused {where}PT_LOAD #{e.index} at {address:#x})", ORPHANS, e.size))
    return removed


def strip(
    input: str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
    *,
    level: str = "all",
    keep_sections: Sequence[str] = (),
    remove_sections: Sequence[str] = (),
    preserve_dates: bool = False,
    keep_debug: str | os.PathLike[str] | None = None,
    force: bool = False,
) -> StripResult:
    """Strip ``input`` into ``output`` (in place when None), atomically: on error the target is untouched.

    ``keep_debug``: first write the debug information to this companion file, then link the output to it
    (see debuginfo.py). The companion is installed only when the output is.
    """
    source = os.fspath(input)
    fileops.check_input(source)
    if output is None:
        target = fileops.in_place_target(source)
    else:
        target = fileops.resolve_output(os.fspath(output))
        fileops.check_output(target)
    companion = None
    if keep_debug is not None:
        from .debuginfo import prepare_debug_file

        companion = prepare_debug_file(source, os.fspath(keep_debug), level=level, output=target)
    # Written through a FIFO or device, the output goes first (see slim._install).
    streamed = fileops.written_through(target)
    try:
        with fileops.atomic_target(target, like=source, preserve_dates=preserve_dates) as tmp:
            with fileops.open_new(tmp, name=target) as fd:
                result = strip_to_fd(
                    source,
                    fd,
                    output_name=target,
                    level=level,
                    keep_sections=keep_sections,
                    remove_sections=remove_sections,
                    debuglink=companion.link if companion is not None else None,
                    force=force,
                )
            if companion is not None and not streamed:
                result = result._replace(debug_file=companion.install(like=source))
        if companion is not None and streamed:
            result = result._replace(debug_file=companion.install(like=source))
        return result
    finally:
        if companion is not None:
            companion.discard()


def planned_size(elf: ElfFile, level: str, *, force: bool = False) -> int:
    """The size strip_to_fd would give ``elf`` at ``level``, without writing anything. Raises what
    strip_to_fd would raise for a level it refuses."""
    if level == "sections":
        from .elf.writer import headerless_size
        from .sstrip import check_headerless

        check_headerless(elf, force=force)
        return min(elf.size, headerless_size(elf))
    plan = plan_strip(elf, level)
    return min(elf.size, plan_size(elf, _output_sections(plan)))
