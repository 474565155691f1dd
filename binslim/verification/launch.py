"""Where and how to run a binary for verification, and the runs themselves.

``plan_launch`` decides whether the binary can run here (natively or under qemu-user, with its interpreter
present); ``Stage`` gives the original and the result the same path, folder and HOME; ``run_in_stage`` runs
one side through ``binslim.runner`` with ``isolate=True``, which contains everything the program starts.
"""

from __future__ import annotations

import os
import shutil
import struct
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import cache
from typing import Any

from .. import fileops
from ..elf.constants import EM_386, EM_X86_64, ET_DYN, ET_EXEC
from ..elf.kind import ElfKind, host_arch, read_kind
from ..errors import ToolFailedError, UnsupportedError, file_error
from ..runner import Completed, Runner, run

OUTPUT_LIMIT = 1 << 20  # bytes of stdout/stderr compared per run


def qemu_for(path: str | os.PathLike[str]) -> str | None:
    """The qemu-user program (e.g. ``qemu-aarch64``) this host needs to run the ELF at ``path``, or None
    when it runs natively. Raises NotELFError/MalformedELFError, or UnsupportedError for a machine that
    qemu-user cannot run."""
    path = os.fspath(path)
    kind = read_kind(path)
    try:
        return _qemu_for(kind)
    except CannotRun as cannot:
        raise file_error(path, cannot.reason, UnsupportedError) from None


def _qemu_for(kind: ElfKind) -> str | None:
    if kind.native:
        return None
    host = host_arch()
    if (
        kind.e_machine == EM_386
        and host is not None
        and host.e_machine == EM_X86_64
        and _i386_runs_natively()
    ):
        return None
    if kind.qemu is None:
        raise CannotRun(f"{kind.identity} binaries cannot be run here: no qemu-user emulator for it")
    return kind.qemu


def tiny_i386_program() -> bytes:
    """A 93-byte static i386 ELF whose only instructions are exit(42)."""
    base, code = 0x08048000, b"\xb8\x01\x00\x00\x00\xbb\x2a\x00\x00\x00\xcd\x80"
    size = 52 + 32 + len(code)
    header = struct.pack(
        "<4sBBBB8sHHIIIIIHHHHHH",
        b"\x7fELF", 1, 1, 1, 0, b"\0" * 8,  # ELFCLASS32, little-endian, version 1
        2, EM_386, 1, base + 84, 52, 0, 0, 52, 32, 1, 0, 0, 0,
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


def plan_launch(path: str, env: Mapping[str, str] | None) -> Launch:
    """How to run the ELF file at ``path`` here; CannotRun says why not."""
    kind = read_kind(path)
    if kind.is_object:
        raise CannotRun("a relocatable object (.o) cannot be run")
    if kind.is_core:
        raise CannotRun("a core file cannot be run")
    if kind.is_shared_library and kind.e_entry == 0:  # one with an entry point (libc.so.6) runs
        raise CannotRun("a shared library without an entry point or interpreter cannot be run")
    if kind.e_type not in (ET_EXEC, ET_DYN):
        raise CannotRun(f"an ELF file of type {kind.e_type} cannot be run")
    run_env = {"PATH": os.environ.get("PATH", os.defpath), "LANG": "C", **(env or {})}
    qemu = _qemu_for(kind)
    prefix: tuple[str, ...] = ()
    if qemu is not None:
        found = shutil.which(qemu, path=run_env["PATH"])
        if found is None:
            raise CannotRun(f"no {qemu} on PATH (install Debian's qemu-user)", missing=qemu)
        prefix = (os.path.abspath(found),)
    interp = kind.interpreter
    if interp is not None and not _interpreter_present(interp, qemu, run_env):
        where = "here" if qemu is None else f"for {qemu} (set QEMU_LD_PREFIX in env to a sysroot that has it)"
        raise CannotRun(f"its interpreter {interp} is not installed {where}", missing=interp)
    return Launch(prefix=prefix, env=run_env)


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
        # Locked while in use, so a folder a killed run left behind is removed by the next one.
        self._scratch = ExitStack()
        self._base = self._scratch.enter_context(fileops.scratch_dir("binslim-verify-"))
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
        self._scratch.close()

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
