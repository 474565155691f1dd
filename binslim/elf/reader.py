"""Read and validate an ELF file's headers without loading a big file's contents.

Every offset, size and count is checked against the file size before it is used, so a hostile file can neither
make us read past its end nor allocate more than its own size in header tables.
"""

from __future__ import annotations

import array
import functools
import os
import stat
import struct
import sys
from collections.abc import Iterator

from .._record import Record
from ..errors import MalformedELFError, NotELFError, file_error
from . import constants as c

# Section names are arbitrary bytes; latin-1 maps each byte to one character, so names round-trip exactly.
NAME_ENCODING = "latin-1"
# Above this, .shstrtab is read name by name instead of whole.
_SHSTRTAB_READ_WHOLE_LIMIT = 16 << 20
_MAX_NAME = 4096
# Zero padding longer than this at a segment's end is left alone (it is not linker alignment).
_MAX_ZERO_TAIL = 1 << 16
# A file up to this size is read whole, in one call, when opened: a tree of small programs then costs one
# read each instead of one per header table, and the writer can build the output in memory (see ``data``).
IN_MEMORY_BYTES = 1 << 20


class Segment(Record):
    index: int  # type: ignore[assignment]  # the header's number; shadows tuple.index on purpose
    p_type: int
    p_flags: int
    p_offset: int
    p_vaddr: int
    p_paddr: int
    p_filesz: int
    p_memsz: int
    p_align: int

    @property
    def file_end(self) -> int:
        return self.p_offset + self.p_filesz


class Section(Record):
    index: int  # type: ignore[assignment]  # the header's number; shadows tuple.index on purpose
    name: str
    sh_name: int
    sh_type: int
    sh_flags: int
    sh_addr: int
    sh_offset: int
    sh_size: int
    sh_link: int
    sh_info: int
    sh_addralign: int
    sh_entsize: int

    @property
    def has_file_bytes(self) -> bool:
        # Section 0's size field may hold the section count (extended numbering), never bytes.
        return self.index != 0 and self.sh_type not in (c.SHT_NOBITS, c.SHT_NULL) and self.sh_size > 0

    @property
    def file_end(self) -> int:
        return self.sh_offset + (self.sh_size if self.has_file_bytes else 0)

    @property
    def is_alloc(self) -> bool:
        return bool(self.sh_flags & c.SHF_ALLOC)


@functools.lru_cache(maxsize=16)
def _struct(fmt: str) -> struct.Struct:
    return struct.Struct(fmt)


class Layout(Record):
    """Struct formats for one ELF class and byte order."""

    elfclass: int
    little_endian: bool

    @property
    def order(self) -> str:
        return "<" if self.little_endian else ">"

    @property
    def is64(self) -> bool:
        return self.elfclass == c.ELFCLASS64

    @property
    def ehdr(self) -> struct.Struct:
        return _struct(self.order + ("16sHHIQQQIHHHHHH" if self.is64 else "16sHHIIIIIHHHHHH"))

    @property
    def phdr(self) -> struct.Struct:
        return _struct(self.order + ("IIQQQQQQ" if self.is64 else "IIIIIIII"))

    @property
    def shdr(self) -> struct.Struct:
        return _struct(self.order + ("IIQQQQIIQQ" if self.is64 else "IIIIIIIIII"))

    @property
    def word_size(self) -> int:
        return 8 if self.is64 else 4

    # Offsets of the fields the writer patches in the ELF header.
    @property
    def e_phoff_at(self) -> tuple[int, str]:
        return (32, "Q") if self.is64 else (28, "I")

    @property
    def e_shoff_at(self) -> tuple[int, str]:
        return (40, "Q") if self.is64 else (32, "I")

    @property
    def e_shnum_at(self) -> int:
        return 60 if self.is64 else 48

    @property
    def e_shstrndx_at(self) -> int:
        return 62 if self.is64 else 50

    def pack_shdr(self, s: Section) -> bytes:
        return self.shdr.pack(
            s.sh_name,
            s.sh_type,
            s.sh_flags,
            s.sh_addr,
            s.sh_offset,
            s.sh_size,
            s.sh_link,
            s.sh_info,
            s.sh_addralign,
            s.sh_entsize,
        )


class ElfHeader(Record):
    elfclass: int
    little_endian: bool
    osabi: int
    e_type: int
    e_machine: int
    e_entry: int
    e_phoff: int
    e_shoff: int
    e_flags: int
    e_ehsize: int
    e_phentsize: int
    e_phnum: int  # resolved through section 0 when PN_XNUM
    e_shentsize: int
    e_shnum: int  # resolved through section 0 when 0
    e_shstrndx: int  # resolved through section 0 when SHN_XINDEX


def pread_exact(fd: int, size: int, offset: int) -> bytes:
    """pread that loops until ``size`` bytes are read (short reads are legal)."""
    chunks = []
    while size > 0:
        chunk = os.pread(fd, size, offset)
        if not chunk:
            raise EOFError(offset)
        chunks.append(chunk)
        size -= len(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def _read_whole(fd: int, size: int, path: str) -> bytes:
    """The file's ``size`` bytes; "changed while being read" when it has more or fewer."""
    chunks = []
    got = 0
    while got <= size:  # asks for one byte more than expected: a file that grew is caught
        chunk = os.pread(fd, size + 1 - got, got)
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    if got != size:
        raise file_error(path, "changed while being read")
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class ElfFile:
    """An open ELF file: headers parsed and validated; a big file's contents left on disk.

    Use as a context manager; ``fd`` stays open for streaming copies until ``close()``. ``data`` holds the
    whole file when it is at most IN_MEMORY_BYTES long (read once, at open), else None.
    """

    data: bytes | None

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            # O_NONBLOCK: a FIFO (or one swapped in since a caller's check) is refused below instead of
            # blocking this open until some writer comes; on a regular file it changes nothing.
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError as exc:
            raise file_error(path, "no such file") from exc
        except IsADirectoryError as exc:
            raise file_error(path, "is a directory, not an ELF file (use -r for trees)", NotELFError) from exc
        except PermissionError as exc:
            raise file_error(path, "permission denied") from exc
        except OSError as exc:
            raise file_error(path, f"cannot open: {exc.strerror or exc}") from exc
        self.fd = fd
        try:
            st = os.fstat(fd)
            if stat.S_ISDIR(st.st_mode):
                raise file_error(path, "is a directory, not an ELF file (use -r for trees)", NotELFError)
            if not stat.S_ISREG(st.st_mode):
                raise file_error(path, "not a regular file", NotELFError)
            self.size = st.st_size
            self.stat = st
            self.data = None
            if st.st_size <= IN_MEMORY_BYTES:
                self.data = _read_whole(fd, st.st_size, path)
            self._parse()
        except OSError as exc:  # EIO from a failing disk or a file such as /proc/self/mem
            os.close(fd)
            raise file_error(path, f"cannot read: {exc.strerror or exc}") from exc
        except BaseException:
            os.close(fd)
            raise

    # -- context management -------------------------------------------------------------------------------

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> ElfFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading -----------------------------------------------------------------------------------------

    def _malformed(self, problem: str) -> MalformedELFError:
        err = file_error(self.path, problem, MalformedELFError)
        assert isinstance(err, MalformedELFError)
        return err

    def read(self, offset: int, size: int) -> bytes:
        if offset < 0 or size < 0 or offset + size > self.size:
            raise self._malformed(f"read of {size} bytes at offset {offset} is past the end of the file")
        if self.data is not None:
            return self.data[offset : offset + size]
        try:
            return pread_exact(self.fd, size, offset)
        except EOFError as exc:
            raise file_error(self.path, "changed while being read") from exc

    def read_section(self, section: Section) -> bytes:
        if not section.has_file_bytes:
            return b""
        return self.read(section.sh_offset, section.sh_size)

    def iter_section_chunks(self, section: Section, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """Section contents in chunks, aligned to its entry size when it has one."""
        if section.sh_entsize > 0:
            chunk_size = max(section.sh_entsize, chunk_size - chunk_size % section.sh_entsize)
        offset, end = section.sh_offset, section.file_end
        while offset < end:
            size = min(chunk_size, end - offset)
            yield self.read(offset, size)
            offset += size

    # -- parsing -----------------------------------------------------------------------------------------

    def _parse(self) -> None:
        layout, osabi = self._identify()
        self.layout = layout
        (
            _,
            e_type,
            e_machine,
            _version,
            e_entry,
            e_phoff,
            e_shoff,
            e_flags,
            e_ehsize,
            e_phentsize,
            e_phnum,
            e_shentsize,
            e_shnum,
            e_shstrndx,
        ) = layout.ehdr.unpack(self.read(0, layout.ehdr.size))
        sections_raw, e_shnum, e_shstrndx, e_phnum = self._read_section_table(
            e_shoff, e_shentsize, e_shnum, e_shstrndx, e_phnum
        )
        if e_phnum:
            if e_phentsize != layout.phdr.size:
                raise self._malformed(f"program header size {e_phentsize}, expected {layout.phdr.size}")
            if e_phoff == 0 or e_phoff + e_phnum * layout.phdr.size > self.size:
                raise self._malformed(f"program header table at offset {e_phoff} is past the end of the file")
        self.header = ElfHeader(
            elfclass=layout.elfclass,
            little_endian=layout.little_endian,
            osabi=osabi,
            e_type=e_type,
            e_machine=e_machine,
            e_entry=e_entry,
            e_phoff=e_phoff,
            e_shoff=e_shoff,
            e_flags=e_flags,
            e_ehsize=e_ehsize,
            e_phentsize=e_phentsize,
            e_phnum=e_phnum,
            e_shentsize=e_shentsize,
            e_shnum=e_shnum,
            e_shstrndx=e_shstrndx,
        )
        self.segments = self._parse_segments()
        self.sections = self._parse_sections(sections_raw)

    def _identify(self) -> tuple[Layout, int]:
        """The class and byte order from e_ident (NotELFError for anything else), and the OS ABI byte."""
        if self.size == 0:
            raise file_error(self.path, "empty file, not an ELF file", NotELFError)
        ident = self.data[:16] if self.data is not None else os.pread(self.fd, 16, 0)
        if ident[:4] != c.ELFMAG:
            if ident[:2] == b"#!":
                raise file_error(self.path, "a script, not an ELF file", NotELFError)
            raise file_error(self.path, "not an ELF file", NotELFError)
        if len(ident) < 16:
            raise self._malformed("truncated ELF identification")
        elfclass, data = ident[4], ident[5]
        if elfclass not in (c.ELFCLASS32, c.ELFCLASS64):
            raise self._malformed(f"unknown ELF class {elfclass}")
        if data not in (c.ELFDATA2LSB, c.ELFDATA2MSB):
            raise self._malformed(f"unknown ELF byte order {data}")
        layout = Layout(elfclass, data == c.ELFDATA2LSB)
        if self.size < layout.ehdr.size:
            raise self._malformed("truncated ELF header")
        return layout, ident[7]

    def _read_section_table(
        self, e_shoff: int, e_shentsize: int, e_shnum: int, e_shstrndx: int, e_phnum: int
    ) -> tuple[list[tuple[int, ...]], int, int, int]:
        """The raw section headers, and (e_shnum, e_shstrndx, e_phnum) resolved through section 0 where
        extended numbering puts them."""
        if e_shoff == 0:
            return [], 0, 0, e_phnum
        shdr = self.layout.shdr
        if e_shentsize != shdr.size:
            raise self._malformed(f"section header size {e_shentsize}, expected {shdr.size}")
        if e_shoff + shdr.size > self.size:
            raise self._malformed(f"section header table at offset {e_shoff} is past the end of the file")
        section0 = shdr.unpack(self.read(e_shoff, shdr.size))
        # Extended numbering: the real counts live in section 0 when they do not fit the header fields.
        if e_shnum == 0:
            e_shnum = section0[5]
            if e_shnum == 0:
                raise self._malformed("section header table present but section count is 0")
        if e_shstrndx == c.SHN_XINDEX:
            e_shstrndx = section0[6]
        if e_phnum == c.PN_XNUM:
            e_phnum = section0[7] or c.PN_XNUM  # as readelf reads it: 0 there is no count
        if e_shoff + e_shnum * shdr.size > self.size:
            raise self._malformed(
                f"section header table ({e_shnum} entries at offset {e_shoff}) is past the end of the file"
            )
        sections_raw = list(shdr.iter_unpack(self.read(e_shoff, e_shnum * shdr.size)))
        if e_shstrndx >= e_shnum:
            raise self._malformed(f"section name table index {e_shstrndx} out of range (0..{e_shnum - 1})")
        return sections_raw, e_shnum, e_shstrndx, e_phnum

    def _parse_segments(self) -> list[Segment]:
        h, layout = self.header, self.layout
        if not h.e_phnum:
            return []
        segments = []
        raw = self.read(h.e_phoff, h.e_phnum * layout.phdr.size)
        for index, fields in enumerate(layout.phdr.iter_unpack(raw)):
            if layout.is64:
                p_type, p_flags, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, p_align = fields
            else:
                p_type, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, p_flags, p_align = fields
            segment = Segment(index, p_type, p_flags, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, p_align)
            if segment.p_filesz and segment.file_end > self.size:
                raise self._malformed(
                    f"segment {index} (offset {p_offset}, {p_filesz} bytes) extends past the end of the file"
                    " (truncated?)"
                )
            segments.append(segment)
        return segments

    def _parse_sections(self, sections_raw: list[tuple[int, ...]]) -> list[Section]:
        if not sections_raw:
            return []
        count = len(sections_raw)
        names_source = sections_raw[self.header.e_shstrndx] if self.header.e_shstrndx else None
        name_of = self._name_reader(names_source)
        # Section 0 is a placeholder; its size/link/info may hold extended counts, never bytes.
        sections = [Section(0, "", 0, *sections_raw[0][1:])]
        no_bytes = (c.SHT_NOBITS, c.SHT_NULL)
        make = tuple.__new__  # a hot loop: Section's own __new__ is a Python function
        for index in range(1, count):
            fields = sections_raw[index]
            sh_name, sh_type, sh_flags, _, sh_offset, sh_size, sh_link = fields[:7]
            name = name_of(sh_name, index)
            if sh_size and sh_type not in no_bytes and sh_offset + sh_size > self.size:
                raise self._malformed(
                    f"section {index} ({name or '?'}) at offset {sh_offset}, {sh_size} bytes,"
                    " extends past the end of the file"
                )
            if sh_link >= count:
                raise self._malformed(
                    f"section {index} ({name or '?'}) links to section {sh_link}, which does not exist"
                )
            if sh_type in (c.SHT_SYMTAB, c.SHT_DYNSYM, c.SHT_GROUP) and sh_flags & c.SHF_INFO_LINK:
                raise self._malformed(
                    f"section {index} ({name or '?'}) is flagged SHF_INFO_LINK, but its"
                    " sh_info is a symbol index"
                )
            if (
                sh_type in (c.SHT_SYMTAB, c.SHT_DYNSYM)
                and sh_link
                and sections_raw[sh_link][1] != c.SHT_STRTAB
            ):
                raise self._malformed(
                    f"symbol table {index} ({name or '?'}) takes its names from section"
                    f" {sh_link}, which is not a string table"
                )
            # The raw fields come in Section's order after (index, name).
            sections.append(make(Section, (index, name, *fields)))
        return sections

    def _name_reader(self, names_source: tuple[int, ...] | None):  # type: ignore[no-untyped-def]
        if names_source is None:
            return lambda offset, index: ""
        strtab_offset, strtab_size = names_source[4], names_source[5]
        if names_source[1] != c.SHT_STRTAB or names_source[2] & c.SHF_ALLOC:
            # The writer rebuilds the names in place of this section, which a loaded one cannot allow.
            raise self._malformed(
                f"section name table (section {self.header.e_shstrndx}) is not an unloaded string table"
            )
        if names_source[1] == c.SHT_NOBITS or strtab_offset + strtab_size > self.size:
            raise self._malformed("section name table extends past the end of the file")
        # Read whole (the usual case), the table is decoded once and each name is a slice of it.
        whole = None
        if strtab_size <= _SHSTRTAB_READ_WHOLE_LIMIT:
            whole = self.read(strtab_offset, strtab_size).decode(NAME_ENCODING)

        def name_of(offset: int, index: int) -> str:
            if offset >= strtab_size:
                if offset == 0:
                    return ""
                raise self._malformed(
                    f"section {index} name offset {offset} is past the end of the name table"
                )
            if whole is not None:
                end = whole.find("\0", offset)
                return whole[offset:] if end < 0 else whole[offset:end]
            size = min(_MAX_NAME, strtab_size - offset)
            raw = self.read(strtab_offset + offset, size).split(b"\0", 1)[0]
            return raw.decode(NAME_ENCODING)

        return name_of

    # -- derived facts -----------------------------------------------------------------------------------

    @property
    def is_relocatable(self) -> bool:
        return self.header.e_type == c.ET_REL

    @functools.cached_property
    def phnum_in_section0(self) -> bool:
        """Whether e_phnum is PN_XNUM: the segment count is section 0's sh_info (extended numbering)."""
        at = 56 if self.layout.is64 else 44
        return bool(struct.unpack(self.layout.order + "H", self.read(at, 2))[0] == c.PN_XNUM)

    @functools.cached_property
    def header_end(self) -> int:
        """End of the ELF header and program header table."""
        end = self.layout.ehdr.size
        if self.header.e_phnum:
            end = max(end, self.header.e_phoff + self.header.e_phnum * self.layout.phdr.size)
        return end

    @functools.cached_property
    def phdrs_movable(self) -> bool:
        """Whether the program header table may move in the output: it lies past every segment's file bytes
        (at the end of the file, after the debug sections, as IAR toolchains write it) and no PT_PHDR names
        it, so nothing loaded refers to where it is. GNU strip rewrites such a table too. (One in a gap
        before a segment pins nothing that moving it would free.)"""
        h = self.header
        if not h.e_phnum or h.e_phoff < self.layout.ehdr.size:
            return False
        if any(p.p_type == c.PT_PHDR for p in self.segments):
            return False
        return h.e_phoff >= max([0] + [p.file_end for p in self.segments if p.p_filesz])

    @functools.cached_property
    def pinned_header_end(self) -> int:
        """End of the headers that stay where they are: the ELF header alone when the program header table
        may move (phdrs_movable), else header_end."""
        return self.layout.ehdr.size if self.phdrs_movable else self.header_end

    @functools.cached_property
    def segments_end(self) -> int:
        """End of the headers and of every segment's file bytes."""
        return max([self.header_end] + [s.file_end for s in self.segments if s.p_filesz])

    @functools.cached_property
    def pinned_end(self) -> int:
        """End of the pinned headers and of every segment's file bytes (segments_end less a program header
        table that may move)."""
        return max([self.pinned_header_end] + [s.file_end for s in self.segments if s.p_filesz])

    @functools.cached_property
    def zero_tail(self) -> tuple[Segment, int] | None:
        """(segment, new file end) when the last segment ends in zero padding past its last section.

        The loader zero-fills a PT_LOAD's memory beyond p_filesz, so ending the file part at the last
        section maps the same bytes. GNU strip trims this padding too.
        """
        end = self.pinned_end
        last = [s for s in self.segments if s.p_filesz and s.file_end == end]
        if len(last) != 1 or last[0].p_type != c.PT_LOAD or last[0].p_memsz < last[0].p_filesz:
            return None
        segment = last[0]
        inside = [
            span_end for offset, span_end in self.file_spans if offset < end and span_end > segment.p_offset
        ]
        if not inside:
            return None
        new_end = max(
            [max(inside), self.pinned_header_end]
            + [s.file_end for s in self.segments if s.p_filesz and s is not segment]
        )
        if not segment.p_offset < new_end < end or end - new_end > _MAX_ZERO_TAIL:
            return None
        if self.read(new_end, end - new_end).count(0) != end - new_end:
            return None
        return segment, new_end

    @functools.cached_property
    def orphan_loads(self) -> tuple[Segment, ...]:
        """PT_LOADs whose file bytes nothing uses at all (see unused_tails): they keep no file byte."""
        return tuple(self.segments[index] for index, kept in self.unused_tails.items() if kept == 0)

    @functools.cached_property
    def unused_tails(self) -> dict[int, int]:
        """{segment index: file bytes to keep} for the PT_LOADs of a shared object whose file bytes from
        some point to their end nothing uses: stale copies of .dynstr/.dynsym/.dynamic that each patchelf run
        leaves behind, in a segment of their own or behind the sections of one. With p_filesz cut there (0
        for a segment that keeps nothing) and p_memsz unchanged, the loader maps zero pages instead.

        The bytes kept are those up to the end of the last section, other program header, or section address
        inside the segment. The dropped part qualifies only when the segment is not the first PT_LOAD and
        holds no headers, the entry point is not in it, and no aligned word of the file bytes that stay
        (dynamic tags, relocation offsets and addends, implicit addends, pointers) holds an address inside
        it. A segment that keeps nothing must also start at an address aligned to its p_align, so that the
        loader maps no page of the file for it. The scan over-approximates on purpose: a false match only
        keeps bytes. (Sections overlap the headers only where no candidate's bytes could be named there.)
        """
        if self.header.e_type != c.ET_DYN or not self.sections:
            return {}
        loads = [p for p in self.segments if p.p_type == c.PT_LOAD]
        if len(loads) < 2:
            return {}
        first = min(loads, key=lambda p: p.p_vaddr)
        candidates: dict[int, tuple[Segment, int]] = {}
        # A segment whose file bytes end where a section ends uses them all (the usual case): no scan.
        section_ends = {end for _, end in self.file_spans}
        for p in loads:
            if p is first or not p.p_filesz or p.p_memsz < p.p_filesz or p.p_offset < self.pinned_header_end:
                continue
            if p.file_end in section_ends:
                continue
            used = self._used_end(p)
            if used >= p.file_end:
                continue
            if used == p.p_offset and (p.p_align <= 1 or p.p_vaddr % p.p_align):
                continue
            tail = (p.p_vaddr + used - p.p_offset, p.p_vaddr + p.p_filesz)
            if tail[0] <= self.header.e_entry < tail[1]:
                continue
            candidates[p.index] = (p, used)
        while candidates:
            hit = self._addresses_into(candidates)
            if hit is None:
                break
            del candidates[hit]  # its bytes stay, and are scanned like the others
        return {index: used - p.p_offset for index, (p, used) in sorted(candidates.items())}

    @functools.cached_property
    def file_spans(self) -> tuple[tuple[int, int], ...]:
        """(offset, end) in the file of every section with file bytes, in section order."""
        return tuple([(s.sh_offset, s.sh_offset + s.sh_size) for s in self.sections if s.has_file_bytes])

    @functools.cached_property
    def _address_spans(self) -> tuple[tuple[int, int], ...]:
        """(address, end) of every loaded section; an empty one counts as one byte."""
        return tuple([(s.sh_addr, s.sh_addr + max(1, s.sh_size)) for s in self.sections[1:] if s.is_alloc])

    def _used_end(self, p: Segment) -> int:
        """The file offset in PT_LOAD ``p`` past which no section, other program header or section address
        lies."""
        start, end = p.p_offset, p.p_offset + p.p_filesz
        used = start
        low, high = p.p_vaddr, p.p_vaddr + p.p_filesz
        for offset, span_end in self.file_spans:
            if offset < end and span_end > start and span_end > used:
                used = min(span_end, end)
        for address, address_end in self._address_spans:
            if address < high and address_end > low:
                used = max(used, start + min(address_end, high) - low)
        for q in self.segments:
            if q is p or q.p_type == c.PT_NULL:
                continue
            if q.p_filesz and q.p_offset < end and q.file_end > start:
                used = max(used, min(q.file_end, end))
            if q.p_memsz and q.p_vaddr < high and q.p_vaddr + q.p_memsz > low:
                used = max(used, start + min(q.p_vaddr + q.p_memsz, high) - low)
        return used

    def _addresses_into(self, candidates: dict[int, tuple[Segment, int]]) -> int | None:
        """The first candidate whose dropped part an address in the file points into, or None.

        In a shared object every address the loader or the program reads from memory is a dynamic tag, a
        symbol value, or a relocation (its offset, and its addend: the program sees that address once
        relocated), so with RELA relocations the words of .dynamic, .dynsym and the relocation sections are
        scanned. Where addends stay in place (SHT_REL: i386, arm; SHT_RELR), every loaded section is
        scanned, code included. Bytes no section covers are stale (patchelf leaves old copies of .dynamic
        there) and are not scanned.
        """
        ranges = {
            index: (p.p_vaddr + used - p.p_offset, p.p_vaddr + p.p_filesz)
            for index, (p, used) in candidates.items()
        }
        in_place = any(s.sh_type in (c.SHT_REL, c.SHT_RELR) for s in self.sections)
        spans = [
            (s.sh_offset, s.file_end)
            for s in self.sections[1:]
            if s.is_alloc
            and s.has_file_bytes
            and (in_place or s.sh_type in (c.SHT_DYNAMIC, c.SHT_DYNSYM, c.SHT_RELA))
        ]
        spans += [(p.p_offset, p.file_end) for p in self.segments if p.p_type == c.PT_DYNAMIC and p.p_filesz]
        word = self.layout.word_size
        swap = self.layout.little_endian != (sys.byteorder == "little")
        for span_start, span_end in sorted(spans):
            start = span_start + (-span_start) % word
            end = span_end - (span_end - start) % word
            while start < end:
                size = min(end - start, 1 << 22)
                words = array.array("Q" if word == 8 else "I", self.read(start, size))
                if swap:
                    words.byteswap()
                for index, (low, high) in ranges.items():
                    if any(low <= value < high for value in words):
                        return index
                start += size
        return None

    @functools.cached_property
    def loaded_end(self) -> int:
        """End of the part that is copied byte for byte: headers and every segment's file bytes, less a
        last segment's zero padding (see zero_tail)."""
        tail = self.zero_tail
        return tail[1] if tail else self.pinned_end

    @functools.cached_property
    def section_table_end(self) -> int:
        h = self.header
        return h.e_shoff + h.e_shnum * self.layout.shdr.size if h.e_shoff else 0

    @functools.cached_property
    def image_end(self) -> int:
        """End of everything the ELF headers account for; bytes past it are an overlay."""
        ends = [end for _, end in self.file_spans]
        ends += (self.segments_end, self.section_table_end)
        return max(ends)

    @functools.cached_property
    def overlay_size(self) -> int:
        return self.size - self.image_end
