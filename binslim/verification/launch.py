"""Where and how to run a binary for verification, and the runs themselves.

``plan_launch`` decides whether the binary can run here (natively or under qemu-user, with its interpreter
present); ``Stage`` gives the original and the result the same path, folder and HOME; ``run_in_stage`` runs
one side through ``binslim.runner`` with ``isolate=True``, which contains everything the program starts.
"""

from __future__ import annotations

import os
import shutil
import struct
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from typing import Any

from ..errors import MalformedELFError, NotELFError, ToolFailedError, UnsupportedError, file_error
from ..runner import Completed, Runner, run
from .static import ElfFacts

OUTPUT_LIMIT = 1 << 20  # bytes of stdout/stderr compared per run


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


def tiny_i386_program() -> bytes:
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
            handle.write(tiny_i386_program())
        os.chmod(probe, 0o700)
        try:
            return run([probe], timeout=10.0).returncode == 42
        except ToolFailedError:
            return False


class CannotRun(Exception):
    def __init__(self, reason: str, missing: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.missing = missing  # the missing program, when that is the reason


@dataclass(frozen=True)
class Launch:
    prefix: tuple[str, ...]  # () or (absolute path of qemu,)
    env: dict[str, str]  # without HOME, which is the run's folder


def plan_launch(facts: ElfFacts, env: Mapping[str, str] | None) -> Launch:
    """How to run the binary described by ``facts`` here; CannotRun says why not."""
    e_type = facts.header["e_type"]
    if e_type == "ET_REL":
        raise CannotRun("a relocatable object (.o) cannot be run")
    if e_type == "ET_CORE":
        raise CannotRun("a core file cannot be run")
    if e_type == "ET_DYN" and facts.interp is None and facts.header["e_entry"] == 0 and not facts.pie_flag:
        raise CannotRun("a shared library without an entry point or interpreter cannot be run")
    if e_type not in ("ET_EXEC", "ET_DYN"):
        raise CannotRun(f"an ELF file of type {e_type} cannot be run")
    run_env = {"PATH": os.environ.get("PATH", os.defpath), "LANG": "C", **(env or {})}
    machine = facts.header["e_machine"]
    number = _machine_number(facts.path)
    try:
        qemu = _qemu_for(facts.path, number, facts.is64, facts.little_endian, facts.header["e_flags"])
    except UnsupportedError as exc:
        raise CannotRun(f"{machine} binaries cannot be run here: no qemu-user emulator for it") from exc
    prefix: tuple[str, ...] = ()
    if qemu is not None:
        found = shutil.which(qemu, path=run_env["PATH"])
        if found is None:
            raise CannotRun(f"no {qemu} on PATH (install Debian's qemu-user)", missing=qemu)
        prefix = (os.path.abspath(found),)
    if facts.interp is not None and not _interpreter_present(facts.interp, qemu, run_env):
        where = "here" if qemu is None else f"for {qemu} (set QEMU_LD_PREFIX in env to a sysroot that has it)"
        raise CannotRun(f"its interpreter {facts.interp} is not installed {where}", missing=facts.interp)
    return Launch(prefix=prefix, env=run_env)


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


class Stage:
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

    def __enter__(self) -> Stage:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def run_in_stage(
    stage: Stage,
    index: int,
    command: Sequence[str],
    launch: Launch,
    *,
    timeout: float,
    runner: Runner,
    measure_rss: bool = False,
) -> Completed:
    with stage.mounted(index) as folder:
        env = {"HOME": folder, **launch.env}  # a HOME in the caller's env wins
        # measure_rss is passed only when wanted, so injected runners without it keep working.
        extra: dict[str, Any] = {"measure_rss": True} if measure_rss else {}
        return runner(
            list(command),
            timeout=timeout,
            cwd=folder,
            env=env,
            output_limit=OUTPUT_LIMIT,
            isolate=True,  # the program is untrusted: contain whatever it starts
            **extra,
        )
