"""The compression stage: pack an ELF executable with UPX, or say why not.

UPX is an external program with strong opinions. Everything it refuses (already packed, not compressible,
``CantPackException: ...``, file too small) comes back as an :class:`UpxResult` with ``packed=False`` and a
short human reason, because a binary that could not be packed is still a good stripped binary. Only with
``required=True`` does a refusal become an error.

We also refuse some inputs before UPX sees them, because UPX would pack them and the result would break:
shared libraries crash when loaded packed, ``.o`` files are not programs, and a binary for another
architecture cannot be checked by running it here. ``force=True`` lets them through.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import shutil
import signal
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import fileops
from .elf import constants as c
from .elf.kind import host_arch, is_upx_packed, read_kind
from .envvars import switch
from .errors import (
    ToolFailedError,
    ToolNotFoundError,
    UnsupportedError,
    byte_count,
    file_error,
)
from .runner import Completed, Runner, run

__all__ = [
    "DEFAULT_TIMEOUT",
    "METHODS",
    "UpxResult",
    "UpxTool",
    "compress",
    "find_upx",
    "is_upx_packed",
    "pack_eligibility",
]

DEFAULT_TIMEOUT = 600.0
VERSION_TIMEOUT = 30.0
NOT_FOUND_MESSAGE = (
    "upx not found: install Debian's upx-ucl (bookworm-backports), set BINSLIM_UPX, or drop --upx"
)

# UPX 4 packs ELF with NRV2E unless told otherwise; ``--nrv2e`` asks for it explicitly.
METHODS: Mapping[str, str] = {"nrv": "--nrv2e", "lzma": "--lzma"}
METHOD_NAMES: Mapping[str, str] = {"nrv": "nrv2e", "lzma": "lzma"}

# Options in extra_args that would make UPX do something other than pack our one file into our temp path.
# A short-option cluster such as "-qd" counts as each of its letters ("-oFILE" is caught by its "o").
_FORBIDDEN_LONG = re.compile(
    r"^--(output|decompress|test|list|fileinfo|backup|stdout|force-overwrite|help|version|license)(=.*)?$"
)
_FORBIDDEN_SHORT = frozenset("odtlkchVL")


def pack_eligibility(path: str) -> str | None:
    """Why ``path`` should not be packed by default, or ``None`` when it may be.

    Raises NotELFError or MalformedELFError when the headers cannot be read.
    """
    kind = read_kind(path)
    if kind.is_object:
        return "relocatable object (ET_REL, a .o file), not an executable"
    if kind.is_core:
        return "core dump (ET_CORE), not an executable"
    if kind.e_type not in (c.ET_EXEC, c.ET_DYN):
        return f"ELF type {kind.e_type} is not an executable"
    if kind.is_shared_library:
        return "shared library (ET_DYN without PT_INTERP): packed libraries crash when loaded"
    host = host_arch()
    if host is not None and not kind.native:
        return f"built for {kind.machine_name}, not this {host.name} host"
    return None


# --- finding UPX ---


@dataclass(frozen=True)
class UpxTool:
    path: str
    version: str

    def to_dict(self) -> dict[str, str]:
        return {"path": self.path, "version": self.version}


def _which(name: str, env: Mapping[str, str]) -> str | None:
    search_path = env.get("PATH", os.defpath)
    if os.sep in name:
        return name if os.path.isfile(name) and os.access(name, os.X_OK) else None
    return shutil.which(name, path=search_path)


def find_upx(
    env: Mapping[str, str] = os.environ,
    *,
    runner: Runner = run,
    timeout: float = VERSION_TIMEOUT,
) -> UpxTool:
    """Locate UPX (``$BINSLIM_UPX``, then ``upx``, then ``upx-ucl`` on ``PATH``) and read its version.

    A boolean word in ``BINSLIM_UPX`` is the ``--upx`` switch (see ``envvars``), not a program name.
    """
    override = env.get("BINSLIM_UPX", "")
    if override and switch(override) is None:
        path = _which(override, env)
        if path is None:
            raise ToolNotFoundError(f"BINSLIM_UPX={override} is not an executable file: {NOT_FOUND_MESSAGE}")
    else:
        path = _which("upx", env) or _which("upx-ucl", env)
        if path is None:
            raise ToolNotFoundError(NOT_FOUND_MESSAGE)
    return UpxTool(path=os.path.abspath(path), version=_read_version(path, runner, timeout))


def _read_version(path: str, runner: Runner, timeout: float) -> str:
    completed = runner([path, "--version"], timeout=timeout, check=True)
    lines = completed.stdout.decode("utf-8", "replace").strip().splitlines()
    first = lines[0].strip() if lines else ""
    if not first:
        raise ToolFailedError(f"{path} --version printed nothing; is it UPX?", argv=completed.argv)
    # "upx 4.2.2" -> "4.2.2"; keep anything unexpected whole.
    return first[4:].strip() if first.lower().startswith("upx ") else first


# --- packing ---


@dataclass(frozen=True)
class UpxResult:
    packed: bool
    reason: str  # why not packed; "" when packed
    version: str
    method: str  # "default", "nrv2e" or "lzma"
    level: str  # "default" or "1".."9"
    seconds: float  # time UPX spent packing (0.0 when it never ran)
    input_size: int
    output_size: int | None
    output: str | None  # the packed file, when packed

    def to_dict(self) -> dict[str, Any]:
        """The report's ``upx`` object."""
        return {"version": self.version, "method": self.method, "level": self.level, "seconds": self.seconds}


# Exceptions by which UPX declines a file, as opposed to failing on it.
_REFUSALS = frozenset(
    {
        "CantPackException",
        "UnknownExecutableFormatException",
        "NotCompressibleException",
        "OverlayException",
    }
)
_UPX_ERROR_LINE = re.compile(r"^upx: .*?: ([A-Za-z]*(?:Exception|Error))(?:: (.*))?$")
_MAX_DETAIL = 200


def _upx_error(stderr: bytes) -> tuple[str, str] | None:
    """The last ``upx: FILE: SomeException: message`` line of stderr, as (name, message)."""
    found = None
    for line in stderr.decode("utf-8", "replace").splitlines():
        match = _UPX_ERROR_LINE.match(line.strip())
        if match:
            found = (match.group(1), (match.group(2) or "").strip())
    return found


def _shorten(text: str) -> str:
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 3] + "..."


def _failure_reason(completed: Completed, timeout: float) -> str:
    """A one-line reason for a UPX run that did not succeed."""
    if completed.timed_out:
        return f"upx timed out after {timeout:g} s"
    code = completed.returncode
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"upx was killed by {name}"
    error = _upx_error(completed.stderr)
    if error is None:
        tail = completed.stderr_tail(2)
        return _shorten(f"upx exited with {code}" + (f": {tail}" if tail else ""))
    name, message = error
    message = message.removesuffix("-- skipped").strip()
    if name == "AlreadyPackedException":
        return "already packed by UPX"
    if name == "IOException" and message in ("file is too small", "empty file"):
        return f"UPX refused: {message}"
    detail = f"{name}: {message}" if message else name
    if name in _REFUSALS:
        return _shorten(f"UPX refused: {detail}")
    return _shorten(f"upx failed: {detail}")


def _option_args(method: str | None, level: int | None, extra_args: str) -> list[str]:
    args: list[str] = []
    if method is not None:
        if method not in METHODS:
            raise UnsupportedError(f"unknown UPX method {method!r}: choose one of {', '.join(METHODS)}")
        args.append(METHODS[method])
    if level is not None:
        if isinstance(level, bool) or not isinstance(level, int) or not 1 <= level <= 9:
            raise UnsupportedError(f"UPX level must be 1..9, not {level!r}")
        args.append(f"-{level}")
    try:
        extra = shlex.split(extra_args)
    except ValueError as exc:
        raise UnsupportedError(f"cannot parse UPX extra arguments {extra_args!r}: {exc}") from exc
    for arg in extra:
        if arg in ("-", "--") or not arg.startswith("-"):
            forbidden = True  # a file name, or the end of options: UPX would pack something else too
        elif arg.startswith("--"):
            forbidden = bool(_FORBIDDEN_LONG.match(arg))
        else:
            forbidden = any(flag in _FORBIDDEN_SHORT for flag in arg[1:])
        if forbidden:
            raise UnsupportedError(f"UPX extra argument {arg!r} is not allowed: binslim chooses the files")
    return args + extra


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError as exc:
        raise file_error(path, f"cannot read: {exc.strerror or exc}") from exc


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def _pack_and_test(
    tool: UpxTool, options: list[str], input: str, packed_path: str, timeout: float, runner: Runner
) -> tuple[str, Completed | None, float]:
    """UPX ``input`` into ``packed_path``, then ``upx -t`` it: ("", the packing run, seconds) when both
    succeeded, else (why not, the run that failed, seconds UPX spent packing)."""
    packing = runner([tool.path, *options, "-o", packed_path, os.path.abspath(input)], timeout=timeout)
    seconds = packing.seconds
    if packing.timed_out or packing.returncode != 0:
        return _failure_reason(packing, timeout), packing, seconds
    if not os.path.isfile(packed_path):
        return "upx exited 0 but wrote no output", packing, seconds
    testing = runner([tool.path, "-t", packed_path], timeout=timeout)
    if testing.timed_out or testing.returncode != 0:
        detail = _failure_reason(testing, timeout).removeprefix("upx failed: ")
        return f"packed file failed upx -t: {detail}", testing, seconds
    return "", packing, seconds


def compress(
    input: str,
    output: str,
    *,
    method: str | None = None,
    level: int | None = None,
    extra_args: str = "",
    timeout: float = DEFAULT_TIMEOUT,
    force: bool = False,
    required: bool = False,
    tool: UpxTool | None = None,
    runner: Runner = run,
) -> UpxResult:
    """Pack ``input`` into ``output`` with UPX and check the result with ``upx -t``.

    ``input`` is never modified; ``output`` is written (atomically) only when packing succeeded. When the file
    is not packed the result says why: binslim declined it (shared library, ``.o``, foreign architecture;
    ``force=True`` overrides those), it is already packed, or UPX refused, failed or timed out. With
    ``required=True`` any of these raises ToolFailedError instead. Bad options raise UnsupportedError.
    """
    options = _option_args(method, level, extra_args)
    input_size = _size(input)
    if _same_file(input, output):
        raise UnsupportedError(f"{output}: UPX output must not be the input file")
    # Every outcome is this result with its reason, or with what packing produced.
    unpacked = UpxResult(
        packed=False,
        reason="",
        version=tool.version if tool is not None else "",
        method="default" if method is None else METHOD_NAMES[method],
        level="default" if level is None else str(level),
        seconds=0.0,
        input_size=input_size,
        output_size=None,
        output=None,
    )
    if is_upx_packed(input):
        return _refused(unpacked, "already packed by UPX", None, input=input, required=required)
    if not force:
        skip = pack_eligibility(input)
        if skip is not None:
            if required:
                raise ToolFailedError(f"{input}: not packed: {skip} (force packing to override)")
            return dataclasses.replace(unpacked, reason=skip)
    if tool is None:
        tool = find_upx(runner=runner)
    unpacked = dataclasses.replace(unpacked, version=tool.version)
    return _pack_beside_output(
        tool, options, input, output, unpacked, timeout=timeout, required=required, runner=runner
    )


def _refused(
    unpacked: UpxResult, reason: str, completed: Completed | None, *, input: str, required: bool
) -> UpxResult:
    """``unpacked`` with ``reason``; with ``required``, the ToolFailedError that says so instead."""
    if required:
        raise ToolFailedError(
            f"{input}: not packed: {reason}",
            argv=completed.argv if completed else (),
            returncode=completed.returncode if completed else None,
            stderr_tail=completed.stderr_tail() if completed else "",
            timed_out=completed.timed_out if completed else False,
        )
    return dataclasses.replace(unpacked, reason=reason)


def _pack_beside_output(
    tool: UpxTool,
    options: list[str],
    input: str,
    output: str,
    unpacked: UpxResult,
    *,
    timeout: float,
    required: bool,
    runner: Runner,
) -> UpxResult:
    """Pack into a scratch folder in ``output``'s folder, then move the packed file onto ``output`` when
    it passed ``upx -t`` and is smaller than ``input``."""
    out_dir = os.path.dirname(os.path.abspath(output))
    scratch = fileops.scratch_dir(".binslim-upx-", out_dir)  # locked, so a killed run's is swept later
    try:
        work_dir = scratch.__enter__()
    except OSError as exc:
        raise file_error(output, f"cannot write here: {exc.strerror or exc}") from exc
    try:
        # A fresh private folder: UPX refuses to overwrite, and nobody else can race us for the name.
        packed_path = os.path.join(work_dir, os.path.basename(output) or "packed")
        reason, last_run, seconds = _pack_and_test(tool, options, input, packed_path, timeout, runner)
        unpacked = dataclasses.replace(unpacked, seconds=seconds)
        if reason:
            return _refused(unpacked, reason, last_run, input=input, required=required)
        output_size = _size(packed_path)
        if output_size >= unpacked.input_size:
            reason = f"UPX output is not smaller ({unpacked.input_size:,} -> {byte_count(output_size)})"
            return _refused(unpacked, reason, last_run, input=input, required=required)
        try:
            os.replace(packed_path, output)
        except OSError as exc:
            raise file_error(output, f"cannot write: {exc.strerror or exc}") from exc
        return dataclasses.replace(unpacked, packed=True, output_size=output_size, output=output)
    finally:
        scratch.__exit__(None, None, None)
