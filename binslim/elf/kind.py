"""What kind of ELF a file is, and whether this host runs it natively: the one place that says so.

Everything is read through :class:`~binslim.elf.reader.ElfFile` (``kind_of(elf)``, or ``read_kind(path)``),
so a header is parsed and validated in one place. The machine tables live here too: the names of
``e_machine`` values, what ``uname -m`` runs natively, and which qemu-user program runs what.
"""

from __future__ import annotations

import functools
import os
import struct
import sys

from .._record import Record
from ..errors import BinslimError
from . import constants as c
from .reader import ElfFile

DT_NULL = 0
DT_FLAGS_1 = 0x6FFFFFFB
DF_1_PIE = 0x08000000
EF_MIPS_ABI2 = 0x20  # n32: 64-bit registers in an ELF32 file
_MAX_DYNAMIC = 1 << 20  # a dynamic section is a few hundred bytes; read no more than this of a hostile one
_UPX_MARKER = b"UPX!"
_UPX_MARKER_WINDOW = 8192  # UPX puts its l_info block right after the program headers

# uname -m -> (e_machine, 64-bit) it runs natively; the byte order is sys.byteorder.
_HOST_MACHINES: dict[str, tuple[int, bool]] = {
    "x86_64": (c.EM_X86_64, True),
    "amd64": (c.EM_X86_64, True),
    "i386": (c.EM_386, False),
    "i486": (c.EM_386, False),
    "i586": (c.EM_386, False),
    "i686": (c.EM_386, False),
    "aarch64": (c.EM_AARCH64, True),
    "aarch64_be": (c.EM_AARCH64, True),
    "arm64": (c.EM_AARCH64, True),
    "s390x": (c.EM_S390, True),
    "ppc64": (c.EM_PPC64, True),
    "ppc64le": (c.EM_PPC64, True),
    "ppc": (c.EM_PPC, False),
    "mips": (c.EM_MIPS, False),
    "mips64": (c.EM_MIPS, True),
    "riscv64": (c.EM_RISCV, True),
    "loongarch64": (c.EM_LOONGARCH, True),
}

# e_machine -> {(64-bit, little-endian): qemu-user suffix}.
_QEMU: dict[int, dict[tuple[bool, bool], str]] = {
    2: {(False, False): "sparc"},
    c.EM_386: {(False, True): "i386"},
    4: {(False, False): "m68k"},
    c.EM_MIPS: {
        (False, False): "mips",
        (False, True): "mipsel",
        (True, False): "mips64",
        (True, True): "mips64el",
    },
    15: {(False, False): "hppa"},
    18: {(False, False): "sparc32plus"},
    c.EM_PPC: {(False, False): "ppc"},
    c.EM_PPC64: {(True, False): "ppc64", (True, True): "ppc64le"},
    c.EM_S390: {(True, False): "s390x"},
    c.EM_ARM: {(False, True): "arm", (False, False): "armeb"},
    42: {(False, True): "sh4", (False, False): "sh4eb"},
    43: {(True, False): "sparc64"},
    c.EM_X86_64: {(True, True): "x86_64"},
    92: {(False, False): "or1k"},
    94: {(False, True): "xtensa", (False, False): "xtensaeb"},
    164: {(False, True): "hexagon"},
    c.EM_AARCH64: {(True, True): "aarch64", (True, False): "aarch64_be"},
    189: {(False, True): "microblazeel", (False, False): "microblaze"},
    c.EM_RISCV: {(False, True): "riscv32", (True, True): "riscv64"},
    c.EM_LOONGARCH: {(True, True): "loongarch64"},
    0x9026: {(True, True): "alpha"},
}


def machine_name(e_machine: int) -> str:
    return c.MACHINE_NAMES.get(e_machine, f"machine {e_machine}")


class HostArch(Record):
    """The (machine, class, byte order) this host runs without an emulator."""

    e_machine: int
    is64: bool
    little_endian: bool

    @property
    def name(self) -> str:
        return machine_name(self.e_machine)


@functools.cache
def host_arch() -> HostArch | None:
    """This host's architecture: from ``uname -m``, else from the header of the Python running us (built
    for the host); None when neither tells."""
    little = sys.byteorder == "little"
    known = _HOST_MACHINES.get(os.uname().machine.lower())
    if known is not None:
        return HostArch(known[0], known[1], little)
    try:
        kind = read_kind(sys.executable)
    except BinslimError:
        return None
    return HostArch(kind.e_machine, kind.is64, kind.little_endian)


class ElfKind(Record):
    """The facts about an ELF file that decide what may be done to it and how it runs."""

    elfclass: int  # ELFCLASS32 or ELFCLASS64
    little_endian: bool
    e_type: int
    e_machine: int
    e_flags: int
    e_entry: int
    interpreter: str | None  # PT_INTERP's path; None for a static program, a library or an object
    dynamic: bool  # has PT_DYNAMIC
    pie_flag: bool  # DF_1_PIE in the dynamic section: how a static-pie tells itself apart from a library
    has_sections: bool
    upx_marker: bool  # "UPX!" near the start, where UPX puts its l_info block

    @property
    def is64(self) -> bool:
        return self.elfclass == c.ELFCLASS64

    @property
    def machine_name(self) -> str:
        return machine_name(self.e_machine)

    @property
    def is_object(self) -> bool:
        return self.e_type == c.ET_REL

    @property
    def is_core(self) -> bool:
        return self.e_type == c.ET_CORE

    @property
    def is_shared_library(self) -> bool:
        """ET_DYN without an interpreter, unless DF_1_PIE marks it a static-pie executable."""
        return self.e_type == c.ET_DYN and self.interpreter is None and not self.pie_flag

    @property
    def is_pie(self) -> bool:
        return self.e_type == c.ET_DYN and not self.is_shared_library

    @property
    def is_executable(self) -> bool:
        """A program (fixed-address or PIE, static or dynamic), as opposed to a library, object or core."""
        return self.e_type == c.ET_EXEC or self.is_pie

    @property
    def is_static(self) -> bool:
        return self.interpreter is None

    @property
    def upx_packed(self) -> bool:
        """UPX output: its marker near the start and no section headers."""
        return self.upx_marker and not self.has_sections

    @property
    def description(self) -> str:
        if self.e_type == c.ET_REL:
            return "relocatable object"
        if self.e_type == c.ET_CORE:
            return "core dump"
        if self.e_type == c.ET_EXEC:
            return "static executable" if self.is_static else "executable"
        if self.e_type == c.ET_DYN:
            if self.is_shared_library:
                return "shared library"
            return "static-pie executable" if self.is_static else "PIE executable"
        return f"ELF type {self.e_type}"

    @property
    def mips_n32(self) -> bool:
        return self.e_machine == c.EM_MIPS and not self.is64 and bool(self.e_flags & EF_MIPS_ABI2)

    @property
    def native(self) -> bool:
        """Built for this host's machine, class and byte order (an i386 program on an x86_64 host is not:
        whether the kernel runs it is for whoever runs it to find out)."""
        host = host_arch()
        if host is None or self.mips_n32:
            return False
        return (host.e_machine, host.is64, host.little_endian) == (
            self.e_machine,
            self.is64,
            self.little_endian,
        )

    @property
    def qemu(self) -> str | None:
        """The qemu-user program that emulates this machine (``qemu-aarch64``), whatever the host; None when
        qemu-user has none for it."""
        if self.mips_n32:
            suffix: str | None = "mipsn32el" if self.little_endian else "mipsn32"
        else:
            suffix = _QEMU.get(self.e_machine, {}).get((self.is64, self.little_endian))
        return None if suffix is None else f"qemu-{suffix}"

    @property
    def identity(self) -> str:
        """``aarch64 ELF64 little-endian``: machine, class and byte order, for messages."""
        order = "little" if self.little_endian else "big"
        return f"{self.machine_name} ELF{64 if self.is64 else 32} {order}-endian"


def kind_of(elf: ElfFile) -> ElfKind:
    """Read ``elf``'s kind: its header, PT_INTERP, DT_FLAGS_1 and the UPX marker."""
    h = elf.header
    interpreter = None
    dynamic = False
    pie_flag = False
    for segment in elf.segments:
        if segment.p_type == c.PT_INTERP and interpreter is None and segment.p_filesz:
            raw = elf.read(segment.p_offset, min(segment.p_filesz, 4096))
            interpreter = raw.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
        elif segment.p_type == c.PT_DYNAMIC:
            dynamic = True
            if h.e_type == c.ET_DYN and not pie_flag:
                pie_flag = _has_pie_flag(elf, segment.p_offset, segment.p_filesz)
    head = elf.read(0, min(elf.size, _UPX_MARKER_WINDOW))
    return ElfKind(
        elfclass=h.elfclass,
        little_endian=h.little_endian,
        e_type=h.e_type,
        e_machine=h.e_machine,
        e_flags=h.e_flags,
        e_entry=h.e_entry,
        interpreter=interpreter,
        dynamic=dynamic,
        pie_flag=pie_flag,
        has_sections=h.e_shoff != 0 and h.e_shnum != 0,
        upx_marker=_UPX_MARKER in head,
    )


def _has_pie_flag(elf: ElfFile, offset: int, size: int) -> bool:
    entry = struct.Struct(elf.layout.order + ("qQ" if elf.layout.is64 else "iI"))
    data = elf.read(offset, min(size, _MAX_DYNAMIC) // entry.size * entry.size)
    for tag, value in entry.iter_unpack(data):
        if tag == DT_NULL:
            break
        if tag == DT_FLAGS_1 and value & DF_1_PIE:
            return True
    return False


def read_kind(path: str | os.PathLike[str]) -> ElfKind:
    """The kind of the ELF file at ``path``; NotELFError or MalformedELFError when its headers are not
    valid."""
    with ElfFile(os.fspath(path)) as elf:
        return kind_of(elf)


def is_upx_packed(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` looks like UPX output: the ``UPX!`` marker near the start and no section headers.

    Never raises for unreadable or non-ELF files; they are simply not UPX-packed.
    """
    try:
        return read_kind(path).upx_packed
    except (OSError, BinslimError):
        return False
