"""The whole job for one file: strip, optionally pack, verify, then install atomically."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import fileops
from .errors import BinslimError, ToolFailedError, VerificationError, file_error
from .runner import Runner, run
from .strip import RemovedSection, strip_to_fd

if TYPE_CHECKING:
    from .debuginfo import PendingDebugFile
    from .upx import UpxResult
    from .verifier import VerifyResult

UPX_METHODS = ("nrv", "lzma", "auto")


@dataclass(frozen=True)
class SlimResult:
    """One entry of the JSON report's ``results``."""

    input: str
    output: str
    status: str  # "ok" | "skipped" | "failed"
    message: str
    original_size: int
    stripped_size: int
    packed_size: int | None
    final_size: int
    removed: tuple[RemovedSection, ...] = ()
    overlay: int = 0
    upx: UpxResult | None = None
    upx_reason: str = ""
    verify: VerifyResult | None = None
    notes: tuple[str, ...] = ()
    kept_notes: tuple[tuple[str, int], ...] = ()

    @property
    def saved(self) -> int:
        return self.original_size - self.final_size

    @property
    def full_message(self) -> str:
        """The message with the notes (warnings such as lost section headers, a kept overlay, a relocatable
        object only debug-stripped) that the text report prints on lines of their own."""
        extra = [
            n
            for n in self.notes
            if not n.startswith("not packed:") or n[len("not packed: ") :] not in self.message
        ]
        return "; ".join([self.message, *extra])

    def to_dict(self) -> dict[str, Any]:
        return {
            "input": self.input,
            "output": self.output,
            "status": self.status,
            "message": self.full_message,
            "size": {
                "original": self.original_size,
                "stripped": self.stripped_size,
                "packed": self.packed_size,
                "final": self.final_size,
            },
            "removed": [r.to_dict() for r in self.removed],
            "overlay": self.overlay,
            "upx": self.upx.to_dict() if self.upx is not None and self.upx.packed else None,
            "verify": self.verify.to_dict() if self.verify is not None else None,
        }


def failed_result(path: str, output: str | None, message: str) -> SlimResult:
    """The report entry of a file that could not be slimmed; it was left as it was."""
    size = os.path.getsize(path) if os.path.isfile(path) else 0
    return SlimResult(
        input=path,
        output=output or path,
        status="failed",
        message=message,
        original_size=size,
        stripped_size=size,
        packed_size=None,
        final_size=size,
    )


@dataclass
class _Temps:
    """Temporary files of one run; all removed at the end unless installed."""

    paths: list[str] = field(default_factory=list)
    folder: str | None = None  # a private folder instead of the target's (dry runs write nothing there)

    def new(self, beside: str) -> str:
        if self.folder is not None:
            beside = os.path.join(self.folder, os.path.basename(beside))
        path = fileops.temp_path_beside(beside)
        self.paths.append(path)
        return path

    def cleanup(self) -> None:
        for path in self.paths:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)


def slim(
    input: str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
    *,
    level: str = "all",
    keep_sections: Sequence[str] = (),
    remove_sections: Sequence[str] = (),
    keep_debug: str | os.PathLike[str] | None = None,
    force: bool = False,
    upx: bool = False,
    upx_method: str | None = None,
    upx_level: int | None = None,
    upx_args: str = "",
    upx_timeout: float = 600.0,
    upx_force: bool = False,
    upx_required: bool = False,
    max_startup_ms: float | None = None,
    verify: bool = True,
    verify_args: Sequence[str] = ("--version",),
    verify_cmd: str | None = None,
    verify_timeout: float = 10.0,
    verify_runs: int = 9,
    verify_env: Mapping[str, str] | None = None,
    preserve_dates: bool = False,
    keep_hard_links: bool = True,
    measure_startup: bool = True,
    dry_run: bool = False,
    runner: Runner = run,
) -> SlimResult:
    """Strip ``input`` (and pack it when ``upx``), check the result, and install it at ``output``.

    With ``output=None`` the input is rewritten in place; an input that has nothing to strip (and is not to
    be packed) is then left untouched, and one with several hard links keeps them when ``keep_hard_links``
    (its inode is rewritten, see ``fileops.install``). ``measure_startup=False`` verifies behaviour without
    timing startup. ``dry_run`` does all the work in a private temporary folder and installs nothing.
    Raises a BinslimError subclass on any failure, VerificationError (exit code 3) when the result behaves
    differently; the target is then left untouched.
    """
    source = os.fspath(input)
    target = os.fspath(output) if output is not None else source
    if upx_method is not None and upx_method not in UPX_METHODS:
        raise BinslimError(f"unknown UPX method {upx_method!r} (choose from {', '.join(UPX_METHODS)})")
    if upx_method == "auto" and max_startup_ms is None:
        raise BinslimError("--upx-method auto needs --max-startup-ms")
    upx = upx or upx_method is not None
    in_place = os.path.abspath(target) == os.path.abspath(source)
    temps = _Temps(folder=tempfile.mkdtemp(prefix="binslim-dry-run-") if dry_run else None)
    try:
        if upx or os.path.isfile(source):
            from .upx import is_upx_packed

            if os.path.isfile(source) and is_upx_packed(source):
                return _already_packed(source, target, temps, preserve_dates, install=not dry_run)

        companion: PendingDebugFile | None = None
        if keep_debug is not None:
            from .debuginfo import prepare_debug_file

            debug_target = os.fspath(keep_debug)
            companion = prepare_debug_file(
                source, debug_target, level=level, output=target, temp_path=temps.new(debug_target)
            )
        stripped_path = temps.new(target)
        with fileops.open_new(stripped_path, name=target) as fd:
            stripped = strip_to_fd(
                source,
                fd,
                output_name=target,
                level=level,
                keep_sections=keep_sections,
                remove_sections=remove_sections,
                debuglink=companion.link if companion is not None else None,
                force=force,
            )
        # UPX and the verifier run this file: give it the input's mode (mkstemp made it 0600).
        os.chmod(stripped_path, os.stat(source).st_mode & 0o7777)
        if in_place and not stripped.changed and not upx:
            return SlimResult(
                input=source,
                output=target,
                status="skipped",
                message="already stripped; left untouched",
                original_size=stripped.original_size,
                stripped_size=stripped.original_size,
                packed_size=None,
                final_size=stripped.original_size,
                overlay=stripped.overlay,
                notes=stripped.messages,
                kept_notes=tuple((n.name, n.size) for n in stripped.kept_notes),
            )
        final_path = stripped_path
        notes = list(stripped.messages)
        upx_result: UpxResult | None = None
        upx_reason = ""
        packed_size: int | None = None
        verify_result: VerifyResult | None = None

        if upx:
            upx_result, upx_reason, verify_result = _pack(
                stripped_path,
                target,
                temps,
                upx_method,
                upx_level,
                upx_args,
                upx_timeout,
                upx_force,
                upx_required,
                max_startup_ms,
                verify_args,
                verify_cmd,
                verify_timeout,
                verify_runs,
                verify_env,
                runner,
                source,
            )
            if upx_result is not None and upx_result.packed and upx_result.output:
                final_path = upx_result.output
                packed_size = os.path.getsize(final_path)
            if upx_reason:
                notes.append(f"not packed: {upx_reason}")

        if verify:
            from .verifier import require_same
            from .verifier import verify as run_verify

            if verify_result is None or final_path == stripped_path:
                verify_result = run_verify(
                    source,
                    final_path,
                    args=tuple(verify_args),
                    verify_cmd=verify_cmd,
                    timeout=verify_timeout,
                    runs=verify_runs,
                    env=verify_env,
                    packed=final_path != stripped_path,
                    measure=measure_startup,
                    runner=runner,
                )
            require_same(verify_result, source)
        if level == "sections":
            from .goinfo import build_info_note

            go_note = build_info_note(source, stripped_path, runner=runner)
            if go_note:
                notes.append(go_note)

        final_size = os.path.getsize(final_path)
        if companion is not None:
            written = companion.written
            notes.append(
                f"debug information {'would go' if dry_run else 'written'} to {companion.target}"
                f" ({written.size} B, CRC32 {written.crc32:08x}), linked through .gnu_debuglink"
            )
            if not dry_run:
                companion.install(like=source, preserve_dates=preserve_dates)
        if not dry_run:
            fileops.install(
                final_path,
                target,
                like=source,
                preserve_dates=preserve_dates,
                keep_hard_links=keep_hard_links and in_place,
            )
        message = "stripped" + (" and packed" if packed_size is not None else "")
        if not stripped.changed:
            message = "nothing to strip" + (", packed" if packed_size is not None else "")
        if dry_run:
            message = f"dry run, nothing written: {message}"
        if upx_reason:
            message += f"; not packed: {upx_reason}"
        return SlimResult(
            input=source,
            output=target,
            status="ok",
            message=message,
            original_size=stripped.original_size,
            stripped_size=stripped.stripped_size,
            packed_size=packed_size,
            final_size=final_size,
            removed=stripped.removed,
            overlay=stripped.overlay,
            upx=upx_result,
            upx_reason=upx_reason,
            verify=verify_result,
            notes=tuple(notes),
            kept_notes=tuple((n.name, n.size) for n in stripped.kept_notes),
        )
    finally:
        temps.cleanup()


def _already_packed(
    source: str, target: str, temps: _Temps, preserve_dates: bool, *, install: bool
) -> SlimResult:
    size = os.path.getsize(source)
    if install and os.path.abspath(target) != os.path.abspath(source):
        copy = temps.new(target)
        with open(source, "rb") as src, open(copy, "wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
        fileops.install(copy, target, like=source, preserve_dates=preserve_dates)
    return SlimResult(
        input=source,
        output=target,
        status="skipped",
        message="already packed by UPX (no section table to strip); left as it was",
        original_size=size,
        stripped_size=size,
        packed_size=None,
        final_size=size,
    )


def _headerless_copy(stripped_path: str, target: str, temps: _Temps) -> str | None:
    """The stripped file without its section table, for UPX; None when it has an overlay to keep."""
    from .elf.reader import ElfFile
    from .elf.writer import write_headerless

    with ElfFile(stripped_path) as elf:
        if elf.overlay_size or not elf.segments:
            return None
        path = temps.new(target)
        with fileops.open_new(path, name=target) as fd:
            write_headerless(elf, fd)
    os.chmod(path, os.stat(stripped_path).st_mode & 0o7777)
    return path


def _pack(
    stripped_path: str,
    target: str,
    temps: _Temps,
    method: str | None,
    level: int | None,
    extra_args: str,
    timeout: float,
    force: bool,
    required: bool,
    max_startup_ms: float | None,
    verify_args: Sequence[str],
    verify_cmd: str | None,
    verify_timeout: float,
    verify_runs: int,
    verify_env: Mapping[str, str] | None,
    runner: Runner,
    source: str,
) -> tuple[UpxResult | None, str, VerifyResult | None]:
    """Pack the stripped file. Returns (chosen result, reason it was not packed, its verification)."""
    from .upx import compress, find_upx, pack_eligibility

    tool = find_upx()
    if not force:
        reason = pack_eligibility(stripped_path)
        if reason:
            if required:
                raise file_error(source, f"not packed: {reason}", ToolFailedError)
            return None, reason, None
    methods = ["nrv", "lzma"] if method == "auto" else [method]
    candidates: list[tuple[UpxResult, VerifyResult | None]] = []
    reasons = []
    headerless = _headerless_copy(stripped_path, target, temps)
    for candidate in methods:
        packed_path = temps.new(target)
        os.unlink(packed_path)  # UPX refuses to write over an existing file
        result = None
        if headerless is not None:
            result = compress(
                headerless,
                packed_path,
                method=candidate,
                level=level,
                extra_args=extra_args,
                timeout=timeout,
                force=force,
                required=False,
                tool=tool,
                runner=runner,
            )
        if result is None or not result.packed:
            # Some binaries UPX only accepts with their section table: pack the stripped file as it is.
            result = compress(
                stripped_path,
                packed_path,
                method=candidate,
                level=level,
                extra_args=extra_args,
                timeout=timeout,
                force=force,
                required=required,
                tool=tool,
                runner=runner,
            )
        if not result.packed:
            reasons.append(result.reason)
            continue
        measured: VerifyResult | None = None
        if max_startup_ms is not None:
            from .verifier import verify as run_verify

            measured = run_verify(
                source,
                packed_path,
                args=tuple(verify_args),
                verify_cmd=verify_cmd,
                timeout=verify_timeout,
                runs=verify_runs,
                env=verify_env,
                packed=True,
                runner=runner,
            )
            if measured.same_behaviour is False:
                raise VerificationError(f"{source}: UPX {candidate} output differs: {measured.reason}")
            added = measured.added_ms
            if added is not None and added > max_startup_ms:
                reasons.append(f"{candidate} adds {added:.1f} ms startup (budget {max_startup_ms:g} ms)")
                continue
        candidates.append((result, measured))
    if not candidates:
        reason = "; ".join(r for r in reasons if r) or "UPX did not pack it"
        if required:
            raise file_error(source, f"not packed: {reason}", ToolFailedError)
        return None, reason, None
    best, measured = min(candidates, key=lambda pair: pair[0].output_size or 0)
    return best, "", measured
