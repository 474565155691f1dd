"""Rewrite a symbol table and the tables that point into it when section indices change.

Needed when sections are removed from a file that keeps its .symtab (relocatable objects, --strip-debug):
symbols name sections by index, relocations and groups name symbols by index.
"""

from __future__ import annotations

import struct
import sys
from array import array
from collections.abc import Iterable, Iterator, Mapping

from ..errors import MalformedELFError, UnsupportedError, file_error
from . import constants as c
from .reader import NAME_ENCODING, ElfFile, Section
from .writer import build_string_table


class SymbolRewrite:
    """New contents for a symbol table (and its SHN_XINDEX table), plus old → new symbol indices."""

    symtab: Section
    symbol_map: array  # type: ignore[type-arg]  # old index -> new index, -1 when dropped
    kept_count: int
    first_global: int
    xindex: Section | None

    def __init__(
        self,
        elf: ElfFile,
        symtab: Section,
        xindex: Section | None,
        section_map: Mapping[int, int],
        *,
        referenced: set[int] | None = None,
        strtab: Section | None = None,
    ):
        """``referenced``: symbol indices that relocations or groups use; when given, other section symbols
        and all file symbols (debugging symbols, as GNU strip calls them) are dropped. ``strtab``: rebuild
        this string table with only the kept names."""
        self.elf, self.symtab, self.xindex, self.section_map = elf, symtab, xindex, section_map
        self.referenced = referenced
        self.strtab = strtab
        self.name_map: dict[int, int] | None = None
        self.strtab_bytes = b""
        entsize = self._sym_struct().size
        if symtab.sh_size % entsize:
            raise file_error(elf.path, f"{symtab.name}: size is not a multiple of the symbol size")
        count = symtab.sh_size // entsize
        if xindex is not None and xindex.sh_size < count * 4:
            raise file_error(elf.path, f"{xindex.name}: shorter than its symbol table")
        if xindex is not None and xindex.sh_size % 4:
            raise file_error(elf.path, f"{xindex.name}: size is not a multiple of 4", MalformedELFError)
        self.symbol_map = array("q")
        kept = 0
        first_global = 0
        for index, (sym, shndx) in enumerate(self._iter_symbols()):
            if self._keep(index, sym, shndx):
                self.symbol_map.append(kept)
                kept += 1
                if index < symtab.sh_info:
                    first_global = kept
            else:
                self.symbol_map.append(-1)
        self.kept_count = kept
        self.first_global = first_global if symtab.sh_info else 0
        if strtab is not None:
            self._rebuild_strtab(strtab)

    def _rebuild_strtab(self, strtab: Section) -> None:
        old = self.elf.read_section(strtab)
        names: dict[int, str] = {}
        # Names may overlap (suffix sharing); a hostile table makes their total quadratic in its size.
        budget = 4 * len(old) + 4096
        for index, (sym, _) in enumerate(self._iter_symbols()):
            if self.symbol_map[index] >= 0 and sym[0] and sym[0] not in names:
                if sym[0] >= len(old):
                    raise file_error(self.elf.path, f"symbol #{index} name is past the end of {strtab.name}")
                end = old.find(b"\0", sym[0])
                names[sym[0]] = old[sym[0] : end if end >= 0 else len(old)].decode(NAME_ENCODING)
                budget -= len(names[sym[0]])
                if budget < 0:
                    return  # keep the table as it is
        table, offsets = build_string_table(names.values())
        if len(table) < len(old):
            self.strtab_bytes = table
            self.name_map = {old_offset: offsets[name] for old_offset, name in names.items()}

    # -- reading ----------------------------------------------------------------------------------------

    def _sym_struct(self) -> struct.Struct:
        layout = self.elf.layout
        return struct.Struct(layout.order + ("IBBHQQ" if layout.is64 else "IIIBBH"))

    def _unpack(self, fields: tuple[int, ...]) -> tuple[int, int, int, int, int, int]:
        """(name, value, size, info, other, shndx) whatever the class."""
        if self.elf.layout.is64:
            name, info, other, shndx, value, size = fields
        else:
            name, value, size, info, other, shndx = fields
        return name, value, size, info, other, shndx

    def _pack(self, name: int, value: int, size: int, info: int, other: int, shndx: int) -> bytes:
        if self.elf.layout.is64:
            return self._sym_struct().pack(name, info, other, shndx, value, size)
        return self._sym_struct().pack(name, value, size, info, other, shndx)

    def _iter_symbols(self) -> Iterator[tuple[tuple[int, int, int, int, int, int], int]]:
        """Each symbol with its real section index (SHN_XINDEX resolved)."""
        sym_struct = self._sym_struct()
        xindex_words = self._iter_xindex()
        for chunk in self.elf.iter_section_chunks(self.symtab._replace(sh_entsize=sym_struct.size)):
            for fields in sym_struct.iter_unpack(chunk):
                sym = self._unpack(fields)
                extended = next(xindex_words) if xindex_words is not None else 0
                shndx = extended if sym[5] == c.SHN_XINDEX else sym[5]
                yield sym, shndx

    def _iter_xindex(self) -> Iterator[int] | None:
        if self.xindex is None:
            return None
        word = struct.Struct(self.elf.layout.order + "I")

        def words() -> Iterator[int]:
            assert self.xindex is not None
            for chunk in self.elf.iter_section_chunks(self.xindex._replace(sh_entsize=4)):
                for (value,) in word.iter_unpack(chunk):
                    yield value

        return words()

    def _keep(self, index: int, sym: tuple[int, ...], shndx: int) -> bool:
        if (0 < shndx < c.SHN_LORESERVE or sym[5] == c.SHN_XINDEX) and shndx >= len(self.elf.sections):
            raise file_error(
                self.elf.path,
                f"{self.symtab.name}: symbol #{index} is in section {shndx}, which does not exist",
                MalformedELFError,
            )
        if index == 0:
            return True
        symbol_type = sym[3] & 0xF
        if self.referenced is not None and index not in self.referenced:
            if symbol_type in (c.STT_SECTION, c.STT_FILE):
                return False  # unused section symbols and file symbols: debugging symbols to GNU strip too
        if not (0 < shndx < c.SHN_LORESERVE or sym[5] == c.SHN_XINDEX):
            return True  # SHN_UNDEF, SHN_ABS, SHN_COMMON...
        if shndx in self.section_map:
            return True
        if symbol_type == c.STT_SECTION or sym[3] >> 4 == 0:
            return False  # section symbols and locals of a removed section go with it
        raise file_error(
            self.elf.path, f"global symbol #{index} is defined in a removed section", UnsupportedError
        )

    # -- writing ----------------------------------------------------------------------------------------

    @property
    def symtab_size(self) -> int:
        return self.kept_count * self._sym_struct().size

    @property
    def xindex_size(self) -> int:
        return self.kept_count * 4

    def symtab_chunks(self) -> Iterator[bytes]:
        out = bytearray()
        for index, (sym, shndx) in enumerate(self._iter_symbols()):
            if self.symbol_map[index] < 0:
                continue
            name, value, size, info, other, raw_shndx = sym
            if raw_shndx == c.SHN_XINDEX or 0 < raw_shndx < c.SHN_LORESERVE:
                new = self.section_map.get(shndx, 0)  # only the null symbol may name a removed section
                raw_shndx = new if new < c.SHN_LORESERVE and raw_shndx != c.SHN_XINDEX else c.SHN_XINDEX
            if self.name_map is not None and name:
                name = self.name_map[name]
            out += self._pack(name, value, size, info, other, raw_shndx)
            if len(out) >= 1 << 20:
                yield bytes(out)
                out.clear()
        if out:
            yield bytes(out)

    def xindex_chunks(self) -> Iterator[bytes]:
        word = struct.Struct(self.elf.layout.order + "I")
        out = bytearray()
        for index, (sym, shndx) in enumerate(self._iter_symbols()):
            if self.symbol_map[index] < 0:
                continue
            out += word.pack(self.section_map.get(shndx, 0) if sym[5] == c.SHN_XINDEX else 0)
            if len(out) >= 1 << 20:
                yield bytes(out)
                out.clear()
        if out:
            yield bytes(out)

    def new_symbol(self, old: int, where: str) -> int:
        if old >= len(self.symbol_map) or self.symbol_map[old] < 0:
            raise file_error(
                self.elf.path,
                f"{where} refers to symbol #{old}, which is removed or missing",
                UnsupportedError,
            )
        return int(self.symbol_map[old])

    def relocation_chunks(self, relocs: Section) -> Iterator[bytes]:
        """The relocation section with symbol indices renumbered."""
        layout = self.elf.layout
        if layout.is64 and self.elf.header.e_machine == c.EM_MIPS:
            raise file_error(
                self.elf.path, "renumbering MIPS64 relocations is not supported", UnsupportedError
            )
        rela = relocs.sh_type == c.SHT_RELA
        if layout.is64:
            fmt, shift, type_mask = ("QQq" if rela else "QQ"), 32, 0xFFFFFFFF
        else:
            fmt, shift, type_mask = ("IIi" if rela else "II"), 8, 0xFF
        entry = struct.Struct(layout.order + fmt)
        if relocs.sh_size % entry.size:
            raise file_error(self.elf.path, f"{relocs.name}: size is not a multiple of the relocation size")
        for chunk in self.elf.iter_section_chunks(relocs._replace(sh_entsize=entry.size)):
            out = bytearray()
            for fields in entry.iter_unpack(chunk):
                info = fields[1]
                symbol = self.new_symbol(info >> shift, relocs.name) if info >> shift else 0
                out += entry.pack(fields[0], (symbol << shift) | (info & type_mask), *fields[2:])
            yield bytes(out)


def referenced_symbols(elf: ElfFile, symtab: Section, users: Iterable[Section]) -> set[int]:
    """Symbol indices used by relocation sections and groups that link to ``symtab``."""
    layout = elf.layout
    used: set[int] = set()
    for user in users:
        if user.sh_link != symtab.index:
            continue
        if user.sh_type == c.SHT_GROUP:
            used.add(user.sh_info)
            continue
        if user.sh_type not in (c.SHT_REL, c.SHT_RELA):
            continue
        if layout.is64 and elf.header.e_machine == c.EM_MIPS:
            raise file_error(elf.path, "renumbering MIPS64 relocations is not supported", UnsupportedError)
        rela = user.sh_type == c.SHT_RELA
        fmt = ("QQq" if rela else "QQ") if layout.is64 else ("IIi" if rela else "II")
        shift = 32 if layout.is64 else 8
        entry = struct.Struct(layout.order + fmt)
        for chunk in elf.iter_section_chunks(user._replace(sh_entsize=entry.size)):
            used.update(
                fields[1] >> shift
                for fields in entry.iter_unpack(chunk[: len(chunk) // entry.size * entry.size])
            )
    return used


def sections_defining_globals(elf: ElfFile, symtab: Section) -> set[int]:
    """Indices of the sections in which ``symtab`` defines a global or weak symbol."""
    layout = elf.layout
    sym_struct = struct.Struct(layout.order + ("IBBHQQ" if layout.is64 else "IIIBBH"))
    info_at, shndx_at = (1, 3) if layout.is64 else (3, 5)
    xindex = next(
        (s for s in elf.sections if s.sh_type == c.SHT_SYMTAB_SHNDX and s.sh_link == symtab.index), None
    )
    extended = array("I", elf.read_section(xindex)) if xindex is not None else array("I")
    if xindex is not None and layout.little_endian != (sys.byteorder == "little"):
        extended.byteswap()
    found: set[int] = set()
    index = 0
    for chunk in elf.iter_section_chunks(symtab._replace(sh_entsize=sym_struct.size)):
        for fields in sym_struct.iter_unpack(chunk[: len(chunk) // sym_struct.size * sym_struct.size]):
            shndx = fields[shndx_at]
            if shndx == c.SHN_XINDEX and index < len(extended):
                shndx = extended[index]
            if fields[info_at] >> 4 and 0 < shndx < len(elf.sections):
                found.add(shndx)
            index += 1
    return found


def group_members(elf: ElfFile, group: Section) -> tuple[int, list[int]]:
    """(flags, member section indices) of a SHT_GROUP section."""
    raw = elf.read_section(group)
    if len(raw) < 4 or len(raw) % 4:
        raise file_error(elf.path, f"{group.name}: malformed section group")
    words = list(struct.unpack(f"{elf.layout.order}{len(raw) // 4}I", raw))
    return words[0], words[1:]


def pack_group(elf: ElfFile, flags: int, members: Iterable[int]) -> bytes:
    words = [flags, *members]
    return struct.pack(f"{elf.layout.order}{len(words)}I", *words)
