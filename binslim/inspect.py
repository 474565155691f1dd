"""What makes a binary big: its bytes by kind, the largest sections and symbols, and what each binslim
level (and UPX) would do to it.

Every byte of the file is counted exactly once, so the kinds add up to the file size. Headers are read by
our own validated reader; LIEF, which demangles symbol names, runs in a child process on a file that
reader has accepted, so a crash in its C++ core cannot take binslim down.
"""

from __future__ import annotations

import dataclasses
import heapq
import json
import os
import shutil
import struct
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ._version import __version__
from .elf import constants as c
from .elf.kind import kind_of
from .elf.reader import NAME_ENCODING, ElfFile, Section
from .errors import BinslimError, ToolNotFoundError, UnsupportedError
from .runner import Runner, run
from .strip import planned_size
from .stripplan import is_debug_section

SCHEMA_VERSION = 1
# Every kind, in report order; the JSON always has all of them.
KINDS = (
    "headers",
    "code",
    "rodata",
    "data",
    "unwind",
    "dynamic",
    "relocations",
    "symbols",
    "debug",
    "notes",
    "other",
    "padding",
    "overlay",
)
KIND_LABELS = {
    "headers": "ELF, program and section headers, section names",
    "code": "executable code",
    "rodata": "read-only data",
    "data": "initialized writable data",
    "unwind": "unwind and exception tables",
    "dynamic": "dynamic linking tables",
    "relocations": "relocations",
    "symbols": "symbol tables",
    "debug": "debug information",
    "notes": "notes",
    "other": "other unloaded sections",
    "padding": "alignment padding and unused bytes",
    "overlay": "overlay after the ELF image",
}
LEVEL_OPTIONS = (("debug", "--strip-debug"), ("all", "--strip-all"), ("sections", "--strip-section-headers"))
UNWIND_SECTIONS = (".eh_frame", ".eh_frame_hdr", ".gcc_except_table", ".ARM.exidx", ".ARM.extab")
DYNAMIC_TYPES = (
    c.SHT_DYNSYM,
    c.SHT_DYNAMIC,
    c.SHT_HASH,
    c.SHT_GNU_HASH,
    c.SHT_GNU_VERSYM,
    c.SHT_GNU_VERDEF,
    c.SHT_GNU_VERNEED,
)
SYMBOL_TYPES = {0: "notype", 1: "object", 2: "func", 5: "common", 6: "tls", 10: "gnu_ifunc"}
LIEF_TIMEOUT = 120.0
_LIEF_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_lief_symbols.py")


@dataclass(frozen=True)
class SectionSize:
    name: str
    kind: str
    size: int
    offset: int

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "size": self.size, "offset": self.offset}


@dataclass(frozen=True)
class SymbolSize:
    name: str
    size: int
    type: str  # "func", "object", "tls"... (STT_* without the prefix, lower case)
    section: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "size": self.size, "type": self.type, "section": self.section}


@dataclass(frozen=True)
class SymbolReport:
    table: str  # ".symtab", ".dynsym", or "" when there is no symbol table
    count: int  # symbols with a size
    largest: tuple[SymbolSize, ...]
    demangled_by: tuple[str, ...]  # "LIEF" and/or "c++filt"; empty when names are shown as stored
    reason: str = ""  # why there are no symbols, or why LIEF gave no answer

    def to_dict(self) -> dict[str, Any]:
        return {
            "table": self.table or None,
            "count": self.count,
            "demangled_by": list(self.demangled_by),
            "reason": self.reason,
            "largest": [s.to_dict() for s in self.largest],
        }


@dataclass(frozen=True)
class LevelSaving:
    level: str
    option: str
    size: int | None  # the output size at this level; None when binslim refuses the level for this file
    refused: str = ""

    def saved(self, original: int) -> int | None:
        return None if self.size is None else original - self.size

    def to_dict(self, original: int) -> dict[str, Any]:
        return {
            "level": self.level,
            "option": self.option,
            "size": self.size,
            "saved": self.saved(original),
            "refused": self.refused or None,
        }


@dataclass(frozen=True)
class UpxVerdict:
    would_pack: bool
    reason: str  # why not, when it would not
    available: bool
    version: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "would_pack": self.would_pack,
            "reason": self.reason,
            "available": self.available,
            "version": self.version or None,
        }


@dataclass(frozen=True)
class Inspection:
    path: str
    size: int
    description: str
    machine: str
    elf_class: int
    little_endian: bool
    bytes_by_kind: dict[str, int]
    largest_sections: tuple[SectionSize, ...]
    symbols: SymbolReport
    savings: tuple[LevelSaving, ...]
    upx: UpxVerdict

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA_VERSION,
            "binslim": __version__,
            "file": self.path,
            "size": self.size,
            "type": self.description,
            "machine": self.machine,
            "class": f"ELF{self.elf_class}",
            "byte_order": "little-endian" if self.little_endian else "big-endian",
            "bytes_by_kind": dict(self.bytes_by_kind),
            "largest_sections": [s.to_dict() for s in self.largest_sections],
            "symbols": self.symbols.to_dict(),
            "savings": [s.to_dict(self.size) for s in self.savings],
            "upx": self.upx.to_dict(),
        }


def inspect(
    path: str | os.PathLike[str],
    *,
    top: int = 10,
    symbols: bool = True,
    upx: bool = True,
    runner: Runner = run,
) -> Inspection:
    """Inspect ``path``. ``top`` is the length of the largest-sections and largest-symbols lists."""
    source = os.fspath(path)
    with ElfFile(source) as elf:
        by_kind = bytes_by_kind(elf)
        largest = sorted((s for s in elf.sections if s.has_file_bytes), key=lambda s: (-s.sh_size, s.index))
        kinds = section_kinds(elf)
        sections = tuple(SectionSize(s.name, kinds[s.index], s.sh_size, s.sh_offset) for s in largest[:top])
        symbol_report = _symbols(elf, top, runner) if symbols else SymbolReport("", 0, (), (), "not asked")
        savings = tuple(_saving(elf, level, option) for level, option in LEVEL_OPTIONS)
        kind = kind_of(elf)
    return Inspection(
        path=source,
        size=sum(by_kind.values()),
        description=kind.description,
        machine=kind.machine_name,
        elf_class=64 if kind.is64 else 32,
        little_endian=kind.little_endian,
        bytes_by_kind=by_kind,
        largest_sections=sections,
        symbols=symbol_report,
        savings=savings,
        upx=_upx_verdict(source, runner) if upx else UpxVerdict(False, "not asked", False),
    )


# -- bytes by kind ---------------------------------------------------------------------------------------


def section_kinds(elf: ElfFile) -> list[str]:
    """The kind each section's bytes are counted under, by section index."""
    symbol_strings = {t.sh_link for t in elf.sections if t.sh_type == c.SHT_SYMTAB}
    dynamic_strings = {t.sh_link for t in elf.sections if t.sh_type == c.SHT_DYNSYM}
    return [_section_kind(elf, s, symbol_strings, dynamic_strings) for s in elf.sections]


def _section_kind(elf: ElfFile, s: Section, symbol_strings: set[int], dynamic_strings: set[int]) -> str:
    name = s.name
    if s.index == elf.header.e_shstrndx:
        return "headers"
    if is_debug_section(s):
        return "debug"
    if s.sh_type in (c.SHT_SYMTAB, c.SHT_SYMTAB_SHNDX) or (s.index in symbol_strings and not s.is_alloc):
        return "symbols"
    if s.sh_type in DYNAMIC_TYPES or s.index in dynamic_strings or name == ".interp":
        return "dynamic"
    if s.sh_type in (c.SHT_REL, c.SHT_RELA, c.SHT_RELR):
        return "relocations"
    if s.sh_type == c.SHT_NOTE or name.startswith(".note"):
        return "notes"
    if name in UNWIND_SECTIONS:
        return "unwind"
    if not s.is_alloc:
        return "other"
    if s.sh_flags & c.SHF_EXECINSTR:
        return "code"
    if s.sh_flags & c.SHF_WRITE:
        return "data"
    return "rodata"


def _claims(elf: ElfFile) -> list[tuple[int, int, str]]:
    """(start, end, kind) of every part of the image, most specific first: where parts overlap, the first
    one listed gets the bytes."""
    layout, h = elf.layout, elf.header
    claims = [(0, layout.ehdr.size, "headers")]
    if h.e_phnum:
        claims.append((h.e_phoff, h.e_phoff + h.e_phnum * layout.phdr.size, "headers"))
    if h.e_shoff:
        claims.append((h.e_shoff, elf.section_table_end, "headers"))
    if elf.sections:
        kinds = section_kinds(elf)
        claims.extend((s.sh_offset, s.file_end, kinds[s.index]) for s in elf.sections if s.has_file_bytes)
    else:
        # No section headers (sstripped): the segments are all there is to go by.
        by_type = {c.PT_NOTE: "notes", c.PT_DYNAMIC: "dynamic", c.PT_INTERP: "dynamic"}
        loads = []
        for p in elf.segments:
            if not p.p_filesz:
                continue
            if p.p_type in by_type:
                claims.append((p.p_offset, p.file_end, by_type[p.p_type]))
            elif p.p_type == c.PT_LOAD:
                kind = "code" if p.p_flags & 1 else "data" if p.p_flags & 2 else "rodata"  # PF_X, PF_W
                loads.append((p.p_offset, p.file_end, kind))
        claims.extend(loads)
    return claims


def bytes_by_kind(elf: ElfFile) -> dict[str, int]:
    """Every byte of the file under exactly one kind; the values add up to the file size."""
    totals = dict.fromkeys(KINDS, 0)
    image_end = elf.image_end
    claims = sorted(
        (start, priority, end, kind)
        for priority, (start, end, kind) in enumerate(_claims(elf))
        if end > start
    )
    points = sorted({0, image_end, *(start for start, *_ in claims), *(end for *_, end, _ in claims)})
    active: list[tuple[int, int, str]] = []  # (priority, end, kind), a heap on priority
    next_claim = 0
    for low, high in zip(points, points[1:]):
        while next_claim < len(claims) and claims[next_claim][0] <= low:
            _, priority, end, kind = claims[next_claim]
            heapq.heappush(active, (priority, end, kind))
            next_claim += 1
        while active and active[0][1] <= low:
            heapq.heappop(active)
        totals[active[0][2] if active else "padding"] += high - low
    totals["overlay"] = elf.size - image_end
    assert sum(totals.values()) == elf.size, totals
    return totals


# -- symbols -----------------------------------------------------------------------------------------------


def _symbols(elf: ElfFile, top: int, runner: Runner) -> SymbolReport:
    table = next((s for s in elf.sections if s.sh_type == c.SHT_SYMTAB), None)
    if table is None:
        table = next((s for s in elf.sections if s.sh_type == c.SHT_DYNSYM), None)
    if table is None or not table.has_file_bytes:
        return SymbolReport("", 0, (), (), "no symbol table")
    kind = "symtab" if table.sh_type == c.SHT_SYMTAB else "dynsym"
    flag = "-P" if sys.version_info >= (3, 11) else "-I"  # keep binslim/ itself off the child's sys.path
    reason = ""
    largest: tuple[SymbolSize, ...] = ()
    count = 0
    demanglers: tuple[str, ...] = ()
    try:
        argv = [sys.executable, flag, _LIEF_SCRIPT, elf.path, kind, str(top)]
        completed = runner(argv, timeout=LIEF_TIMEOUT)
        if completed.returncode == 0:
            found = json.loads(completed.stdout)
            largest = tuple(
                SymbolSize(str(s["name"]), int(s["size"]), str(s["type"]), str(s["section"]))
                for s in found["symbols"]
            )
            count, demanglers = int(found["count"]), ("LIEF",)
        else:
            what = "timed out" if completed.timed_out else f"exited with {completed.returncode}"
            reason = f"LIEF {what}" + (f": {completed.stderr_tail(1)}" if completed.stderr_tail(1) else "")
    except (BinslimError, ValueError, KeyError, TypeError) as exc:  # a bad answer is as good as none
        reason = f"LIEF gave no usable answer: {exc}"
    if reason:
        count, largest = _read_largest_symbols(elf, table, top)
        demanglers = ()
    # LIEF demangles only Itanium names without a version suffix; c++filt also knows Rust's v0 scheme.
    names = _demangle([s.name for s in largest], runner)
    if names:
        largest = tuple(dataclasses.replace(s, name=names.get(s.name, s.name)) for s in largest)
        demanglers += ("c++filt",)
    return SymbolReport(table.name, count, largest, demanglers, reason)


def _demangle(names: list[str], runner: Runner) -> dict[str, str]:
    """Demangled forms of the mangled ``names`` c++filt understands (none when it is not installed)."""
    mangled = sorted({n for n in names if n.startswith(("_Z", "_R"))})
    tool = shutil.which("c++filt")
    if not mangled or tool is None:
        return {}
    bases = [n.partition("@")[0] for n in mangled]  # "_ZSt4cout@GLIBCXX_3.4": demangle the part before @
    try:
        completed = runner([tool, *bases], timeout=LIEF_TIMEOUT)
    except BinslimError:
        return {}
    lines = completed.stdout.decode("utf-8", "replace").splitlines()
    if completed.returncode != 0 or len(lines) != len(mangled):
        return {}
    result = {}
    for name, base, line in zip(mangled, bases, lines):
        if line and line != base:
            result[name] = line + name[len(base) :]
    return result


def _read_largest_symbols(elf: ElfFile, table: Section, top: int) -> tuple[int, tuple[SymbolSize, ...]]:
    """Our own reader's answer: the ``top`` largest symbols, names not demangled."""
    strings = elf.sections[table.sh_link] if 0 < table.sh_link < len(elf.sections) else None
    count = 0
    heap: list[tuple[int, int, int, int, int]] = []  # (size, -index, name offset, type, shndx)
    for index, (name, info, shndx, size) in enumerate(_iter_symbols(elf, table)):
        if size <= 0:
            continue
        count += 1
        entry = (size, -index, name, info & 0xF, shndx)
        if len(heap) < top:
            heapq.heappush(heap, entry)
        elif entry > heap[0]:
            heapq.heapreplace(heap, entry)
    largest = []
    for size, _, name, stt, shndx in sorted(heap, reverse=True):
        section = elf.sections[shndx].name if 0 < shndx < len(elf.sections) else ""
        symbol_type = SYMBOL_TYPES.get(stt, str(stt))
        largest.append(SymbolSize(_string(elf, strings, name), size, symbol_type, section))
    largest.sort(key=lambda s: (-s.size, s.name))
    return count, tuple(largest)


def _iter_symbols(elf: ElfFile, table: Section) -> Iterator[tuple[int, int, int, int]]:
    """(st_name, st_info, st_shndx, st_size) of each symbol."""
    if elf.layout.is64:
        entry = struct.Struct(elf.layout.order + "IBBHQQ")
    else:
        entry = struct.Struct(elf.layout.order + "IIIBBH")
    for chunk in elf.iter_section_chunks(table._replace(sh_entsize=entry.size)):
        usable = len(chunk) - len(chunk) % entry.size
        for fields in entry.iter_unpack(chunk[:usable]):
            if elf.layout.is64:
                name, info, _, shndx, _, size = fields
            else:
                name, _, size, info, _, shndx = fields
            yield name, info, shndx, size


def _string(elf: ElfFile, strings: Section | None, offset: int) -> str:
    if strings is None or not strings.has_file_bytes or offset >= strings.sh_size:
        return ""
    raw = elf.read(strings.sh_offset + offset, min(4096, strings.sh_size - offset))
    return raw.split(b"\0", 1)[0].decode(NAME_ENCODING)


# -- what binslim and UPX would do ---------------------------------------------------------------------


def _saving(elf: ElfFile, level: str, option: str) -> LevelSaving:
    try:
        return LevelSaving(level, option, planned_size(elf, level))
    except UnsupportedError as exc:
        return LevelSaving(level, option, None, str(exc).split(": ", 1)[-1])


def _upx_verdict(path: str, runner: Runner) -> UpxVerdict:
    from .upx import find_upx, is_upx_packed, pack_eligibility

    try:
        version, available = find_upx(runner=runner).version, True
    except (ToolNotFoundError, BinslimError):
        version, available = "", False
    if is_upx_packed(path):
        return UpxVerdict(False, "already packed by UPX", available, version)
    reason = pack_eligibility(path)
    return UpxVerdict(reason is None, reason or "", available, version)


# -- rendering ----------------------------------------------------------------------------------------------


def to_json(inspection: Inspection) -> str:
    return json.dumps(inspection.to_dict(), indent=2)


def format_inspection(inspection: Inspection) -> str:
    from .report import human_size, percent

    size = inspection.size
    order = "little" if inspection.little_endian else "big"
    lines = [
        f"{inspection.path}: {human_size(size)}, {inspection.machine} {inspection.description}"
        f" (ELF{inspection.elf_class}, {order}-endian)",
        "",
        "bytes by kind:",
    ]
    for kind, count in sorted(inspection.bytes_by_kind.items(), key=lambda item: -item[1]):
        if count:
            lines.append(f"  {kind:<12}{count:>14,} B {percent(count, size):>6}  {KIND_LABELS[kind]}")
    lines.append(f"  {'total':<12}{size:>14,} B {percent(size, size):>6}")
    if inspection.largest_sections:
        lines += ["", "largest sections:"]
        for s in inspection.largest_sections:
            lines.append(f"  {s.name:<24}{s.size:>14,} B {percent(s.size, size):>6}  {s.kind}")
    lines += ["", _symbols_heading(inspection.symbols)]
    for symbol in inspection.symbols.largest:
        where = f" in {symbol.section}" if symbol.section else ""
        lines.append(f"  {symbol.size:>12,} B  {symbol.type:<7} {symbol.name}{where}")
    lines += ["", "savings:"]
    for saving in inspection.savings:
        if saving.size is None:
            lines.append(f"  {saving.option:<26}refused: {saving.refused}")
            continue
        saved = size - saving.size
        lines.append(f"  {saving.option:<26}{saving.size:>14,} B, saves {saved:,} B ({percent(saved, size)})")
    upx = inspection.upx
    verdict = "would pack" if upx.would_pack else f"would not pack: {upx.reason}"
    found = f"upx {upx.version}" if upx.available else "upx not installed"
    lines.append(f"  {'--upx':<26}{verdict} ({found})")
    return "\n".join(lines)


def _symbols_heading(report: SymbolReport) -> str:
    if not report.table:
        return f"largest symbols: none ({report.reason})"
    how = "names as stored"
    if report.demangled_by:
        how = "names demangled by " + " and ".join(report.demangled_by)
    if report.reason:
        how += f"; {report.reason}"
    return f"largest symbols ({report.table}, {report.count:,} with a size; {how}):"
