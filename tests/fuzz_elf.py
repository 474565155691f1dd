"""Fuzz binslim with malformed and hostile ELF files made by mutating the fixture binaries.

Importable (tests/test_fuzz.py runs a fixed-seed budget, plus a set whose choices hypothesis makes and
shrinks) and runnable for long, opt-in campaigns::

    python3 tests/fuzz_elf.py --cases 100000 --seed 7 --jobs 2        # a campaign; prints a summary
    python3 tests/fuzz_elf.py --seed 7 --case 4242 --save-dir /tmp/f  # replay one case and keep its input

Each case takes one fixture, applies one to four mutations to its ELF header, program headers, section
headers, string tables, symbols, relocations or groups (random bytes, extreme values, offsets and sizes past
the end of the file, overlaps, sh_link loops, extended numbering without a section 0, truncation) and runs
binslim on it with ``-o``. ``check_case`` then holds it to the invariants every input must meet:

- binslim returns or raises a BinslimError (exit 0 or 1): never another exception (a traceback or "internal
  error"), never a hang (each case runs under a timer), never a large allocation (tracemalloc peak);
- on success: the output is no larger than the input, readelf reads it without complaints the input did not
  already get, and every segment's bytes (and the ELF header, but for e_shoff/e_shnum/e_shstrndx) are
  unchanged; a last PT_LOAD may lose only zero padding at its end;
- on failure: no output and no temporary file exist, and the input is untouched.

A subset also goes through the real CLI in a subprocess (``cli_violations``): exit status 0 or 1 (never a
signal), one ``error:`` line and no traceback on failure, the same outcome and bytes as the library.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import random
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, TypeVar

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from binslim.elf.reader import ElfFile
from binslim.errors import BinslimError
from binslim.fileops import TEMP_PREFIX
from binslim.slim import slim

T = TypeVar("T")

# Fixtures a case starts from: every class, byte order and file kind, small enough to copy thousands of times.
SEED_FIXTURES = (
    "hello-c-pie",  # 64-bit LE, ET_DYN with PT_INTERP
    "hello-c-static",  # ET_EXEC, no dynamic section
    "hello-c-overlay",  # bytes after the ELF image
    "hello-c-i386",  # 32-bit LE (optional fixture)
    "hello-cxx",  # C++: exception tables
    "libgreet",  # shared library
    "greet-obj",  # ET_REL: symbol renumbering, relocations
    "comdat-obj",  # ET_REL with section groups
    "hello-go-ppc64",  # 64-bit big-endian
    "hello-go-mips",  # 32-bit big-endian
    "hello-go-arm",  # 32-bit LE, many sections
)
CASE_TIMEOUT = 20.0  # seconds for one library run; the largest seed strips in a few milliseconds
CLI_TIMEOUT = 60.0
READELF_TIMEOUT = 30.0
MEMORY_LIMIT = 64 << 20  # peak bytes binslim may allocate for one case (tracemalloc)
CLI_ADDRESS_SPACE = 1 << 30  # RLIMIT_AS of a CLI run: a huge allocation fails instead of swapping

# The section types, flags and special indices that steer binslim's planning.
SHT_NULL, SHT_PROGBITS, SHT_SYMTAB, SHT_STRTAB, SHT_RELA, SHT_NOTE, SHT_NOBITS, SHT_REL = (
    0,
    1,
    2,
    3,
    4,
    7,
    8,
    9,
)
SHT_DYNSYM, SHT_GROUP, SHT_SYMTAB_SHNDX = 11, 17, 18
INTERESTING_TYPES = (
    SHT_NULL,
    SHT_PROGBITS,
    SHT_SYMTAB,
    SHT_STRTAB,
    SHT_RELA,
    SHT_NOTE,
    SHT_NOBITS,
    SHT_REL,
    SHT_DYNSYM,
    SHT_GROUP,
    SHT_SYMTAB_SHNDX,
    19,
    0x6FFFFFF6,
    0x70000001,
    0xFFFFFFFF,
)
SHF_ALLOC, SHF_INFO_LINK = 0x2, 0x40
SHN_LORESERVE, SHN_ABS, SHN_COMMON, SHN_XINDEX = 0xFF00, 0xFFF1, 0xFFF2, 0xFFFF
PN_XNUM = 0xFFFF
PT_LOAD, PT_DYNAMIC = 1, 2

# (name, offset, size) of each header field, by ELF class.
EHDR_FIELDS = {
    True: (
        ("e_type", 16, 2),
        ("e_machine", 18, 2),
        ("e_version", 20, 4),
        ("e_entry", 24, 8),
        ("e_phoff", 32, 8),
        ("e_shoff", 40, 8),
        ("e_flags", 48, 4),
        ("e_ehsize", 52, 2),
        ("e_phentsize", 54, 2),
        ("e_phnum", 56, 2),
        ("e_shentsize", 58, 2),
        ("e_shnum", 60, 2),
        ("e_shstrndx", 62, 2),
    ),
    False: (
        ("e_type", 16, 2),
        ("e_machine", 18, 2),
        ("e_version", 20, 4),
        ("e_entry", 24, 4),
        ("e_phoff", 28, 4),
        ("e_shoff", 32, 4),
        ("e_flags", 36, 4),
        ("e_ehsize", 40, 2),
        ("e_phentsize", 42, 2),
        ("e_phnum", 44, 2),
        ("e_shentsize", 46, 2),
        ("e_shnum", 48, 2),
        ("e_shstrndx", 50, 2),
    ),
}
IDENT_FIELDS = (("EI_CLASS", 4, 1), ("EI_DATA", 5, 1), ("EI_VERSION", 6, 1), ("EI_OSABI", 7, 1))
PHDR_FIELDS = {
    True: (
        ("p_type", 0, 4),
        ("p_flags", 4, 4),
        ("p_offset", 8, 8),
        ("p_vaddr", 16, 8),
        ("p_paddr", 24, 8),
        ("p_filesz", 32, 8),
        ("p_memsz", 40, 8),
        ("p_align", 48, 8),
    ),
    False: (
        ("p_type", 0, 4),
        ("p_offset", 4, 4),
        ("p_vaddr", 8, 4),
        ("p_paddr", 12, 4),
        ("p_filesz", 16, 4),
        ("p_memsz", 20, 4),
        ("p_flags", 24, 4),
        ("p_align", 28, 4),
    ),
}
SHDR_FIELDS = {
    True: (
        ("sh_name", 0, 4),
        ("sh_type", 4, 4),
        ("sh_flags", 8, 8),
        ("sh_addr", 16, 8),
        ("sh_offset", 24, 8),
        ("sh_size", 32, 8),
        ("sh_link", 40, 4),
        ("sh_info", 44, 4),
        ("sh_addralign", 48, 8),
        ("sh_entsize", 56, 8),
    ),
    False: (
        ("sh_name", 0, 4),
        ("sh_type", 4, 4),
        ("sh_flags", 8, 4),
        ("sh_addr", 12, 4),
        ("sh_offset", 16, 4),
        ("sh_size", 20, 4),
        ("sh_link", 24, 4),
        ("sh_info", 28, 4),
        ("sh_addralign", 32, 4),
        ("sh_entsize", 36, 4),
    ),
}
SYM_FIELDS = {
    True: (
        ("st_name", 0, 4),
        ("st_info", 4, 1),
        ("st_other", 5, 1),
        ("st_shndx", 6, 2),
        ("st_value", 8, 8),
        ("st_size", 16, 8),
    ),
    False: (
        ("st_name", 0, 4),
        ("st_value", 4, 4),
        ("st_size", 8, 4),
        ("st_info", 12, 1),
        ("st_other", 13, 1),
        ("st_shndx", 14, 2),
    ),
}
FieldSpec = tuple[str, int, int]


def field_spec(table: Sequence[FieldSpec], name: str) -> FieldSpec:
    return next(f for f in table if f[0] == name)


# -- where the randomness comes from -------------------------------------------------------------------------


class Source(Protocol):
    """The choices a mutation makes: from random.Random in campaigns, from hypothesis in the test suite (which
    then shrinks a failure to its simplest mutation)."""

    def integer(self, lo: int, hi: int) -> int: ...

    def blob(self, size: int) -> bytes: ...


class RandomSource:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def integer(self, lo: int, hi: int) -> int:
        return self.rng.randint(lo, hi)

    def blob(self, size: int) -> bytes:
        return self.rng.randbytes(size)


class HypothesisSource:
    def __init__(self, data: Any) -> None:  # hypothesis.strategies.DataObject
        from hypothesis import strategies as st

        self.data, self.st = data, st

    def integer(self, lo: int, hi: int) -> int:
        return int(self.data.draw(self.st.integers(lo, hi)))

    def blob(self, size: int) -> bytes:
        return bytes(self.data.draw(self.st.binary(min_size=size, max_size=size)))


def pick(src: Source, options: Sequence[T]) -> T:
    return options[src.integer(0, len(options) - 1)]


def pick_weighted(src: Source, options: Sequence[tuple[T, int]]) -> T:
    total = sum(weight for _, weight in options)
    roll = src.integer(0, total - 1)
    for option, weight in options:
        if roll < weight:
            return option
        roll -= weight
    raise AssertionError("unreachable")


# -- seeds ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SeedSection:
    index: int
    name: str
    header_at: int  # file offset of its section header
    sh_type: int
    sh_flags: int
    sh_offset: int
    sh_size: int
    sh_link: int
    sh_entsize: int


@dataclass(frozen=True)
class Seed:
    """A pristine fixture and where its tables are."""

    name: str
    data: bytes
    is64: bool
    little_endian: bool
    phoff: int
    phnum: int
    phentsize: int
    shoff: int
    shnum: int
    shentsize: int
    shstrndx: int
    sections: tuple[SeedSection, ...]

    @property
    def order(self) -> str:
        return "<" if self.little_endian else ">"

    @property
    def ehdr_size(self) -> int:
        return 64 if self.is64 else 52

    def sections_of_type(self, *types: int) -> list[SeedSection]:
        return [s for s in self.sections if s.sh_type in types and s.sh_size > 0]


def load_seed(name: str, path: str, data: bytes | None = None) -> Seed:
    with ElfFile(path) as elf:
        if data is None:
            data = elf.read(0, elf.size)
        h, layout = elf.header, elf.layout
        sections = tuple(
            SeedSection(
                s.index,
                s.name,
                h.e_shoff + s.index * layout.shdr.size,
                s.sh_type,
                s.sh_flags,
                s.sh_offset,
                s.sh_size,
                s.sh_link,
                s.sh_entsize,
            )
            for s in elf.sections
        )
        return Seed(
            name,
            data,
            layout.is64,
            layout.little_endian,
            h.e_phoff,
            h.e_phnum,
            layout.phdr.size,
            h.e_shoff,
            h.e_shnum,
            layout.shdr.size,
            h.e_shstrndx,
            sections,
        )


def extended_numbering(seed: Seed, work_dir: str, *, segments: bool) -> Seed:
    """``seed`` rewritten to keep its section count, name-table index (and with ``segments`` its segment
    count) in section 0, as files with more than 65279 sections must: legal, rare, and a path of its own in
    every reader. readelf 2.40 does not resolve PN_XNUM before it checks the program headers, so it cannot
    judge that part."""
    data = bytearray(seed.data)
    fields = dict((n, (o, s)) for n, o, s in EHDR_FIELDS[seed.is64])
    sh = dict((n, (o, s)) for n, o, s in SHDR_FIELDS[seed.is64])

    def put(at: int, size: int, value: int) -> None:
        data[at : at + size] = value.to_bytes(size, "little" if seed.little_endian else "big")

    put(*fields["e_shnum"], 0)
    put(seed.shoff + sh["sh_size"][0], sh["sh_size"][1], seed.shnum)
    put(*fields["e_shstrndx"], SHN_XINDEX)
    put(seed.shoff + sh["sh_link"][0], 4, seed.shstrndx)
    if segments and seed.phnum:
        put(*fields["e_phnum"], PN_XNUM)
        put(seed.shoff + sh["sh_info"][0], 4, seed.phnum)
    path = os.path.join(work_dir, f"{seed.name}+xnum")
    Path(path).write_bytes(data)
    return load_seed(f"{seed.name}+xnum", path)


def load_seeds(fixture_paths: Mapping[str, str], names: Sequence[str] = SEED_FIXTURES) -> list[Seed]:
    """Seeds from the fixtures that exist (optional ones may be missing), plus extended-numbering variants."""
    seeds = [load_seed(n, fixture_paths[n]) for n in names if n in fixture_paths]
    with tempfile.TemporaryDirectory() as work_dir:
        seeds += [
            extended_numbering(s, work_dir, segments=s.name == "libgreet")
            for s in seeds
            if s.name in ("greet-obj", "hello-c-pie", "libgreet")
        ]
    return seeds


# -- mutations -----------------------------------------------------------------------------------------------


class Mutable:
    """A seed's bytes being mutated, with typed access to its header fields."""

    def __init__(self, seed: Seed) -> None:
        self.seed = seed
        self.data = bytearray(seed.data)
        self.notes: list[str] = []

    @property
    def is64(self) -> bool:
        return self.seed.is64

    def get(self, at: int, size: int) -> int:
        if at < 0 or at + size > len(self.data):
            return 0
        return int.from_bytes(self.data[at : at + size], "little" if self.seed.little_endian else "big")

    def put(self, at: int, size: int, value: int, what: str) -> None:
        if at < 0 or at + size > len(self.data):
            return  # a truncation came first
        value &= (1 << (8 * size)) - 1
        self.data[at : at + size] = value.to_bytes(size, "little" if self.seed.little_endian else "big")
        self.notes.append(f"{what}={value:#x}")

    def ehdr(self, name: str) -> FieldSpec:
        return field_spec(EHDR_FIELDS[self.is64], name)

    def put_ehdr(self, name: str, value: int) -> None:
        _, at, size = self.ehdr(name)
        self.put(at, size, value, name)

    def shdr_at(self, index: int, name: str) -> tuple[int, int]:
        _, at, size = field_spec(SHDR_FIELDS[self.is64], name)
        return self.seed.shoff + index * self.seed.shentsize + at, size

    def get_shdr(self, index: int, name: str) -> int:
        return self.get(*self.shdr_at(index, name))

    def put_shdr(self, index: int, name: str, value: int) -> None:
        at, size = self.shdr_at(index, name)
        self.put(at, size, value, f"[{index}].{name}")

    def phdr_at(self, index: int, name: str) -> tuple[int, int]:
        _, at, size = field_spec(PHDR_FIELDS[self.is64], name)
        return self.seed.phoff + index * self.seed.phentsize + at, size

    def put_phdr(self, index: int, name: str, value: int) -> None:
        at, size = self.phdr_at(index, name)
        self.put(at, size, value, f"phdr[{index}].{name}")


def extreme_value(src: Source, size: int, current: int, file_size: int) -> int:
    """A value a careless reader trips over: boundaries, the file size, huge counts, bit flips."""
    bits = 8 * size
    top = (1 << bits) - 1
    choices = (
        0,
        1,
        2,
        current + 1,
        current - 1,
        top,
        top - 1,
        1 << (bits - 1),
        (1 << (bits - 1)) - 1,
        file_size,
        file_size - 1,
        file_size + 1,
        file_size // 2,
        current * 2,
        current + file_size,
        current ^ (1 << src.integer(0, bits - 1)),
        src.integer(0, 4096),
        src.integer(0, top),
        0xFF00,
        0xFFFF,
        0x10000,
        1 << 31,
        1 << 32,
        1 << 40,
        1 << 62,
        0x8000_0000_0000_0000,
    )
    return pick(src, choices) & top


def _some_section(src: Source, m: Mutable, *, include_zero: bool = False) -> SeedSection | None:
    sections = m.seed.sections if include_zero else m.seed.sections[1:]
    return pick(src, sections) if sections else None


def mutate_ehdr_field(src: Source, m: Mutable) -> None:
    name, at, size = pick(src, EHDR_FIELDS[m.is64] + IDENT_FIELDS)
    m.put(at, size, extreme_value(src, size, m.get(at, size), len(m.data)), name)


def mutate_phdr_field(src: Source, m: Mutable) -> None:
    if not m.seed.phnum:
        return mutate_ehdr_field(src, m)
    index = src.integer(0, m.seed.phnum - 1)
    name, _, _ = pick(src, PHDR_FIELDS[m.is64])
    at, size = m.phdr_at(index, name)
    m.put(at, size, extreme_value(src, size, m.get(at, size), len(m.data)), f"phdr[{index}].{name}")


def mutate_shdr_field(src: Source, m: Mutable) -> None:
    section = _some_section(src, m, include_zero=src.integer(0, 5) == 0)
    if section is None:
        return mutate_ehdr_field(src, m)
    name, _, _ = pick(src, SHDR_FIELDS[m.is64])
    at, size = m.shdr_at(section.index, name)
    m.put(at, size, extreme_value(src, size, m.get(at, size), len(m.data)), f"[{section.index}].{name}")


def _regions(m: Mutable) -> list[tuple[str, int, int]]:
    seed = m.seed
    regions = [("ehdr", 0, seed.ehdr_size)]
    if seed.phnum:
        regions.append(("phdrs", seed.phoff, seed.phnum * seed.phentsize))
    if seed.shnum:
        regions.append(("shdrs", seed.shoff, seed.shnum * seed.shentsize))
    if seed.shstrndx:
        names = seed.sections[seed.shstrndx]
        regions.append(("shstrtab", names.sh_offset, names.sh_size))
    for s in seed.sections_of_type(SHT_SYMTAB, SHT_STRTAB, SHT_GROUP, SHT_REL, SHT_RELA, SHT_SYMTAB_SHNDX):
        if s.sh_type != SHT_NOBITS:
            regions.append((s.name or f"[{s.index}]", s.sh_offset, s.sh_size))
    regions.append(("anywhere", 0, len(seed.data)))
    return [r for r in regions if r[2] > 0]


def mutate_random_bytes(src: Source, m: Mutable) -> None:
    name, start, size = pick(src, _regions(m))
    count = min(size, pick(src, (1, 1, 2, 4, 8, 16)))
    at = start + src.integer(0, size - count)
    if at + count <= len(m.data):
        m.data[at : at + count] = src.blob(count)
        m.notes.append(f"{count} random bytes in {name} at {at:#x}")


def mutate_past_eof(src: Source, m: Mutable) -> None:
    """An offset or size so that a table, segment or section ends just past (or far past) the end."""
    size = len(m.data)
    overshoot = pick(src, (1, 2, 8, 4096, src.integer(1, 1 << 20), 1 << 32))
    kind = src.integer(0, 3)
    if kind == 0 and m.seed.phnum:
        index = src.integer(0, m.seed.phnum - 1)
        offset = m.get(*m.phdr_at(index, "p_offset"))
        if src.integer(0, 1):
            m.put_phdr(index, "p_filesz", size - offset + overshoot)
        else:
            m.put_phdr(index, "p_offset", size - src.integer(0, 64) + overshoot - 1)
    elif kind == 1 and len(m.seed.sections) > 1:
        section = _some_section(src, m)
        assert section is not None
        if src.integer(0, 1):
            m.put_shdr(section.index, "sh_size", size - section.sh_offset + overshoot)
        else:
            m.put_shdr(section.index, "sh_offset", size + overshoot - 1 - src.integer(0, section.sh_size))
    elif kind == 2:
        table = m.seed.shnum * m.seed.shentsize
        m.put_ehdr("e_shoff", size - table + overshoot if src.integer(0, 1) else size + overshoot - 1)
    else:
        table = m.seed.phnum * m.seed.phentsize
        m.put_ehdr("e_phoff", size - table + overshoot)


def mutate_overlap(src: Source, m: Mutable) -> None:
    """Make tables, sections and segments share bytes."""
    seed = m.seed
    kind = src.integer(0, 5)
    a, b = _some_section(src, m), _some_section(src, m, include_zero=True)
    if kind == 0 and a is not None and b is not None:  # a section on top of another
        m.put_shdr(a.index, "sh_offset", b.sh_offset + src.integer(0, max(0, b.sh_size)))
        if src.integer(0, 1):
            m.put_shdr(a.index, "sh_size", b.sh_size + src.integer(0, 64))
    elif kind == 1 and a is not None:  # a section over the headers or the section table
        targets = (
            0,
            src.integer(0, seed.ehdr_size),
            seed.phoff,
            seed.shoff,
            seed.shoff + src.integer(0, max(0, seed.shnum * seed.shentsize)),
        )
        m.put_shdr(a.index, "sh_offset", pick(src, targets))
    elif kind == 2:  # the section table on the program headers, a section or the ELF header
        targets = [seed.phoff, src.integer(1, seed.ehdr_size)] + [s.sh_offset for s in seed.sections[1:4]]
        m.put_ehdr("e_shoff", pick(src, targets))
    elif kind == 3:  # the program headers on the ELF header or the section table
        m.put_ehdr("e_phoff", pick(src, (src.integer(1, seed.ehdr_size), seed.shoff)))
    elif kind == 4 and seed.phnum >= 1 and a is not None:  # a segment covering the section table or a section
        index = src.integer(0, seed.phnum - 1)
        start = pick(src, (seed.shoff, a.sh_offset))
        m.put_phdr(index, "p_offset", start)
        m.put_phdr(index, "p_filesz", pick(src, (a.sh_size, seed.shnum * seed.shentsize, 1)))
    elif a is not None and b is not None:  # two sections exactly the same
        m.put_shdr(a.index, "sh_offset", b.sh_offset)
        m.put_shdr(a.index, "sh_size", b.sh_size)


def mutate_link_loop(src: Source, m: Mutable) -> None:
    """sh_link (and sh_info) cycles of length 1..3, with types that make binslim follow them."""
    if len(m.seed.sections) < 2:
        return mutate_shdr_field(src, m)
    chain = [_some_section(src, m) for _ in range(src.integer(1, 3))]
    indices = [s.index for s in chain if s is not None]
    field_name = pick(src, ("sh_link", "sh_link", "sh_info"))
    for position, index in enumerate(indices):
        m.put_shdr(index, field_name, indices[(position + 1) % len(indices)])
        if src.integer(0, 2) == 0:
            m.put_shdr(
                index,
                "sh_type",
                pick(src, (SHT_SYMTAB, SHT_REL, SHT_RELA, SHT_GROUP, SHT_SYMTAB_SHNDX, SHT_STRTAB)),
            )


def mutate_extended_numbering(src: Source, m: Mutable) -> None:
    """Counts in section 0: consistent, absent (no section table at all), huge or out of range."""
    seed = m.seed
    huge = pick(
        src,
        (
            0,
            1,
            seed.shnum,
            seed.shnum + 1,
            0xFF00,
            0xFFFFFFFF,
            1 << 40,
            (1 << 64) - 1,
            src.integer(0, 1 << 32),
        ),
    )
    kind = src.integer(0, 4)
    if kind == 0:
        m.put_ehdr("e_shnum", 0)
        m.put_shdr(0, "sh_size", huge)
    elif kind == 1:
        m.put_ehdr("e_shstrndx", SHN_XINDEX)
        m.put_shdr(0, "sh_link", pick(src, (0, seed.shstrndx, seed.shnum, huge)))
    elif kind == 2:
        m.put_ehdr("e_phnum", PN_XNUM)
        m.put_shdr(0, "sh_info", pick(src, (0, seed.phnum, seed.phnum + 1, huge)))
    elif kind == 3:  # SHN_XINDEX / PN_XNUM / e_shnum 0 with no section 0 to resolve them
        m.put_ehdr("e_shoff", 0)
        m.put_ehdr(pick(src, ("e_shstrndx", "e_phnum", "e_shnum")), pick(src, (SHN_XINDEX, 0)))
    else:  # section 0 that claims bytes
        m.put_shdr(0, "sh_type", pick(src, (SHT_PROGBITS, SHT_NOTE, SHT_SYMTAB, SHT_NOBITS)))
        m.put_shdr(0, "sh_offset", pick(src, (0, len(m.data) - 1, huge)))
        m.put_shdr(0, "sh_size", huge)


def mutate_string_table(src: Source, m: Mutable) -> None:
    """Names without terminators, offsets past the end, duplicate and debug-like names, empty tables."""
    seed = m.seed
    tables = [s for s in seed.sections_of_type(SHT_STRTAB)]
    if not tables:
        return mutate_random_bytes(src, m)
    table = seed.sections[seed.shstrndx] if seed.shstrndx and src.integer(0, 2) else pick(src, tables)
    kind = src.integer(0, 5)
    if kind == 0:  # no NUL anywhere
        fill = pick(src, (b"A", b"\xff", b"."))
        end = min(table.sh_offset + table.sh_size, len(m.data))
        m.data[table.sh_offset : end] = fill * (end - table.sh_offset)
        m.notes.append(f"{table.name or table.index} filled with {fill!r}")
    elif kind == 1:  # last byte not NUL
        m.put(table.sh_offset + table.sh_size - 1, 1, ord("Z"), f"{table.name} last byte")
    elif kind == 2:
        m.put_shdr(table.index, "sh_size", pick(src, (0, 1, table.sh_size - 1, table.sh_size + 1)))
    elif kind == 3 and len(seed.sections) > 1:  # names past the end or on the last byte
        section = _some_section(src, m)
        assert section is not None
        m.put_shdr(
            section.index,
            "sh_name",
            pick(src, (table.sh_size, table.sh_size - 1, table.sh_size + 1, 0xFFFFFFFF)),
        )
    elif kind == 4 and len(seed.sections) > 2:  # one section takes another's name (.symtab, .debug_*, ...)
        a, b = _some_section(src, m), _some_section(src, m)
        assert a is not None and b is not None
        m.put_shdr(a.index, "sh_name", m.get_shdr(b.index, "sh_name"))
    else:  # the name table is some other section
        m.put_ehdr("e_shstrndx", pick(src, [s.index for s in seed.sections] + [seed.shnum, SHN_LORESERVE]))


def mutate_section_type(src: Source, m: Mutable) -> None:
    section = _some_section(src, m)
    if section is None:
        return mutate_ehdr_field(src, m)
    kind = src.integer(0, 3)
    if kind == 0:
        m.put_shdr(section.index, "sh_type", pick(src, INTERESTING_TYPES))
    elif kind == 1:
        m.put_shdr(
            section.index, "sh_flags", section.sh_flags ^ pick(src, (SHF_ALLOC, SHF_INFO_LINK, 0x80, 0x200))
        )
    elif kind == 2:
        m.put_shdr(section.index, "sh_entsize", pick(src, (0, 1, 3, section.sh_entsize * 2, 1 << 62)))
    else:
        m.put_shdr(section.index, "sh_addralign", pick(src, (0, 3, 1 << 20, 1 << 40, (1 << 63) + 1)))


def mutate_symbols(src: Source, m: Mutable) -> None:
    tables = m.seed.sections_of_type(SHT_SYMTAB, SHT_DYNSYM)
    if not tables:
        return mutate_section_type(src, m)
    table = pick(src, tables)
    entry = 24 if m.is64 else 16
    count = table.sh_size // entry
    for _ in range(src.integer(1, 4)):
        index = src.integer(0, count - 1)
        name, at, size = pick(src, SYM_FIELDS[m.is64])
        where = table.sh_offset + index * entry + at
        if name == "st_shndx":
            value = pick(
                src,
                (
                    0,
                    SHN_XINDEX,
                    SHN_LORESERVE,
                    SHN_ABS,
                    SHN_COMMON,
                    m.seed.shnum,
                    m.seed.shnum - 1,
                    src.integer(0, 0xFFFF),
                ),
            )
        elif name == "st_info":
            value = pick(
                src, (0x03, 0x13, 0x04, 0x12, src.integer(0, 255))
            )  # (local|global) section/file/func
        else:
            value = extreme_value(src, size, m.get(where, size), len(m.data))
        m.put(where, size, value, f"{table.name}#{index}.{name}")


def mutate_relocations(src: Source, m: Mutable) -> None:
    tables = [s for s in m.seed.sections_of_type(SHT_REL, SHT_RELA) if not s.sh_flags & SHF_ALLOC]
    if not tables:
        return mutate_symbols(src, m)
    table = pick(src, tables)
    if src.integer(0, 3) == 0:
        m.put_shdr(table.index, "sh_size", table.sh_size + pick(src, (1, 3, -1)))
        return
    word = 8 if m.is64 else 4
    entry = (3 if table.sh_type == SHT_RELA else 2) * word
    index = src.integer(0, table.sh_size // entry - 1)
    at = table.sh_offset + index * entry + word
    info = m.get(at, word)
    shift = 32 if m.is64 else 8
    symbol = pick(src, (0, 1, (1 << (8 * word - shift)) - 1, src.integer(0, 1 << 16)))
    m.put(at, word, (symbol << shift) | (info & ((1 << shift) - 1)), f"{table.name}#{index}.r_info")


def mutate_groups(src: Source, m: Mutable) -> None:
    groups = m.seed.sections_of_type(SHT_GROUP)
    if not groups:
        return mutate_link_loop(src, m)
    group = pick(src, groups)
    kind = src.integer(0, 2)
    if kind == 0:
        word = src.integer(0, group.sh_size // 4 - 1)
        m.put(
            group.sh_offset + 4 * word,
            4,
            pick(src, (0, group.index, m.seed.shnum, 0xFFFFFFFF, src.integer(0, m.seed.shnum))),
            f"{group.name}[{group.index}] word {word}",
        )
    elif kind == 1:
        m.put_shdr(group.index, "sh_size", pick(src, (0, 2, group.sh_size + 2, group.sh_size - 4)))
    else:
        m.put_shdr(group.index, "sh_info", pick(src, (0, 0xFFFFFFFF, src.integer(0, 1 << 16))))


def mutate_truncate(src: Source, m: Mutable) -> None:
    seed = m.seed
    points = (
        src.integer(0, seed.ehdr_size),
        seed.shoff + src.integer(0, seed.shnum * seed.shentsize),
        len(m.data) - src.integer(1, 64),
        src.integer(0, len(m.data)),
    )
    cut = max(0, min(len(m.data), pick(src, points)))
    del m.data[cut:]
    m.notes.append(f"truncated to {cut}")


def mutate_swap_headers(src: Source, m: Mutable) -> None:
    """Swap or copy whole section headers, so indices and links disagree."""
    a, b = _some_section(src, m, include_zero=True), _some_section(src, m)
    if a is None or b is None:
        return mutate_ehdr_field(src, m)
    size = m.seed.shentsize
    first, second = (
        bytes(m.data[a.header_at : a.header_at + size]),
        bytes(m.data[b.header_at : b.header_at + size]),
    )
    if len(first) == len(second) == size:
        m.data[b.header_at : b.header_at + size] = first
        if src.integer(0, 1):
            m.data[a.header_at : a.header_at + size] = second
            m.notes.append(f"swapped section headers {a.index} and {b.index}")
        else:
            m.notes.append(f"section header {a.index} copied over {b.index}")


Mutator = Callable[[Source, Mutable], None]
MUTATORS: tuple[tuple[Mutator, int], ...] = (
    (mutate_ehdr_field, 10),
    (mutate_phdr_field, 8),
    (mutate_shdr_field, 14),
    (mutate_random_bytes, 10),
    (mutate_past_eof, 8),
    (mutate_overlap, 8),
    (mutate_link_loop, 6),
    (mutate_extended_numbering, 8),
    (mutate_string_table, 8),
    (mutate_section_type, 8),
    (mutate_symbols, 6),
    (mutate_relocations, 4),
    (mutate_groups, 4),
    (mutate_truncate, 4),
    (mutate_swap_headers, 4),
)


# Strip levels and how often a case uses each: --strip-debug keeps and renumbers .symtab in executables too;
# --strip-section-headers writes the sstrip layout.
LEVELS = (("all", 12), ("debug", 5), ("sections", 3))
CLI_LEVEL_FLAGS = {"all": (), "debug": ("--strip-debug",), "sections": ("--strip-section-headers",)}


@dataclass(frozen=True)
class Case:
    seed: str
    data: bytes
    mutations: tuple[str, ...]
    level: str = "all"  # binslim's strip level: "all", "debug" or "sections"

    def describe(self) -> str:
        level = "" if self.level == "all" else f" (level {self.level})"
        return f"{self.seed}{level}: " + "; ".join(self.mutations)


def make_case(src: Source, seeds: Sequence[Seed]) -> Case:
    seed = pick(src, seeds)
    m = Mutable(seed)
    mutations = []
    for _ in range(pick_weighted(src, ((1, 5), (2, 3), (3, 1), (4, 1)))):
        mutator = pick_weighted(src, MUTATORS)
        before = len(m.notes)
        mutator(src, m)
        mutations.append(f"{mutator.__name__.removeprefix('mutate_')}({', '.join(m.notes[before:])})")
    level = pick_weighted(src, LEVELS)
    return Case(seed.name, bytes(m.data), tuple(mutations), level)


def random_case(seeds: Sequence[Seed], seed: int, index: int) -> Case:
    """Case ``index`` of campaign ``seed``: the same bytes on every machine and Python version."""
    return make_case(RandomSource(random.Random(f"binslim-fuzz:{seed}:{index}")), seeds)


# -- the invariants ------------------------------------------------------------------------------------------


class CaseTimeout(BaseException):
    """One case ran past its time bound (a BaseException: no ``except Exception`` in binslim may eat it)."""


@contextlib.contextmanager
def time_bound(seconds: float) -> Iterator[None]:
    def expire(signum: int, frame: object) -> None:
        raise CaseTimeout(f"still running after {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@dataclass
class Outcome:
    status: str  # "ok" (binslim succeeded), "error" (BinslimError, exit 1) or "bug"
    message: str = ""
    violations: list[str] = field(default_factory=list)
    peak_memory: int = 0
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return self.status != "bug" and not self.violations


def run_library(
    input_path: str,
    output_path: str,
    *,
    level: str = "all",
    timeout: float = CASE_TIMEOUT,
    memory_limit: int | None = MEMORY_LIMIT,
) -> Outcome:
    """binslim's whole per-file pipeline (no verification runs: these inputs are not for executing)."""
    tracing = memory_limit is not None and not tracemalloc.is_tracing()
    if tracing:
        tracemalloc.start()
    started = time.monotonic()
    try:
        with time_bound(timeout):
            slim(input_path, output_path, level=level, verify=False)
        outcome = Outcome("ok")
    except BinslimError as exc:
        outcome = Outcome("error", str(exc))
        if "\n" in str(exc) or not str(exc):
            outcome.violations.append(f"error message is not one line: {str(exc)!r}")
    except CaseTimeout as exc:
        outcome = Outcome("bug", f"hang: {exc}")
    except Exception as exc:  # noqa: BLE001 - the CLI would print "internal error" for it
        outcome = Outcome("bug", f"{type(exc).__name__}: {exc}")
    finally:
        if tracing:
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
    outcome.seconds = time.monotonic() - started
    if tracing:
        outcome.peak_memory = peak
        if memory_limit is not None and peak > memory_limit:
            outcome.violations.append(f"allocated {peak:,} bytes at peak (limit {memory_limit:,})")
    return outcome


def leftover_temps(folder: str) -> list[str]:
    return sorted(n for n in os.listdir(folder) if n.startswith(TEMP_PREFIX))


_NUMBER = re.compile(r"0x[0-9a-fA-F]+|\b[0-9a-fA-F]*[0-9][0-9a-fA-F]*\b")
_BRACKETED = re.compile(r"\[\s*N\]")


def readelf_complaints(path: str) -> tuple[int, set[str]] | None:
    """(exit status, set of normalised stderr lines) of ``readelf -a -W``, or None when readelf itself hangs.

    Numbers are replaced (section indices and offsets legitimately change) and the file name is dropped.
    """
    try:
        done = subprocess.run(
            ["readelf", "-a", "-W", path], capture_output=True, timeout=READELF_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired:
        return None
    text = done.stderr.decode("utf-8", "replace").replace(path, "FILE")
    if _headers_phnum_is_xnum(path):
        # readelf 2.40 does not know that section 0's sh_info holds the count when e_phnum is PN_XNUM.
        text = re.sub(r"readelf: Warning: \[ *0\]: Unexpected value \(\d+\) in info field\.\n?", "", text)
    # readelf sometimes ends a warning without a newline: split before each "readelf: ".
    messages = re.split(r"\n|(?=readelf: )", text)
    return done.returncode, {
        _BRACKETED.sub("[N]", _NUMBER.sub("N", m.strip())) for m in messages if m.strip()
    }


def _headers_phnum_is_xnum(path: str) -> bool:
    with open(path, "rb") as stream:
        data = stream.read(64)
    if len(data) < 52 or data[4] not in (1, 2) or data[5] not in (1, 2):
        return False
    _, at, size = field_spec(EHDR_FIELDS[data[4] == 2], "e_phnum")
    return int.from_bytes(data[at : at + size], "little" if data[5] == 1 else "big") == PN_XNUM


# Complaints that are not new when the input already drew the second kind: readelf follows garbage the input
# carried (e.g. an unwind table decoded from code) to addresses it maps through unloaded sections, and where
# those land depends on the file's size. The section layout itself is checked by segment_violations and
# section_violations, not by these messages.
FAIR_FOLLOWUPS = (
    (
        re.compile(r"extends past end of file for unwind data"),
        re.compile(r"index table entry|compact model|unwind", re.IGNORECASE),
    ),
)


def _fair_followup(line: str, before: set[str]) -> bool:
    return any(new.search(line) and any(old.search(b) for b in before) for new, old in FAIR_FOLLOWUPS)


def new_readelf_complaints(
    input_path: str, output_path: str, excused: Sequence[re.Pattern[str]] = ()
) -> list[str]:
    """readelf's complaints about the output that it did not make about the input, less ``excused`` ones
    (and a failing exit status when those were all it had to say)."""
    before, after = readelf_complaints(input_path), readelf_complaints(output_path)
    if before is None:
        return []  # readelf cannot judge this input: no oracle
    if after is None:
        return ["readelf hangs on the output but not on the input"]
    new = [line for line in after[1] - before[1] if not _fair_followup(line, before[1])]
    problems = sorted(line for line in new if not any(pattern.search(line) for pattern in excused))
    if after[0] < 0:
        problems.append(f"readelf killed by signal {-after[0]} on the output")
    elif after[0] != 0 and before[0] == 0 and (problems or not new):
        problems.append(f"readelf exits {after[0]} on the output, 0 on the input")
    return problems


_DYNAMIC_PAST_END = re.compile(r"the dynamic segment offset \+ size exceeds the size of the file")


def _excused_complaints(output: bytes) -> list[re.Pattern[str]]:
    """A PT_DYNAMIC without file bytes (possible only in a damaged input) has no place in the file, so a
    file that ends at its last segment's bytes may end before it; readelf still checks its offset."""
    h = _headers(output)
    if h is None or h.phoff + h.phnum * h.phentsize > len(output):
        return []
    empty = [p for p in _phdrs(output, h) if p["p_type"] == PT_DYNAMIC and not p["p_filesz"]]
    return [_DYNAMIC_PAST_END] if any(p["p_offset"] > len(output) for p in empty) else []


@dataclass(frozen=True)
class _Headers:
    is64: bool
    order: str
    phoff: int
    phnum: int
    phentsize: int


def _headers(data: bytes) -> _Headers | None:
    """The program header table's place, parsed independently of binslim. None when it cannot be read."""
    if len(data) < 52 or data[:4] != b"\x7fELF" or data[4] not in (1, 2) or data[5] not in (1, 2):
        return None
    is64, order = data[4] == 2, "<" if data[5] == 1 else ">"
    fields = {n: (o, s) for n, o, s in EHDR_FIELDS[is64]}

    def get(name: str) -> int:
        at, size = fields[name]
        return int.from_bytes(data[at : at + size], "little" if order == "<" else "big")

    phnum, shoff = get("e_phnum"), get("e_shoff")
    if phnum == PN_XNUM and shoff:  # the count is in section 0 (0 there means none: keep PN_XNUM)
        _, info_at, _ = field_spec(SHDR_FIELDS[is64], "sh_info")
        info = data[shoff + info_at : shoff + info_at + 4]
        phnum = int.from_bytes(info, "little" if order == "<" else "big") or PN_XNUM
    return _Headers(is64, order, get("e_phoff"), phnum, 56 if is64 else 32)


def _phdrs(data: bytes, h: _Headers) -> list[dict[str, int]]:
    entries = []
    for index in range(h.phnum):
        base = h.phoff + index * h.phentsize
        entries.append(
            {
                n: int.from_bytes(data[base + o : base + o + s], "little" if h.order == "<" else "big")
                for n, o, s in PHDR_FIELDS[h.is64]
            }
        )
    return entries


def _masked(data: bytes, h: _Headers) -> bytearray:
    """``data`` with the fields that a new section table, a trimmed or a moved segment change, zeroed."""
    masked = bytearray(data)
    spans = [(o, s) for n, o, s in EHDR_FIELDS[h.is64] if n in ("e_shoff", "e_shnum", "e_shstrndx")]
    for name in ("p_offset", "p_filesz"):
        _, at, length = field_spec(PHDR_FIELDS[h.is64], name)
        spans += [(h.phoff + i * h.phentsize + at, length) for i in range(h.phnum)]
    for at, length in spans:
        if at + length <= len(masked):
            masked[at : at + length] = bytes(length)
    return masked


def segment_violations(original: bytes, output: bytes) -> list[str]:
    """Every segment's bytes and every program header unchanged; the ELF header too, but for the section table
    fields. A segment may move in the file (as GNU strip moves them over removed sections) if a PT_LOAD keeps
    its offset congruent modulo p_align. A last PT_LOAD may end earlier when only zeros are cut (the loader
    zero-fills up to p_memsz)."""
    h = _headers(original)
    if h is None:
        return ["binslim accepted an input whose ELF header cannot be parsed"]
    if h.phnum and h.phoff + h.phnum * h.phentsize > len(original):
        return ["binslim accepted an input whose program headers are past the end"]
    if _headers(output) != h:
        return ["ELF class, byte order or program header table changed"]
    before, after = _phdrs(original, h), _phdrs(output, h)
    masked_before, masked_after = _masked(original, h), _masked(output, h)
    problems = []
    ehdr_size = 64 if h.is64 else 52
    if masked_before[:ehdr_size] != masked_after[:ehdr_size]:
        problems.append("ELF header changed beyond e_shoff/e_shnum/e_shstrndx")
    shortened = 0
    placement = ("p_offset", "p_filesz")
    for index, (old, new) in enumerate(zip(before, after)):
        if {k: v for k, v in old.items() if k not in placement} != {
            k: v for k, v in new.items() if k not in placement
        }:
            problems.append(f"program header {index} changed: {old} -> {new}")
            continue
        old_size, new_size, start, new_start = (
            old["p_filesz"],
            new["p_filesz"],
            old["p_offset"],
            new["p_offset"],
        )
        if new_start != start and old_size:
            align = old["p_align"]
            if old["p_type"] == PT_LOAD and align > 1 and new_start % align != start % align:
                problems.append(
                    f"segment {index} moved from {start} to {new_start}, off its alignment {align}"
                )
        if new_size > old_size:
            problems.append(f"segment {index} grew from {old_size} to {new_size} bytes")
            continue
        if new_size < old_size:
            shortened += 1
            cut = original[start + new_size : start + old_size]
            if old["p_type"] != PT_LOAD or old["p_memsz"] < old_size or cut.count(0) != len(cut):
                problems.append(
                    f"segment {index} lost {old_size - new_size} bytes that are not zero padding of a PT_LOAD"
                )
        if masked_before[start : start + new_size] != masked_after[new_start : new_start + new_size]:
            problems.append(f"segment {index} bytes changed")
    if shortened > 1:
        problems.append(f"{shortened} segments were shortened (at most the last one may be)")
    return problems


def section_violations(output_path: str) -> list[str]:
    """The output's own section table: binslim reads it back, and every section's bytes lie inside it."""
    try:
        with ElfFile(output_path) as elf:
            return [
                f"section {s.index} ({s.name}) ends at {s.file_end}, past the output's {elf.size} bytes"
                for s in elf.sections
                if s.has_file_bytes and s.file_end > elf.size
            ]
    except BinslimError as exc:
        return [f"binslim cannot read its own output: {exc}"]


def without_section_table(data: bytes) -> bytes:
    """``data`` with e_shoff, e_shnum and e_shstrndx zeroed."""
    hidden = bytearray(data)
    is64, order = data[4] == 2, "little" if data[5] == 1 else "big"
    for name, at, size in EHDR_FIELDS[is64]:
        if name in ("e_shoff", "e_shnum", "e_shstrndx"):
            hidden[at : at + size] = (0).to_bytes(size, order)
    return bytes(hidden)


def check_case(
    case: Case,
    work_dir: str,
    *,
    readelf: bool = True,
    timeout: float = CASE_TIMEOUT,
    memory_limit: int | None = MEMORY_LIMIT,
) -> Outcome:
    """Run binslim on ``case`` in the empty folder ``work_dir`` and check every invariant."""
    input_path = os.path.join(work_dir, "input")
    output_dir = os.path.join(work_dir, "out")
    output_path = os.path.join(output_dir, "output")
    Path(input_path).write_bytes(case.data)
    os.chmod(input_path, 0o755)
    os.mkdir(output_dir)
    outcome = run_library(
        input_path, output_path, level=case.level, timeout=timeout, memory_limit=memory_limit
    )
    problems = outcome.violations
    if Path(input_path).read_bytes() != case.data:
        problems.append("input changed")
    temps = leftover_temps(output_dir) + leftover_temps(work_dir)
    if temps:
        problems.append(f"temporary files left behind: {temps}")
    if outcome.status == "ok":
        output = Path(output_path).read_bytes() if os.path.exists(output_path) else None
        if output is None:
            problems.append("succeeded without an output")
        else:
            if len(output) > len(case.data):
                problems.append(f"output ({len(output)} bytes) larger than input ({len(case.data)} bytes)")
            problems += segment_violations(case.data, output)
            problems += section_violations(output_path)
            if readelf and output != case.data:  # an identical copy draws identical complaints
                baseline = input_path
                if case.level == "sections":
                    # Without section headers readelf reads notes and unwind tables through the segments:
                    # judge the output against the input as the loader sees it, its section table hidden.
                    baseline = os.path.join(work_dir, "input-without-sections")
                    Path(baseline).write_bytes(without_section_table(case.data))
                complaints = new_readelf_complaints(baseline, output_path, _excused_complaints(output))
                problems += [f"new readelf complaint: {line}" for line in complaints]
    elif os.path.lexists(output_path):
        problems.append(f"output exists after {outcome.status}")
    return outcome


def cli_violations(case: Case, work_dir: str, library: Outcome, *, timeout: float = CLI_TIMEOUT) -> list[str]:
    """Run ``binslim INPUT -o OUTPUT --no-verify`` in a subprocess on the input ``check_case`` left in
    ``work_dir``; its exit status, stderr and files must agree with the library's ``outcome``."""
    input_path = os.path.join(work_dir, "input")
    output_dir = os.path.join(work_dir, "cli")
    output_path = os.path.join(output_dir, "output")
    os.mkdir(output_dir)
    env = {k: v for k, v in os.environ.items() if k != "BINSLIM_DEBUG"}

    def limit_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (CLI_ADDRESS_SPACE, CLI_ADDRESS_SPACE))

    try:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "binslim",
                input_path,
                "-o",
                output_path,
                "--no-verify",
                *CLI_LEVEL_FLAGS[case.level],
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            check=False,
            preexec_fn=limit_memory,
        )
    except subprocess.TimeoutExpired:
        return [f"CLI still running after {timeout:g} s"]
    problems = []
    if done.returncode < 0:
        problems.append(f"CLI killed by signal {-done.returncode}")
    elif done.returncode not in (0, 1):
        problems.append(f"CLI exit status {done.returncode}")
    if "Traceback" in done.stderr or "internal error" in done.stderr:
        problems.append(f"CLI crashed: {done.stderr.strip()[-500:]}")
    if done.returncode == 1:
        lines = done.stderr.splitlines()
        if len(lines) != 1 or not lines[0].startswith("error: "):
            problems.append(f"CLI failure is not one 'error:' line: {done.stderr!r}")
    if (done.returncode == 0) != (library.status == "ok"):
        problems.append(f"CLI exit {done.returncode} but the library {library.status}: {library.message}")
    if Path(input_path).read_bytes() != case.data:
        problems.append("CLI changed the input")
    if leftover_temps(output_dir):
        problems.append(f"CLI left temporary files: {leftover_temps(output_dir)}")
    if done.returncode != 0 and os.path.lexists(output_path):
        problems.append("CLI failed but wrote an output")
    library_output = os.path.join(work_dir, "out", "output")
    if done.returncode == 0 and library.status == "ok":
        if Path(output_path).read_bytes() != Path(library_output).read_bytes():
            problems.append("CLI output differs from the library's")
    return problems


# -- campaigns -----------------------------------------------------------------------------------------------


@dataclass
class CaseReport:
    index: int
    seed: str
    mutations: tuple[str, ...]
    status: str
    message: str
    problems: list[str]
    seconds: float
    peak_memory: int


_worker_seeds: list[Seed] = []


def _init_worker(fixture_paths: Mapping[str, str]) -> None:
    _worker_seeds[:] = load_seeds(fixture_paths)


def run_one(
    campaign_seed: int,
    index: int,
    *,
    cli_every: int = 0,
    readelf: bool = True,
    save_dir: str | None = None,
    save_always: bool = False,
    seeds: Sequence[Seed] | None = None,
) -> CaseReport:
    case = random_case(seeds or _worker_seeds, campaign_seed, index)
    with tempfile.TemporaryDirectory(prefix="binslim-fuzz-") as work_dir:
        outcome = check_case(case, work_dir, readelf=readelf)
        problems = list(outcome.violations)
        if outcome.status == "bug":
            problems.insert(0, outcome.message)
        if cli_every and index % cli_every == 0:
            problems += cli_violations(case, work_dir, outcome)
        if save_dir and (problems or save_always):
            os.makedirs(save_dir, exist_ok=True)
            stem = os.path.join(save_dir, f"case-{campaign_seed}-{index}")
            Path(stem + ".elf").write_bytes(case.data)
            Path(stem + ".txt").write_text(case.describe() + "\n" + "\n".join(problems) + "\n")
    return CaseReport(
        index,
        case.describe().split(": ", 1)[0],  # the seed, and the level when not "all"
        case.mutations,
        outcome.status,
        outcome.message,
        problems,
        outcome.seconds,
        outcome.peak_memory,
    )


def _run_indexed(args: tuple[int, int, int, bool, str | None]) -> CaseReport:
    campaign_seed, index, cli_every, readelf, save_dir = args
    return run_one(campaign_seed, index, cli_every=cli_every, readelf=readelf, save_dir=save_dir)


def signature(problem: str) -> str:
    """A failure's kind, for grouping: numbers and quoted values dropped."""
    return _NUMBER.sub("N", re.sub(r"'[^']*'|\{.*\}", "...", problem))[:160]


def campaign(
    fixture_paths: Mapping[str, str],
    *,
    seed: int,
    cases: int,
    start: int = 0,
    jobs: int = 1,
    cli_every: int = 0,
    readelf: bool = True,
    save_dir: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[CaseReport]:
    """Run cases ``start .. start+cases-1`` of campaign ``seed``; returns every case's report. A worker that
    dies (a crash in binslim would be one) stops the campaign with BrokenProcessPool."""
    import concurrent.futures
    import multiprocessing

    tasks = [(seed, index, cli_every, readelf, save_dir) for index in range(start, start + cases)]
    reports: list[CaseReport] = []
    failing = 0
    pool = None
    if jobs <= 1:
        _init_worker(fixture_paths)
        iterator: Iterator[CaseReport] = map(_run_indexed, tasks)
    else:
        pool = concurrent.futures.ProcessPoolExecutor(
            jobs,
            mp_context=multiprocessing.get_context("fork"),
            initializer=_init_worker,
            initargs=(fixture_paths,),
        )
        iterator = pool.map(_run_indexed, tasks, chunksize=8)
    try:
        for report in iterator:
            reports.append(report)
            failing += bool(report.problems)
            if progress is not None:
                progress(len(reports), failing)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    return reports


def summarize(reports: Sequence[CaseReport], seed: int) -> str:
    statuses = collections.Counter(r.status for r in reports)
    failures: dict[str, list[CaseReport]] = collections.defaultdict(list)
    for report in reports:
        for problem in report.problems:
            failures[signature(problem)].append(report)
    slowest = max(reports, key=lambda r: r.seconds) if reports else None
    hungriest = max(reports, key=lambda r: r.peak_memory) if reports else None
    lines = [
        f"{len(reports)} cases (seed {seed}): " + ", ".join(f"{n} {s}" for s, n in sorted(statuses.items())),
        f"failing cases: {sum(1 for r in reports if r.problems)}",
    ]
    if slowest is not None and hungriest is not None:
        lines.append(
            f"slowest case: {slowest.seconds * 1000:.0f} ms (#{slowest.index}); "
            f"largest peak allocation: {hungriest.peak_memory:,} bytes (#{hungriest.index})"
        )
    for kind, examples in sorted(failures.items(), key=lambda item: -len(item[1])):
        first = examples[0]
        lines.append(
            f"\n{len(examples)} x {kind}\n  e.g. case {first.index}: {first.seed}: "
            + "; ".join(first.mutations)
        )
        lines.append(f"  replay: python3 tests/fuzz_elf.py --seed {seed} --case {first.index}")
    return "\n".join(lines)


def fixture_paths_from_build() -> dict[str, str]:
    from testdata.build import build_all
    from tests.helpers import FIXTURE_DIR

    return {name: fixture.path for name, fixture in build_all(FIXTURE_DIR).items()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0, help="campaign seed (default 0)")
    parser.add_argument("--cases", type=int, default=1000, help="number of cases (default 1000)")
    parser.add_argument("--start", type=int, default=0, help="index of the first case")
    parser.add_argument("--case", type=int, help="replay this one case and print its details")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="worker processes")
    parser.add_argument(
        "--cli-every",
        type=int,
        default=50,
        metavar="N",
        help="also run every Nth case through the CLI in a subprocess (0: never)",
    )
    parser.add_argument("--no-readelf", action="store_true", help="skip the readelf oracle (faster)")
    parser.add_argument("--save-dir", help="write each failing input and its description here")
    args = parser.parse_args(argv)
    paths = fixture_paths_from_build()
    if args.case is not None:
        report = run_one(
            args.seed,
            args.case,
            cli_every=1,
            readelf=not args.no_readelf,
            save_dir=args.save_dir,
            save_always=True,
            seeds=load_seeds(paths),
        )
        print(f"case {args.case}: {report.seed}: " + "; ".join(report.mutations))
        print(f"status: {report.status} {report.message}".rstrip())
        for problem in report.problems:
            print(f"  FAIL {problem}")
        return 1 if report.problems else 0
    started = time.monotonic()

    def progress(done: int, failing: int) -> None:
        if done % 1000 == 0 or done == args.cases:
            print(
                f"  {done}/{args.cases} cases, {failing} failing, {time.monotonic() - started:.0f} s",
                file=sys.stderr,
                flush=True,
            )

    reports = campaign(
        paths,
        seed=args.seed,
        cases=args.cases,
        start=args.start,
        jobs=args.jobs,
        cli_every=args.cli_every,
        readelf=not args.no_readelf,
        save_dir=args.save_dir,
        progress=progress,
    )
    print(summarize(reports, args.seed))
    print(f"\n{time.monotonic() - started:.1f} s")
    return 1 if any(r.problems for r in reports) else 0


__all__ = [
    "MUTATORS",
    "SEED_FIXTURES",
    "Case",
    "CaseReport",
    "HypothesisSource",
    "Outcome",
    "RandomSource",
    "Seed",
    "campaign",
    "check_case",
    "cli_violations",
    "load_seeds",
    "make_case",
    "random_case",
    "run_library",
    "segment_violations",
    "summarize",
]

if __name__ == "__main__":
    sys.exit(main())
