"""What the dynamic loader reads from an ELF file: PT_INTERP, the dynamic section's strings and flags, and the
names of the symbols it imports.

Addresses in the dynamic section (DT_STRTAB) are virtual; they are turned into file offsets through the
PT_LOAD segments, as the loader would find them in memory. Every read goes through ElfFile, so a hostile file
cannot make us read past its end.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

from ..errors import MalformedELFError
from . import constants as c
from .reader import NAME_ENCODING, ElfFile

DT_NULL = 0
DT_NEEDED = 1
DT_STRTAB = 5
DT_STRSZ = 10
DT_SONAME = 14
DT_RPATH = 15
DT_RUNPATH = 29
DT_FLAGS_1 = 0x6FFFFFFB
DF_1_NODEFLIB = 0x800

_MAX_DYNAMIC = 1 << 20  # a dynamic section is a few hundred bytes; read no more than this of a hostile one
_MAX_STRING = 1 << 16
_MAX_DYNSYM = 64 << 20


@dataclass(frozen=True)
class DynamicInfo:
    """The loader's view of one ELF file."""

    path: str
    elfclass: int
    little_endian: bool
    e_machine: int
    e_type: int
    interpreter: str | None
    needed: tuple[str, ...]
    soname: str | None
    rpath: tuple[str, ...]  # DT_RPATH entries, split on ':'
    runpath: tuple[str, ...]
    has_runpath: bool  # DT_RUNPATH present (even empty): then DT_RPATH is ignored
    nodeflib: bool  # DF_1_NODEFLIB: neither ld.so.cache nor the default folders for its dependencies
    imported: frozenset[str]  # undefined dynamic symbols (what it expects another object to define)
    dynamic: bool  # has PT_DYNAMIC at all

    @property
    def is64(self) -> bool:
        return self.elfclass == c.ELFCLASS64


def read_dynamic(path: str | os.PathLike[str]) -> DynamicInfo:
    """Read ``path``'s loader facts; NotELFError or MalformedELFError when it is not a valid ELF file."""
    with ElfFile(os.fspath(path)) as elf:
        return dynamic_of(elf)


def dynamic_of(elf: ElfFile) -> DynamicInfo:
    interpreter = None
    entries: list[tuple[int, int]] = []
    has_dynamic = False
    for segment in elf.segments:
        if segment.p_type == c.PT_INTERP and interpreter is None and segment.p_filesz:
            raw = elf.read(segment.p_offset, min(segment.p_filesz, 4096))
            interpreter = raw.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
        elif segment.p_type == c.PT_DYNAMIC and not has_dynamic:
            has_dynamic = True
            entries = _dynamic_entries(elf, segment.p_offset, segment.p_filesz)
    strtab_addr = next((value for tag, value in entries if tag == DT_STRTAB), None)
    strsz = next((value for tag, value in entries if tag == DT_STRSZ), 0)
    strings_at = None
    if strtab_addr is not None:
        strings_at = _file_offset(elf, strtab_addr)
        if strings_at is None:
            raise _malformed(elf, f"DT_STRTAB address {strtab_addr:#x} is in no loaded segment")
        strsz = min(strsz, elf.size - strings_at)

    def string(value: int) -> str:
        # Read name by name: a big C++ library's string table is megabytes, and only a few names are needed.
        if strings_at is None or value >= strsz:
            raise _malformed(elf, f"dynamic string offset {value} is past the end of the string table")
        raw = elf.read(strings_at + value, min(_MAX_STRING, strsz - value)).split(b"\0", 1)[0]
        return raw.decode("utf-8", "surrogateescape")

    def paths(tag: int) -> tuple[str, ...]:
        found: list[str] = []
        for entry_tag, value in entries:
            if entry_tag == tag:
                found.extend(part for part in string(value).split(":"))
        return tuple(found)

    flags_1 = 0
    for tag, value in entries:
        if tag == DT_FLAGS_1:
            flags_1 |= value
    soname = next((string(value) for tag, value in entries if tag == DT_SONAME), None)
    h = elf.header
    return DynamicInfo(
        path=elf.path,
        elfclass=h.elfclass,
        little_endian=h.little_endian,
        e_machine=h.e_machine,
        e_type=h.e_type,
        interpreter=interpreter,
        needed=tuple(string(value) for tag, value in entries if tag == DT_NEEDED),
        soname=soname,
        rpath=paths(DT_RPATH),
        runpath=paths(DT_RUNPATH),
        has_runpath=any(tag == DT_RUNPATH for tag, _ in entries),
        nodeflib=bool(flags_1 & DF_1_NODEFLIB),
        imported=_imported_symbols(elf),
        dynamic=has_dynamic,
    )


def _malformed(elf: ElfFile, problem: str) -> MalformedELFError:
    return MalformedELFError(f"{elf.path}: {problem}")


def _dynamic_entries(elf: ElfFile, offset: int, size: int) -> list[tuple[int, int]]:
    entry = struct.Struct(elf.layout.order + ("qQ" if elf.layout.is64 else "iI"))
    size = min(size, _MAX_DYNAMIC, max(0, elf.size - offset))
    entries = []
    for tag, value in entry.iter_unpack(elf.read(offset, size // entry.size * entry.size)):
        if tag == DT_NULL:
            break
        entries.append((tag, value))
    return entries


def _file_offset(elf: ElfFile, address: int) -> int | None:
    for segment in elf.segments:
        if segment.p_type == c.PT_LOAD and segment.p_vaddr <= address < segment.p_vaddr + segment.p_filesz:
            return segment.p_offset + (address - segment.p_vaddr)
    return None


def _imported_symbols(elf: ElfFile) -> frozenset[str]:
    """Names of the undefined symbols of .dynsym (found through the section table; a file without one, such
    as sstrip output, reports none)."""
    dynsym = next((s for s in elf.sections if s.sh_type == c.SHT_DYNSYM and s.has_file_bytes), None)
    if dynsym is None or dynsym.sh_link >= len(elf.sections) or dynsym.sh_size > _MAX_DYNSYM:
        return frozenset()
    names = elf.read_section(elf.sections[dynsym.sh_link])
    if elf.layout.is64:
        sym = struct.Struct(elf.layout.order + "IBBHQQ")
        name_at, shndx_at = 0, 3
    else:
        sym = struct.Struct(elf.layout.order + "IIIBBH")
        name_at, shndx_at = 0, 5
    data = elf.read_section(dynsym)
    imported = set()
    for fields in sym.iter_unpack(data[: len(data) // sym.size * sym.size]):
        name_offset = fields[name_at]
        if fields[shndx_at] != c.SHN_UNDEF or not name_offset or name_offset >= len(names):
            continue
        end = names.find(b"\0", name_offset)
        imported.add((names[name_offset:] if end < 0 else names[name_offset:end]).decode(NAME_ENCODING))
    return frozenset(imported)
