"""Check a slimmed binary against its original before it is installed.

Three steps, in order:

1. ``static_check``: both files parse; for a stripped (not packed) result every segment's file bytes, the
   entry point, the interpreter, DT_NEEDED, DT_SONAME and the build-id are unchanged.
2. Behaviour: run both with the same arguments (or the same ``verify_cmd`` script) and compare exit code,
   stdout and stderr. Foreign-architecture binaries run under qemu-user.
3. Startup: alternate timed runs of both; median, spread and the program's own peak RSS.

``verify`` reports a behaviour difference in its result; ``require_same`` turns it into VerificationError.
"""

from __future__ import annotations

import os
import shutil
import signal
import statistics
import struct
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from typing import Any, BinaryIO, Callable, cast

from elftools.common.exceptions import ELFError
from elftools.construct import ConstructError
from elftools.elf.dynamic import DynamicSegment
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import NoteSection
from elftools.elf.segments import InterpSegment, NoteSegment

from .errors import (
    BinslimError,
    MalformedELFError,
    NotELFError,
    ToolFailedError,
    ToolNotFoundError,
    UnsupportedError,
    VerificationError,
    file_error,
)
from .runner import Completed, Runner, run

DEFAULT_ARGS: tuple[str, ...] = ("--version",)
OUTPUT_LIMIT = 1 << 20  # bytes of stdout/stderr compared per run
_QUOTE_LIMIT = 60  # characters of a differing line shown in a message
_CHUNK = 1 << 20
# pyelftools signals bad input with ELFError, but malformed tables also surface as these.
_PARSE_ERRORS = (ELFError, ConstructError, ValueError, LookupError, struct.error, EOFError)


@dataclass(frozen=True)
class Timing:
    """Startup of one binary: wall-clock milliseconds over the timed runs, and its own peak RSS."""

    median_ms: float
    min_ms: float
    max_ms: float
    peak_rss_kib: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "median_ms": round(self.median_ms, 3),
            "min_ms": round(self.min_ms, 3),
            "max_ms": round(self.max_ms, 3),
            "peak_rss_kib": self.peak_rss_kib,
        }


@dataclass(frozen=True)
class VerifyResult:
    """What running the original and the result showed. Timings are there only when both behaved the
    same and did not time out."""

    ran: bool  # False when the binary could not be run here (object file, no qemu...): see reason
    args: tuple[str, ...]
    same_behaviour: bool | None  # None when not ran
    reason: str
    original: Timing | None = None
    final: Timing | None = None

    @property
    def added_ms(self) -> float | None:
        """Median startup the result adds over the original (negative when faster)."""
        if self.original is None or self.final is None:
            return None
        return self.final.median_ms - self.original.median_ms

    def to_dict(self) -> dict[str, Any]:
        startup: dict[str, float] | None = None
        rss: dict[str, int] | None = None
        if self.original is not None and self.final is not None:
            startup = {
                "original": round(self.original.median_ms, 3),
                "final": round(self.final.median_ms, 3),
                "added": round(self.final.median_ms - self.original.median_ms, 3),
            }
            rss = {"original": self.original.peak_rss_kib, "final": self.final.peak_rss_kib}
        return {
            "ran": self.ran,
            "args": list(self.args),
            "same_behaviour": self.same_behaviour,
            "reason": self.reason,
            "startup_ms": startup,
            "peak_rss_kib": rss,
        }


# --- static checks ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _ElfFacts:
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
    pie_flag: bool


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
    _static_check(os.fspath(original), os.fspath(result), packed=packed)


def _static_check(original: str, result: str, *, packed: bool) -> _ElfFacts:
    before = _read_facts(original, full=True, error=MalformedELFError)
    after = _read_facts(result, full=not packed, error=VerificationError)

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
        if before.header[field] != after.header[field]:
            raise fail(
                f"ELF header {field} changed: {_show(before.header[field])}→{_show(after.header[field])}"
            )
    if len(before.segments) != len(after.segments):
        raise fail(f"number of program headers changed: {len(before.segments)}→{len(after.segments)}")
    trimmed: list[int] = []
    for index, (old_seg, new_seg) in enumerate(zip(before.segments, after.segments)):
        for field in _SEGMENT_FIELDS:
            if old_seg[field] == new_seg[field]:
                continue
            if field == "p_filesz" and _trims_zeros_only(before, old_seg, new_seg):
                trimmed.append(index)
                continue
            if field == "p_offset" and (new_seg[field] - old_seg[field]) % max(1, old_seg["p_align"]) == 0:
                continue  # moved down over removed sections, still congruent to p_vaddr; bytes compared below
            raise fail(
                f"segment {index} ({old_seg['p_type']}) {field} changed: "
                f"{_show(old_seg[field])}→{_show(new_seg[field])}"
            )
    _compare_segment_bytes(before, after, trimmed, fail)
    return before


def _trims_zeros_only(facts: _ElfFacts, old_seg: dict[str, Any], new_seg: dict[str, Any]) -> bool:
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
    before: _ElfFacts, after: _ElfFacts, trimmed: Sequence[int], fail: Callable[[str], VerificationError]
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


def _header_masks(facts: _ElfFacts, trimmed: Sequence[int]) -> list[tuple[int, int]]:
    """File spans of the header fields stripping may change in ``facts``' file."""
    masked = _section_table_field_spans(facts.is64)
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


def _describe_changed_byte(facts: _ElfFacts, offset: int) -> str:
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


def _read_facts(path: str, *, full: bool, error: type[BinslimError]) -> _ElfFacts:
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


def _parse(path: str, handle: BinaryIO, *, full: bool) -> _ElfFacts:
    elf = ELFFile(handle)
    header = {key: elf.header[key] for key in (*_HEADER_FIELDS, *_SECTION_TABLE_FIELDS)}
    segments: list[dict[str, Any]] = []
    interp: str | None = None
    needed: list[str] = []
    soname: str | None = None
    build_ids: list[str] = []
    pie_flag = False
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
                    elif tag.entry.d_tag == "DT_FLAGS_1":
                        pie_flag = bool(tag.entry.d_val & 0x08000000)  # DF_1_PIE
            elif isinstance(segment, NoteSegment):
                build_ids.extend(_build_ids(segment.iter_notes()))
        if not build_ids:  # e.g. an object file: notes only as sections
            for section in elf.iter_sections():
                if isinstance(section, NoteSection):
                    build_ids.extend(_build_ids(section.iter_notes()))
    return _ElfFacts(
        path=path,
        is64=elf.elfclass == 64,
        little_endian=bool(elf.little_endian),
        header=header,
        segments=tuple(segments),
        interp=interp,
        needed=tuple(needed),
        soname=soname,
        build_id=build_ids[0] if build_ids else None,
        pie_flag=pie_flag,
    )


def _build_ids(notes: Any) -> Iterator[str]:
    for note in notes:
        if note["n_type"] == "NT_GNU_BUILD_ID":
            yield str(note["n_desc"])


def _identity(facts: _ElfFacts) -> str:
    return f"ELF{64 if facts.is64 else 32} {'little' if facts.little_endian else 'big'}-endian"


def _show(value: Any) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, int):
        return f"{value:#x}"
    return repr(value)


# --- where and how to run ---------------------------------------------------------------------------------

# e_machine → (qemu-user suffix for 32-bit, for 64-bit), little-endian first and big-endian second.
_EM_I386, _EM_MIPS, _EM_X86_64 = 3, 8, 62
_QEMU: dict[int, dict[tuple[bool, bool], str]] = {
    2: {(False, False): "sparc"},
    _EM_I386: {(False, True): "i386"},
    4: {(False, False): "m68k"},
    _EM_MIPS: {
        (False, False): "mips",
        (False, True): "mipsel",
        (True, False): "mips64",
        (True, True): "mips64el",
    },
    15: {(False, False): "hppa"},
    18: {(False, False): "sparc32plus"},
    20: {(False, False): "ppc"},
    21: {(True, False): "ppc64", (True, True): "ppc64le"},
    22: {(True, False): "s390x"},
    40: {(False, True): "arm", (False, False): "armeb"},
    42: {(False, True): "sh4", (False, False): "sh4eb"},
    43: {(True, False): "sparc64"},
    _EM_X86_64: {(True, True): "x86_64"},
    92: {(False, False): "or1k"},
    94: {(False, True): "xtensa", (False, False): "xtensaeb"},
    164: {(False, True): "hexagon"},
    183: {(True, True): "aarch64", (True, False): "aarch64_be"},
    189: {(False, True): "microblazeel", (False, False): "microblaze"},
    243: {(False, True): "riscv32", (True, True): "riscv64"},
    258: {(True, True): "loongarch64"},
    0x9026: {(True, True): "alpha"},
}
_EF_MIPS_ABI2 = 0x20  # n32: 64-bit registers in an ELF32 file

# uname -m → the (e_machine, 64-bit) it runs natively; byte order comes from sys.byteorder.
_HOST_MACHINES = {
    "x86_64": (_EM_X86_64, True),
    "i386": (_EM_I386, False),
    "i486": (_EM_I386, False),
    "i586": (_EM_I386, False),
    "i686": (_EM_I386, False),
    "aarch64": (183, True),
    "aarch64_be": (183, True),
    "s390x": (22, True),
    "ppc64": (21, True),
    "ppc64le": (21, True),
    "ppc": (20, False),
    "mips": (_EM_MIPS, False),
    "mips64": (_EM_MIPS, True),
    "riscv64": (243, True),
    "loongarch64": (258, True),
}


def qemu_for(path: str | os.PathLike[str]) -> str | None:
    """The qemu-user program (e.g. ``qemu-aarch64``) this host needs to run the ELF at ``path``, or None
    when it runs natively. Raises NotELFError/MalformedELFError, or UnsupportedError for a machine that
    qemu-user cannot run."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as handle:
            ident = handle.read(52)
    except OSError as exc:
        raise file_error(path, exc.strerror or str(exc), NotELFError) from exc
    if ident[:4] != b"\x7fELF":
        raise file_error(path, "not an ELF file", NotELFError)
    if len(ident) < 52 or ident[4] not in (1, 2) or ident[5] not in (1, 2):
        raise file_error(path, "truncated or invalid ELF identification", MalformedELFError)
    is64, little = ident[4] == 2, ident[5] == 1
    machine = struct.unpack_from("<H" if little else ">H", ident, 18)[0]
    flags = struct.unpack_from("<I" if little else ">I", ident, 48 if is64 else 36)[0]
    return _qemu_for(path, machine, is64, little, flags)


def _qemu_for(path: str, machine: int, is64: bool, little: bool, flags: int) -> str | None:
    host = _HOST_MACHINES.get(os.uname().machine)
    host_little = sys.byteorder == "little"
    if host is not None and host == (machine, is64) and host_little == little:
        if not (machine == _EM_MIPS and not is64 and flags & _EF_MIPS_ABI2):
            return None
    if machine == _EM_I386 and host == (_EM_X86_64, True) and _i386_runs_natively():
        return None
    suffix = _QEMU.get(machine, {}).get((is64, little))
    if machine == _EM_MIPS and not is64 and flags & _EF_MIPS_ABI2:
        suffix = "mipsn32el" if little else "mipsn32"
    if suffix is None:
        raise file_error(
            path,
            f"no qemu-user emulator for machine {machine} (ELF{64 if is64 else 32}, "
            f"{'little' if little else 'big'}-endian)",
            UnsupportedError,
        )
    return f"qemu-{suffix}"


def _tiny_i386_program() -> bytes:
    """A 93-byte static i386 ELF whose only instructions are exit(42)."""
    base, code = 0x08048000, b"\xb8\x01\x00\x00\x00\xbb\x2a\x00\x00\x00\xcd\x80"
    size = 52 + 32 + len(code)
    header = struct.pack(
        "<4sBBBB8sHHIIIIIHHHHHH",
        b"\x7fELF", 1, 1, 1, 0, b"\0" * 8,  # ELFCLASS32, little-endian, version 1
        2, _EM_I386, 1, base + 84, 52, 0, 0, 52, 32, 1, 0, 0, 0,
    )  # fmt: skip
    segment = struct.pack("<IIIIIIII", 1, 0, base, base, size, size, 5, 0x1000)
    return header + segment + code


@cache
def _i386_runs_natively() -> bool:
    """Whether this x86_64 kernel runs 32-bit programs (it may be built or booted without IA32 support)."""
    with tempfile.TemporaryDirectory(prefix="binslim-i386-") as folder:
        probe = os.path.join(folder, "probe")
        with open(probe, "wb") as handle:
            handle.write(_tiny_i386_program())
        os.chmod(probe, 0o700)
        try:
            return run([probe], timeout=10.0).returncode == 42
        except ToolFailedError:
            return False


class _CannotRun(Exception):
    def __init__(self, reason: str, missing: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.missing = missing  # the missing program, when that is the reason


@dataclass(frozen=True)
class _Launch:
    prefix: tuple[str, ...]  # () or (absolute path of qemu,)
    env: dict[str, str]  # without HOME, which is the run's folder


def _plan_launch(facts: _ElfFacts, env: Mapping[str, str] | None) -> _Launch:
    """How to run the binary described by ``facts`` here; _CannotRun says why not."""
    e_type = facts.header["e_type"]
    if e_type == "ET_REL":
        raise _CannotRun("a relocatable object (.o) cannot be run")
    if e_type == "ET_CORE":
        raise _CannotRun("a core file cannot be run")
    if e_type == "ET_DYN" and facts.interp is None and facts.header["e_entry"] == 0 and not facts.pie_flag:
        raise _CannotRun("a shared library without an entry point or interpreter cannot be run")
    if e_type not in ("ET_EXEC", "ET_DYN"):
        raise _CannotRun(f"an ELF file of type {e_type} cannot be run")
    run_env = {"PATH": os.environ.get("PATH", os.defpath), "LANG": "C", **(env or {})}
    machine = facts.header["e_machine"]
    number = _machine_number(facts.path)
    try:
        qemu = _qemu_for(facts.path, number, facts.is64, facts.little_endian, facts.header["e_flags"])
    except UnsupportedError as exc:
        raise _CannotRun(f"{machine} binaries cannot be run here: no qemu-user emulator for it") from exc
    prefix: tuple[str, ...] = ()
    if qemu is not None:
        found = shutil.which(qemu, path=run_env["PATH"])
        if found is None:
            raise _CannotRun(f"no {qemu} on PATH (install Debian's qemu-user)", missing=qemu)
        prefix = (os.path.abspath(found),)
    if facts.interp is not None and not _interpreter_present(facts.interp, qemu, run_env):
        where = "here" if qemu is None else f"for {qemu} (set QEMU_LD_PREFIX in env to a sysroot that has it)"
        raise _CannotRun(f"its interpreter {facts.interp} is not installed {where}", missing=facts.interp)
    return _Launch(prefix=prefix, env=run_env)


def _machine_number(path: str) -> int:
    with open(path, "rb") as handle:
        ident = handle.read(20)
    return int(struct.unpack_from("<H" if ident[5] == 1 else ">H", ident, 18)[0])


def _interpreter_present(interp: str, qemu: str | None, env: Mapping[str, str]) -> bool:
    if qemu is None:
        return os.path.exists(interp)
    # Where qemu-user looks: QEMU_LD_PREFIX, Debian's default prefix /etc/qemu-binfmt/ARCH, then the host.
    prefixes = [f"/etc/qemu-binfmt/{qemu[len('qemu-') :]}", ""]
    if env.get("QEMU_LD_PREFIX"):
        prefixes.insert(0, env["QEMU_LD_PREFIX"])
    return any(os.path.exists(prefix + interp) for prefix in prefixes)


class _Stage:
    """Twin folders, one per binary, each holding a copy under the same file name. Each run moves its
    twin to one shared path first, so the program sees the same argv[0], cwd, HOME and /proc/self/exe path
    on both sides, while files it leaves behind stay with its own side. Copies, not hard links: a program
    that writes to its own file must not change the caller's."""

    def __init__(self, binaries: Sequence[str], name: str) -> None:
        self.name = name
        self._base = tempfile.mkdtemp(prefix="binslim-verify-")
        self._binaries = list(binaries)
        self.path = os.path.join(self._base, "run")
        self._twins = [os.path.join(self._base, f"twin{index}") for index in range(len(binaries))]
        try:
            for index in range(len(binaries)):
                self._fill(index)
        except BaseException:
            self.close()
            raise

    def _fill(self, index: int) -> None:
        os.mkdir(self._twins[index], 0o700)
        copy = os.path.join(self._twins[index], self.name)
        shutil.copyfile(self._binaries[index], copy)
        os.chmod(copy, 0o700)

    @contextmanager
    def mounted(self, index: int) -> Iterator[str]:
        """Move twin ``index`` to ``self.path`` for the duration of one run."""
        os.rename(self._twins[index], self.path)
        try:
            yield self.path
        finally:
            try:
                os.rename(self.path, self._twins[index])
            except OSError:  # the program removed its own folder: give the next run a fresh one
                shutil.rmtree(self.path, ignore_errors=True)
                self._fill(index)

    def close(self) -> None:
        shutil.rmtree(self._base, ignore_errors=True)

    def __enter__(self) -> _Stage:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _run_in_stage(
    stage: _Stage,
    index: int,
    command: Sequence[str],
    launch: _Launch,
    *,
    timeout: float,
    runner: Runner,
    measure_rss: bool = False,
) -> Completed:
    with stage.mounted(index) as folder:
        env = {"HOME": folder, **launch.env}  # a HOME in the caller's env wins
        # measure_rss is passed only when wanted, so injected runners without it keep working.
        extra: dict[str, Any] = {"measure_rss": True} if measure_rss else {}
        return runner(list(command), timeout=timeout, cwd=folder, env=env, output_limit=OUTPUT_LIMIT, **extra)


# --- behaviour --------------------------------------------------------------------------------------------


def verify(
    original: str | os.PathLike[str],
    result: str | os.PathLike[str],
    *,
    args: Sequence[str] = DEFAULT_ARGS,
    verify_cmd: str | None = None,
    timeout: float = 10.0,
    runs: int = 9,
    env: Mapping[str, str] | None = None,
    packed: bool = False,
    measure: bool = True,
    runner: Runner = run,
) -> VerifyResult:
    """Static checks, then run both binaries and compare them, then time their startup.

    Static problems raise (see ``static_check``); a behaviour difference does not: it comes back as
    ``same_behaviour=False`` with the difference in ``reason`` (``require_same`` raises it). Each run gets
    stdin on /dev/null, ``PATH``, ``LANG=C``, ``HOME`` set to its own fresh folder, and ``env`` on top.
    ``verify_cmd`` is a program given the binary's path as its only argument; when set it is what is
    compared, while the startup is still timed with ``args``. If both runs time out they count as the same.
    """
    original, result, args = os.fspath(original), os.fspath(result), tuple(args)
    facts = _static_check(original, result, packed=packed)
    try:
        launch = _plan_launch(facts, env)
    except _CannotRun as cannot:
        return VerifyResult(ran=False, args=args, same_behaviour=None, reason=cannot.reason)
    with _Stage([original, result], os.path.basename(original)) as stage:
        binary = f"./{stage.name}"
        if verify_cmd is None:
            command = [*launch.prefix, binary, *args]
            cmd_launch = launch
        else:
            command = [os.path.abspath(verify_cmd), os.path.join(stage.path, stage.name)]
            cmd_launch = _Launch(
                (), {**launch.env, **({"BINSLIM_QEMU": launch.prefix[0]} if launch.prefix else {})}
            )
        try:
            before = _run_in_stage(stage, 0, command, cmd_launch, timeout=timeout, runner=runner)
        except ToolFailedError as exc:
            if verify_cmd is not None:
                raise
            return VerifyResult(
                ran=False, args=args, same_behaviour=None, reason=f"the original cannot be run: {exc}"
            )
        try:
            after = _run_in_stage(stage, 1, command, cmd_launch, timeout=timeout, runner=runner)
        except ToolFailedError as exc:
            if verify_cmd is not None:
                raise
            reason = (
                f"the result cannot be run ({exc}); the original exited with {_exit_code(before.returncode)}"
            )
            return VerifyResult(ran=True, args=args, same_behaviour=False, reason=reason)

        subject = "" if verify_cmd is None else f"{os.path.basename(verify_cmd)}: "
        if before.timed_out and after.timed_out:
            like = ""
            if verify_cmd is None:
                like = f" (like a server that ignores {' '.join(args)})" if args else " (like a server)"
            reason = f"{subject}both timed out after {timeout:g} s{like}; counted as the same"
            return VerifyResult(ran=True, args=args, same_behaviour=True, reason=reason)
        difference = _describe_difference(before, after, timeout)
        if difference is not None:
            return VerifyResult(ran=True, args=args, same_behaviour=False, reason=subject + difference)
        if before.returncode == 127 and b"error while loading shared libraries" in before.stderr:
            # Both stopped in the dynamic loader: neither program ran, so nothing was compared.
            loader_error = before.stderr.decode("utf-8", "replace").strip().splitlines()[0]
            reason = (
                f"the original cannot load its libraries here ({loader_error}): pass LD_LIBRARY_PATH in env"
            )
            return VerifyResult(ran=False, args=args, same_behaviour=None, reason=reason)
        reason = subject + _describe_same(before)
        if not measure:
            return VerifyResult(ran=True, args=args, same_behaviour=True, reason=reason)
        try:
            original_timing, final_timing = _measure(
                stage,
                [0, 1],
                [*launch.prefix, binary, *args],
                launch,
                timeout=timeout,
                runs=runs,
                runner=runner,
            )
        except _NotMeasured as exc:
            return VerifyResult(
                ran=True, args=args, same_behaviour=True, reason=f"{reason}; startup not measured: {exc}"
            )
        return VerifyResult(
            ran=True,
            args=args,
            same_behaviour=True,
            reason=reason,
            original=original_timing,
            final=final_timing,
        )


def require_same(result: VerifyResult, path: str | None = None) -> None:
    """Raise VerificationError (exit code 3) when ``result`` found a behaviour difference."""
    if result.same_behaviour is False:
        how = " ".join(result.args) or "no arguments"
        prefix = f"{path}: " if path else ""
        raise VerificationError(
            f"{prefix}the result does not behave like the original (run with {how}): {result.reason}"
        )


def _describe_difference(before: Completed, after: Completed, timeout: float) -> str | None:
    if before.timed_out != after.timed_out:
        slow, quick, code = ("result", "original", before.returncode)
        if before.timed_out:
            slow, quick, code = ("original", "result", after.returncode)
        return f"the {slow} timed out after {timeout:g} s; the {quick} exited with {_exit_code(code)}"
    parts = []
    if before.returncode != after.returncode:
        parts.append(f"exit code {_exit_code(before.returncode)}→{_exit_code(after.returncode)}")
    for stream in ("stdout", "stderr"):
        differs = _first_difference(
            getattr(before, stream),
            getattr(before, f"{stream}_truncated"),
            getattr(after, stream),
            getattr(after, f"{stream}_truncated"),
        )
        if differs is not None:
            parts.append(f"{stream} {differs}")
    return "; ".join(parts) if parts else None


def _describe_same(completed: Completed) -> str:
    text = f"same exit code ({_exit_code(completed.returncode)}), stdout and stderr"
    if completed.stdout_truncated or completed.stderr_truncated:
        text += f" (output past {OUTPUT_LIMIT:,} bytes not compared)"
    return text


def _first_difference(old: bytes, old_cut: bool, new: bytes, new_cut: bool) -> str | None:
    if old == new:
        return None if old_cut == new_cut else f"is longer than {OUTPUT_LIMIT:,} bytes on one side only"
    old_lines, new_lines = old.split(b"\n"), new.split(b"\n")
    for number in range(max(len(old_lines), len(new_lines))):
        old_line = old_lines[number] if number < len(old_lines) else None
        new_line = new_lines[number] if number < len(new_lines) else None
        if old_line != new_line:
            return f"line {number + 1}: {_quote(old_line)}→{_quote(new_line)}"
    return "differs"  # unreachable: equal lines joined by the same separator are equal bytes


def _quote(line: bytes | None) -> str:
    if line is None:
        return "(end of output)"
    text = line.decode("utf-8", "replace")
    if len(text) > _QUOTE_LIMIT:
        text = text[: _QUOTE_LIMIT - 3] + "..."
    return repr(text)


def _exit_code(code: int | None) -> str:
    if code is None:
        return "(timed out)"
    if code < 0:
        try:
            return f"{code} ({signal.Signals(-code).name})"
        except ValueError:
            return str(code)
    return str(code)


# --- startup ----------------------------------------------------------------------------------------------


class _NotMeasured(Exception):
    pass


def _measure(
    stage: _Stage,
    sides: Sequence[int],
    command: Sequence[str],
    launch: _Launch,
    *,
    timeout: float,
    runs: int,
    runner: Runner,
) -> list[Timing]:
    """Time ``command`` in each twin, alternating sides: one untimed warm-up each, then ``runs`` rounds.

    Wall time comes from plain runs; peak RSS from a measured run each round (see runner.run's
    ``measure_rss``), whose launch through dash would add its own startup to the wall time."""

    def once(side: int, measure_rss: bool) -> Completed:
        try:
            completed = _run_in_stage(
                stage, side, command, launch, timeout=timeout, runner=runner, measure_rss=measure_rss
            )
        except (ToolFailedError, UnsupportedError) as exc:
            raise _NotMeasured(str(exc)) from exc
        if completed.timed_out:
            raise _NotMeasured(f"a timed run took longer than {timeout:g} s")
        return completed

    for side in sides:
        once(side, False)
    walls: dict[int, list[float]] = {side: [] for side in sides}
    peaks = dict.fromkeys(sides, 0)
    for _ in range(max(1, runs)):
        for side in sides:
            walls[side].append(once(side, False).seconds * 1000.0)
        for side in sides:
            peaks[side] = max(peaks[side], once(side, True).peak_rss_kib)
    return [
        Timing(
            median_ms=statistics.median(walls[side]),
            min_ms=min(walls[side]),
            max_ms=max(walls[side]),
            peak_rss_kib=peaks[side],
        )
        for side in sides
    ]


def measure_startup(
    path: str | os.PathLike[str],
    *,
    args: Sequence[str] = DEFAULT_ARGS,
    runs: int = 9,
    timeout: float = 10.0,
    env: Mapping[str, str] | None = None,
    runner: Runner = run,
) -> Timing:
    """Startup wall time and peak RSS of one binary, run as in ``verify`` (same folder layout, environment,
    qemu-user when needed). Raises ToolNotFoundError when qemu or the interpreter is missing,
    UnsupportedError when the file cannot be run, ToolFailedError when it cannot start or times out."""
    path = os.fspath(path)
    facts = _read_facts(path, full=True, error=MalformedELFError)
    try:
        launch = _plan_launch(facts, env)
    except _CannotRun as cannot:
        cls = ToolNotFoundError if cannot.missing else UnsupportedError
        raise file_error(path, cannot.reason, cls) from None
    with _Stage([path], os.path.basename(path)) as stage:
        try:
            (timing,) = _measure(
                stage,
                [0],
                [*launch.prefix, f"./{stage.name}", *args],
                launch,
                timeout=timeout,
                runs=runs,
                runner=runner,
            )
        except _NotMeasured as exc:
            raise file_error(path, f"startup not measured: {exc}", ToolFailedError) from exc
    return timing
