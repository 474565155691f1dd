"""glibc's /etc/ld.so.cache, read as the dynamic loader reads it (glibc elf/dl-cache.c, written by ldconfig's
elf/cache.c).

Two formats exist. The new one ("glibc-ld.so.cache" "1.1") is all that ldconfig writes since glibc
2.32; before that it usually followed an old-format ("ld.so-1.7.0") table in the same file, aligned to 8
bytes. Entries are sorted by name, and each carries flags (library kind and ABI), a path and a hwcap word.
Since glibc 2.33 a hwcap word whose upper half is DL_CACHE_HWCAP_EXTENSION names a glibc-hwcaps subfolder
(x86-64-v3...) from the extension section, and the loader prefers the best one the CPU supports over the
plain entry.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..errors import MalformedELFError
from . import constants as c

CACHE_PATH = "/etc/ld.so.cache"
OLD_MAGIC = b"ld.so-1.7.0"
NEW_MAGIC = b"glibc-ld.so.cache1.1"

FLAG_ELF = 0x0001
FLAG_ELF_LIBC6 = 0x0003
FLAG_TYPE_MASK = 0x00FF
FLAG_SPARC_LIB64 = 0x0100
FLAG_IA64_LIB64 = 0x0200
FLAG_X8664_LIB64 = 0x0300
FLAG_S390_LIB64 = 0x0400
FLAG_POWERPC_LIB64 = 0x0500
FLAG_MIPS64_LIBN32 = 0x0600
FLAG_MIPS64_LIBN64 = 0x0700
FLAG_X8664_LIBX32 = 0x0800
FLAG_ARM_LIBHF = 0x0900
FLAG_AARCH64_LIB64 = 0x0A00
FLAG_ARM_LIBSF = 0x0B00
FLAG_MIPS_LIB32_NAN2008 = 0x0C00
FLAG_MIPS64_LIBN32_NAN2008 = 0x0D00
FLAG_MIPS64_LIBN64_NAN2008 = 0x0E00
FLAG_RISCV_FLOAT_ABI_SOFT = 0x0F00
FLAG_RISCV_FLOAT_ABI_DOUBLE = 0x1000
FLAG_LARCH_FLOAT_ABI_DOUBLE = 0x1200

HWCAP_EXTENSION_TAG = 1 << 62  # DL_CACHE_HWCAP_EXTENSION: the upper half holds only this bit
_EXTENSION_MAGIC = 0xEAA42174
_EXTENSION_TAG_GLIBC_HWCAPS = 1

_OLD_HEADER = struct.Struct("=11sI")  # magic, nlibs (host byte order, native alignment)
_OLD_ENTRY = struct.Struct("=iII")
_NEW_ENTRY_SIZE = 24
_NEW_HEADER_SIZE = 48
_MAX_CACHE = 256 << 20


@dataclass(frozen=True)
class CacheEntry:
    name: str  # the key: a SONAME such as libc.so.6
    path: str
    flags: int
    hwcap: int
    hwcaps_subdir: str | None  # the glibc-hwcaps folder (x86-64-v3) when hwcap is an extension index

    @property
    def required_flags(self) -> int:
        return self.flags & ~FLAG_TYPE_MASK


@dataclass(frozen=True)
class LdCache:
    path: str
    format: str  # "new", "old" or "old+new" (the loader uses the new table when there is one)
    entries: tuple[CacheEntry, ...]

    def lookup(self, name: str, flags: int, supported_hwcaps: Sequence[str] = ()) -> str | None:
        """The path the loader takes for ``name``: among the entries of that name with exactly ``flags``,
        the one in the best-priority glibc-hwcaps subfolder the CPU supports (``supported_hwcaps``, best
        first), else the first plain one."""
        best: tuple[int, str] | None = None
        for entry in self.entries:
            if entry.name != name or entry.flags != flags:
                continue
            if entry.hwcaps_subdir is not None:
                if entry.hwcaps_subdir in supported_hwcaps:
                    rank = supported_hwcaps.index(entry.hwcaps_subdir)
                    if best is None or rank < best[0]:
                        best = (rank, entry.path)
            elif entry.hwcap == 0 and best is None:
                best = (len(supported_hwcaps), entry.path)
        return None if best is None else best[1]


def expected_flags(e_machine: int, is64: bool, e_flags: int = 0) -> int:
    """The cache flags the loader accepts for a library of this machine (dl-cache.h's
    ``_dl_cache_check_flags`` per architecture); 3 (ELF, libc6) when the ABI has no marker of its own."""
    if e_machine == c.EM_X86_64:
        return FLAG_ELF_LIBC6 | (FLAG_X8664_LIB64 if is64 else FLAG_X8664_LIBX32)
    if e_machine == c.EM_AARCH64:
        return FLAG_ELF_LIBC6 | FLAG_AARCH64_LIB64
    if is64 and e_machine == c.EM_S390:
        return FLAG_ELF_LIBC6 | FLAG_S390_LIB64
    if is64 and e_machine == c.EM_PPC64:
        return FLAG_ELF_LIBC6 | FLAG_POWERPC_LIB64
    if e_machine == c.EM_RISCV:
        return FLAG_ELF_LIBC6 | (FLAG_RISCV_FLOAT_ABI_DOUBLE if e_flags & 0x6 else FLAG_RISCV_FLOAT_ABI_SOFT)
    if e_machine == c.EM_LOONGARCH:
        return FLAG_ELF_LIBC6 | FLAG_LARCH_FLOAT_ABI_DOUBLE
    if e_machine == c.EM_ARM:
        # EF_ARM_ABI_FLOAT_HARD (0x400) marks the hard-float ABI.
        return FLAG_ELF_LIBC6 | (FLAG_ARM_LIBHF if e_flags & 0x400 else FLAG_ARM_LIBSF)
    return FLAG_ELF_LIBC6


def read_cache(path: str | os.PathLike[str] = CACHE_PATH) -> LdCache | None:
    """Parse the cache at ``path``; None when there is none (the loader then skips it). MalformedELFError
    when the file is there but not a cache the loader would accept."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as handle:
            data = handle.read(_MAX_CACHE + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise MalformedELFError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    return parse_cache(data, path)


def parse_cache(data: bytes, path: str = CACHE_PATH) -> LdCache:
    def bad(problem: str) -> MalformedELFError:
        return MalformedELFError(f"{path}: {problem}")

    if len(data) > _MAX_CACHE:
        raise bad("larger than any ld.so.cache")
    if data.startswith(NEW_MAGIC):
        return LdCache(path, "new", _parse_new(data, 0, bad))
    if data.startswith(OLD_MAGIC):
        if len(data) < _OLD_HEADER.size:
            raise bad("truncated old-format header")
        _, nlibs = _OLD_HEADER.unpack_from(data, 0)
        table_end = _OLD_HEADER.size + nlibs * _OLD_ENTRY.size
        if table_end > len(data):
            raise bad(f"old-format table of {nlibs} entries is past the end of the file")
        new_at = (table_end + 7) & ~7  # ALIGN_CACHE: the new table is 8-byte aligned
        if data[new_at : new_at + len(NEW_MAGIC)] == NEW_MAGIC:
            # The loader reads the new table then; its string offsets count from its own start.
            return LdCache(path, "old+new", _parse_new(data, new_at, bad))
        strings_at = table_end
        entries = []
        for index in range(nlibs):
            flags, key, value = _OLD_ENTRY.unpack_from(data, _OLD_HEADER.size + index * _OLD_ENTRY.size)
            entries.append(
                CacheEntry(
                    name=_string(data, strings_at + key, bad),
                    path=_string(data, strings_at + value, bad),
                    flags=flags,
                    hwcap=0,
                    hwcaps_subdir=None,
                )
            )
        return LdCache(path, "old", tuple(entries))
    raise bad("not an ld.so.cache (unknown magic)")


def _string(data: bytes, offset: int, bad: Callable[[str], MalformedELFError]) -> str:
    if not 0 <= offset < len(data):
        raise bad(f"string offset {offset} is past the end of the file")
    end = data.find(b"\0", offset)
    if end < 0:
        raise bad(f"string at offset {offset} is not terminated")
    return data[offset:end].decode("utf-8", "surrogateescape")


def _parse_new(data: bytes, base: int, bad: Callable[[str], MalformedELFError]) -> tuple[CacheEntry, ...]:
    if len(data) < base + _NEW_HEADER_SIZE:
        raise bad("truncated header")
    # Byte 28 says the writer's byte order: 0 unknown (host), 1 big, 2 little, 3 invalid.
    endian_flag = data[base + 28] & 3
    if endian_flag == 3:
        raise bad("byte order marked invalid")
    order = {0: "=", 1: ">", 2: "<"}[endian_flag]
    nlibs, _len_strings = struct.unpack_from(order + "II", data, base + 20)
    (extension_offset,) = struct.unpack_from(order + "I", data, base + 32)
    entries_at = base + _NEW_HEADER_SIZE
    if entries_at + nlibs * _NEW_ENTRY_SIZE > len(data):
        raise bad(f"table of {nlibs} entries is past the end of the file")
    hwcaps = _hwcaps_names(data, base, extension_offset, order, bad)
    entry = struct.Struct(order + "iIIIQ")
    entries = []
    for index in range(nlibs):
        flags, key, value, _osversion, hwcap = entry.unpack_from(data, entries_at + index * _NEW_ENTRY_SIZE)
        subdir = None
        if hwcap >> 32 == HWCAP_EXTENSION_TAG >> 32:
            hwcap_index = hwcap & 0xFFFFFFFF
            if hwcap_index >= len(hwcaps):
                raise bad(f"entry {index} names glibc-hwcaps subfolder #{hwcap_index}, which is not listed")
            subdir = hwcaps[hwcap_index]
        entries.append(
            CacheEntry(
                name=_string(data, base + key, bad),
                path=_string(data, base + value, bad),
                flags=flags,
                hwcap=hwcap,
                hwcaps_subdir=subdir,
            )
        )
    return tuple(entries)


def _hwcaps_names(
    data: bytes, base: int, extension_offset: int, order: str, bad: Callable[[str], MalformedELFError]
) -> list[str]:
    """The glibc-hwcaps subfolder names of the extension section (empty without one)."""
    if extension_offset == 0 or base + extension_offset + 8 > len(data):
        return []
    at = base + extension_offset
    magic, count = struct.unpack_from(order + "II", data, at)
    if magic != _EXTENSION_MAGIC or at + 8 + count * 16 > len(data):
        return []
    for index in range(count):
        tag, _flags, offset, size = struct.unpack_from(order + "IIII", data, at + 8 + index * 16)
        if tag != _EXTENSION_TAG_GLIBC_HWCAPS:
            continue
        if base + offset + size > len(data) or size % 4:
            raise bad("glibc-hwcaps extension section is past the end of the file")
        string_offsets = struct.unpack_from(f"{order}{size // 4}I", data, base + offset)
        return [_string(data, base + string_offset, bad) for string_offset in string_offsets]
    return []
