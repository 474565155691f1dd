"""The whole job for one file: strip, optionally pack, verify, then install atomically."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

from . import fileops
from ._record import Record
from .elf.copy import copy_range
from .elf.kind import kind_of
from .elf.reader import ElfFile
from .errors import BinslimError, ToolFailedError, VerificationError, file_error
from .options import UPX_METHODS, SlimOptions
from .strip import RemovedSection, StripResult, strip_to_fd

if TYPE_CHECKING:
    from .debuginfo import PendingDebugFile
    from .runner import Runner
    from .upx import UpxResult, UpxTool
    from .verifier import VerifyResult

__all__ = ["UPX_METHODS", "SlimOptions", "SlimResult", "failed_result", "slim", "slim_with", "try_slim"]


class SlimResult(Record):
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


def failed_result(
    path: str, output: str | None, message: str, verify: VerifyResult | None = None
) -> SlimResult:
    """The report entry of a file that could not be slimmed; it was left as it was. ``verify``: the
    verification that failed it, when there was one."""
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
        verify=verify,
    )


class _Temps:
    """Temporary files of one run; all removed at the end unless installed."""

    def __init__(self, folder: str | None = None) -> None:
        self.paths: list[str] = []
        self.folder = folder  # a private folder instead of the target's (dry runs write nothing there)

    def new(self, beside: str, *, named: bool = False) -> str:
        """A temporary file beside ``beside``; ``named`` when a program (UPX) must open it by name."""
        if self.folder is not None:
            beside = os.path.join(self.folder, os.path.basename(beside))
        path = fileops.temp_path_beside(beside, named=named)
        self.paths.append(path)
        return path

    def cleanup(self) -> None:
        for path in self.paths:
            fileops.discard(path)


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
    runner: Runner | None = None,
) -> SlimResult:
    """Strip ``input`` (and pack it when ``upx``), check the result, and install it at ``output``.

    ``output``'s folder must exist: no folder is ever created, and a missing one raises BinslimError.

    With ``output=None`` the input is rewritten in place; an input that has nothing to strip (and is not to
    be packed) is then left untouched, and one with several hard links keeps them when ``keep_hard_links``
    (its inode is rewritten, see ``fileops.install``). ``measure_startup=False`` verifies behaviour without
    timing startup. ``dry_run`` does all the work in a private temporary folder and installs nothing.
    ``runner`` runs every program (UPX, the verification runs; default ``binslim.runner.run``).
    Raises a BinslimError subclass on any failure, VerificationError (exit code 3) when the result behaves
    differently; the target is then left untouched.
    """
    options = SlimOptions(
        level=level,
        keep_sections=keep_sections,
        remove_sections=remove_sections,
        keep_debug=os.fspath(keep_debug) if keep_debug is not None else None,
        force=force,
        upx=upx,
        upx_method=upx_method,
        upx_level=upx_level,
        upx_args=upx_args,
        upx_timeout=upx_timeout,
        upx_force=upx_force,
        upx_required=upx_required,
        max_startup_ms=max_startup_ms,
        verify=verify,
        verify_args=verify_args,
        verify_cmd=verify_cmd,
        verify_timeout=verify_timeout,
        verify_runs=verify_runs,
        verify_env=verify_env,
        preserve_dates=preserve_dates,
        keep_hard_links=keep_hard_links,
        measure_startup=measure_startup,
        dry_run=dry_run,
        runner=runner,
    )
    return slim_with(input, output, options)


def slim_with(
    input: str | os.PathLike[str], output: str | os.PathLike[str] | None, options: SlimOptions
) -> SlimResult:
    """``slim`` with its options as one record (what ``slim_tree`` hands each worker)."""
    options = options.checked()
    source = os.fspath(input)
    target = os.fspath(output) if output is not None else source
    fileops.check_input(source)
    if output is None:
        target = fileops.in_place_target(source)  # a symlink stays a link to the stripped file
    else:
        target = fileops.resolve_output(target)
        fileops.check_output(target)
    with contextlib.ExitStack() as scratch:
        folder = scratch.enter_context(fileops.scratch_dir("binslim-dry-run-")) if options.dry_run else None
        temps = _Temps(folder=folder)
        try:
            # The input is parsed once: the kind check and the strip share this ElfFile.
            with ElfFile(source) as elf:
                if not elf.sections and kind_of(elf).upx_packed:
                    packed = True
                else:
                    packed = False
                    companion = _prepare_companion(source, target, temps, options)
                    stripped_path = temps.new(target, named=options.upx)
                    stripped = _strip(elf, target, stripped_path, companion, options)
            if packed:
                return _already_packed(source, target, temps, options)
            return _slim(source, target, temps, options, companion, stripped_path, stripped)
        finally:
            temps.cleanup()


def try_slim(path: str, output: str | None, options: SlimOptions) -> tuple[SlimResult, BinslimError | None]:
    """``slim_with``, with any failure turned into a "failed" result and the one-line error to show for it
    (a bug too: ``internal error``, its exception in ``__cause__``). Only Ctrl-C and SIGTERM get through."""
    try:
        return slim_with(path, output, options), None
    except BinslimError as exc:
        error = exc
    except OSError as exc:
        error = BinslimError(f"{path}: {exc.strerror or exc}")
        error.__cause__ = exc
    except Exception as exc:
        error = BinslimError(f"{path}: internal error: {type(exc).__name__}: {exc}")
        error.__cause__ = exc
    verify = error.verify if isinstance(error, VerificationError) else None
    return failed_result(path, output, str(error), cast("VerifyResult | None", verify)), error


class _Packing(Record):
    """What the UPX step did: the chosen result, why nothing was packed, and the run that measured it."""

    result: UpxResult | None = None
    reason: str = ""
    measured: VerifyResult | None = None

    @property
    def path(self) -> str | None:
        if self.result is not None and self.result.packed and self.result.output:
            return self.result.output
        return None


def _slim(
    source: str,
    target: str,
    temps: _Temps,
    o: SlimOptions,
    companion: PendingDebugFile | None,
    stripped_path: str,
    stripped: StripResult,
) -> SlimResult:
    """Everything after the strip: pack, verify, install."""
    if _same_path(source, target) and not stripped.changed and not o.upx:
        return SlimResult(
            input=source,
            output=target,
            status="skipped",
            message=_unchanged_message(stripped) + "; left untouched",
            original_size=stripped.original_size,
            stripped_size=stripped.original_size,
            packed_size=None,
            final_size=stripped.original_size,
            overlay=stripped.overlay,
            notes=stripped.messages,
            kept_notes=tuple((n.name, n.size) for n in stripped.kept_notes),
        )
    notes = list(stripped.messages)
    packing = _pack(stripped_path, source, target, temps, o) if o.upx else _Packing()
    if packing.reason:
        notes.append(f"not packed: {packing.reason}")
    final_path = packing.path or stripped_path
    verify_result = packing.measured
    if o.verify:
        verify_result = _check_behaviour(source, final_path, packing, o)
    if o.level == "sections":
        from .goinfo import build_info_note

        go_note = build_info_note(source, stripped_path, runner=o.program_runner)
        if go_note:
            notes.append(go_note)
    final_size = os.path.getsize(final_path) if packing.path else stripped.stripped_size
    if companion is not None:
        notes.append(_companion_note(companion, o.dry_run))
    _install(source, target, final_path, companion, o)
    packed_size = final_size if packing.path else None
    return SlimResult(
        input=source,
        output=target,
        status="ok",
        message=_message(stripped, packed_size is not None, o.dry_run, packing.reason),
        original_size=stripped.original_size,
        stripped_size=stripped.stripped_size,
        packed_size=packed_size,
        final_size=final_size,
        removed=stripped.removed,
        overlay=stripped.overlay,
        upx=packing.result,
        upx_reason=packing.reason,
        verify=verify_result,
        notes=tuple(notes),
        kept_notes=tuple((n.name, n.size) for n in stripped.kept_notes),
    )


def _same_path(source: str, target: str) -> bool:
    return target == source or os.path.abspath(target) == os.path.abspath(source)


def _prepare_companion(source: str, target: str, temps: _Temps, o: SlimOptions) -> PendingDebugFile | None:
    """The --keep-debug file, written to a temporary path; None without --keep-debug."""
    if o.keep_debug is None:
        return None
    from .debuginfo import prepare_debug_file

    return prepare_debug_file(
        source, o.keep_debug, level=o.level, output=target, temp_path=temps.new(o.keep_debug)
    )


def _strip(
    elf: ElfFile, target: str, stripped_path: str, companion: PendingDebugFile | None, o: SlimOptions
) -> StripResult:
    with fileops.open_new(stripped_path, name=target) as fd:
        stripped = strip_to_fd(
            elf,
            fd,
            output_name=target,
            level=o.level,
            keep_sections=o.keep_sections,
            remove_sections=o.remove_sections,
            debuglink=companion.link if companion is not None else None,
            force=o.force,
        )
        # UPX and the verifier run this file: give it the input's mode (it was created 0600).
        os.fchmod(fd, elf.stat.st_mode & 0o7777)
    return stripped


def _run_verify(source: str, path: str, o: SlimOptions, *, packed: bool, measure: bool) -> VerifyResult:
    from .verifier import verify

    return verify(
        source,
        path,
        args=tuple(o.verify_args),
        verify_cmd=o.verify_cmd,
        timeout=o.verify_timeout,
        runs=o.verify_runs,
        env=o.verify_env,
        packed=packed,
        measure=measure,
        runner=o.program_runner,
    )


def _check_behaviour(source: str, final_path: str, packing: _Packing, o: SlimOptions) -> VerifyResult:
    """Verify the final file against the input (reusing the packing step's run of it, when there was one);
    VerificationError when it behaves differently."""
    from .verifier import require_same

    result = packing.measured
    if result is None or packing.path is None:
        result = _run_verify(
            source, final_path, o, packed=packing.path is not None, measure=o.measure_startup
        )
    require_same(result, source)
    return result


def _companion_note(companion: PendingDebugFile, dry_run: bool) -> str:
    written = companion.written
    return (
        f"debug information {'would go' if dry_run else 'written'} to {companion.target}"
        f" ({written.size} B, CRC32 {written.crc32:08x}), linked through .gnu_debuglink"
    )


def _install(
    source: str, target: str, final_path: str, companion: PendingDebugFile | None, o: SlimOptions
) -> None:
    """Put the debug companion, then the result, in place (nothing in a dry run). A result written through
    a FIFO or device goes first: that write can fail (no reader, a full device) after the companion
    would have replaced an existing one, and no file there links to the companion anyway."""
    if o.dry_run:
        return
    streamed = fileops.written_through(target)
    if companion is not None and not streamed:
        companion.install(like=source, preserve_dates=o.preserve_dates)
    fileops.install(
        final_path,
        target,
        like=source,
        preserve_dates=o.preserve_dates,
        keep_hard_links=o.keep_hard_links and _same_path(source, target),
    )
    if companion is not None and streamed:
        companion.install(like=source, preserve_dates=o.preserve_dates)


def _unchanged_message(stripped: StripResult) -> str:
    """Why the strip left the file as it was: "already stripped" only when no symbols or debug info remain;
    else what stayed, and why."""
    if stripped.fully_stripped:
        return "already stripped"
    why = [m for m in stripped.messages if m.startswith(("removing ", "no debug sections"))]
    if stripped.relocatable:
        why.append("an object keeps its symbol table, so it still links")
    return "nothing to gain" + (f" ({why[-1]})" if why else "")


def _message(stripped: StripResult, packed: bool, dry_run: bool, upx_reason: str) -> str:
    message = "stripped" + (" and packed" if packed else "")
    if not stripped.changed:
        message = _unchanged_message(stripped).replace("already stripped", "nothing to strip")
        message += ", packed" if packed else ""
    if dry_run:
        message = f"dry run, nothing written: {message}"
    if upx_reason:
        message += f"; not packed: {upx_reason}"
    return message


def _already_packed(source: str, target: str, temps: _Temps, o: SlimOptions) -> SlimResult:
    size = os.path.getsize(source)
    if not o.dry_run and not _same_path(source, target):
        copy = temps.new(target)
        with open(source, "rb") as src, fileops.open_new(copy, name=target) as dst:
            copy_range(src.fileno(), dst, 0, 0, size)
        fileops.install(copy, target, like=source, preserve_dates=o.preserve_dates)
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


# --- the UPX step ---------------------------------------------------------------------------------------


def _headerless_copy(stripped_path: str, target: str, temps: _Temps) -> str | None:
    """The stripped file without its section table, for UPX; None when it has an overlay to keep."""
    from .elf.reader import ElfFile
    from .elf.writer import write_headerless

    with ElfFile(stripped_path) as elf:
        if elf.overlay_size or not elf.segments:
            return None
        path = temps.new(target, named=True)
        with fileops.open_new(path, name=target) as fd:
            write_headerless(elf, fd)
    os.chmod(path, os.stat(stripped_path).st_mode & 0o7777)
    return path


def _pack(stripped_path: str, source: str, target: str, temps: _Temps, o: SlimOptions) -> _Packing:
    """Pack the stripped file with each method asked for; keep the smallest within the startup budget."""
    from .upx import find_upx, pack_eligibility

    tool = find_upx()
    if not o.upx_force:
        reason = pack_eligibility(stripped_path)
        if reason:
            return _not_packed(source, reason, o)
    methods = ["nrv", "lzma"] if o.upx_method == "auto" else [o.upx_method]
    candidates: list[_Packing] = []
    reasons = []
    headerless = _headerless_copy(stripped_path, target, temps)
    for method in methods:
        packed_path = temps.new(target, named=True)
        os.unlink(packed_path)  # UPX refuses to write over an existing file
        result = _compress(headerless, stripped_path, packed_path, method, tool, o)
        if not result.packed:
            reasons.append(result.reason)
            continue
        measured: VerifyResult | None = None
        if o.max_startup_ms is not None:
            from .verifier import require_same

            measured = _run_verify(source, packed_path, o, packed=True, measure=True)
            require_same(measured, source)
            over = _over_budget(method, measured, o.max_startup_ms)
            if over:
                reasons.append(over)
                continue
        candidates.append(_Packing(result, "", measured))
    if not candidates:
        return _not_packed(source, "; ".join(r for r in reasons if r) or "UPX did not pack it", o)
    return min(candidates, key=_packed_size)


def _over_budget(method: str | None, measured: VerifyResult, budget_ms: float) -> str:
    """Why ``method``'s output does not fit the startup budget ("" when it does). Judged by the upper end
    of the added startup's 95% interval; a startup that was not measured never fits."""
    method = method or "UPX's default method"
    startup = measured.startup
    if startup is None or startup.high_ms is None:
        why = measured.reason if measured.ran else f"not run: {measured.reason}"
        if startup is not None:
            why = "one timed pair gives no interval (use --verify-runs 2 or more)"
        return f"{method}: startup not measured, so the {budget_ms:g} ms budget cannot be met ({why})"
    if startup.high_ms > budget_ms:
        return f"{method} adds {startup.describe()} startup, over the {budget_ms:g} ms budget"
    return ""


def _packed_size(packing: _Packing) -> int:
    return packing.result.output_size or 0 if packing.result is not None else 0


def _not_packed(source: str, reason: str, o: SlimOptions) -> _Packing:
    if o.upx_required:
        raise file_error(source, f"not packed: {reason}", ToolFailedError)
    return _Packing(reason=reason)


def _compress(
    headerless: str | None,
    stripped_path: str,
    packed_path: str,
    method: str | None,
    tool: UpxTool,
    o: SlimOptions,
) -> UpxResult:
    """UPX on the headerless copy; some binaries UPX only accepts with their section table, so on a
    refusal, on the stripped file as it is."""
    from .upx import compress

    def attempt(path: str, *, required: bool) -> UpxResult:
        return compress(
            path,
            packed_path,
            method=method,
            level=o.upx_level,
            extra_args=o.upx_args,
            timeout=o.upx_timeout,
            force=o.upx_force,
            required=required,
            tool=tool,
            runner=o.program_runner,
        )

    if headerless is not None:
        result = attempt(headerless, required=False)
        if result.packed:
            return result
    return attempt(stripped_path, required=o.upx_required)
