"""Check a slimmed binary against its original before it is installed.

The front of ``binslim.verification``, whose modules each do one job, lowest first:

- ``static``: both files parse; for a stripped (not packed) result the loaded bytes and identity are
  unchanged (``static_check``);
- ``launch``: whether and how the binary runs here (natively or under qemu-user), and the twin folders that
  give both sides the same path; every run is contained by ``binslim.runner``;
- ``compare``: how a run differs from the reference run;
- ``measure``: ABBA-timed runs, the added startup with a 95% interval, and peak RSS.

``verify`` runs the original twice (is it deterministic?), then the result, then the timed rounds, and
compares every run with the original's first. A difference comes back in the result; ``require_same``
turns it into VerificationError (exit code 3).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import (
    MalformedELFError,
    ToolFailedError,
    ToolNotFoundError,
    UnsupportedError,
    VerificationError,
    file_error,
)
from .runner import Completed, Runner, run
from .verification import compare
from .verification.launch import CannotRun, Launch, Stage, plan_launch, qemu_for, run_in_stage
from .verification.measure import AddedStartup, NotMeasured, RunDiffers, Timing, against_first_run, measure
from .verification.static import check, read_facts, static_check

__all__ = [
    "DEFAULT_ARGS",
    "AddedStartup",
    "Timing",
    "VerifyResult",
    "measure_startup",
    "qemu_for",
    "require_same",
    "static_check",
    "verify",
]

DEFAULT_ARGS: tuple[str, ...] = ("--version",)
LIBRARY_HINT = "--verify-env LD_LIBRARY_PATH=DIR"  # how the CLI passes what the loader needs


@dataclass(frozen=True)
class VerifyResult:
    """What running the original and the result showed. Timings are there only when both behaved the
    same, every timed run matched, and nothing timed out."""

    ran: bool  # False when the binary could not be run here (object file, no qemu...): see reason
    args: tuple[str, ...]
    same_behaviour: bool | None  # None when not ran, or when the original itself varies
    reason: str
    original: Timing | None = None
    final: Timing | None = None
    startup: AddedStartup | None = None
    original_varies: bool = False  # the original's own runs differed: nothing could be compared
    warnings: tuple[str, ...] = ()  # what the comparison did not cover

    @property
    def added_ms(self) -> float | None:
        """Mean startup the result adds over the original (negative when faster)."""
        return None if self.startup is None else self.startup.added_ms

    def to_dict(self) -> dict[str, Any]:
        startup: dict[str, float | None] | None = None
        rss: dict[str, int] | None = None
        if self.original is not None and self.final is not None and self.startup is not None:
            startup = {
                "original": round(self.original.median_ms, 3),
                "final": round(self.final.median_ms, 3),
                "added": round(self.startup.added_ms, 3),
                "added_low": None if self.startup.low_ms is None else round(self.startup.low_ms, 3),
                "added_high": None if self.startup.high_ms is None else round(self.startup.high_ms, 3),
            }
            rss = {"original": self.original.peak_rss_kib, "final": self.final.peak_rss_kib}
        return {
            "ran": self.ran,
            "args": list(self.args),
            "same_behaviour": self.same_behaviour,
            "original_varies": self.original_varies,
            "reason": self.reason,
            "warnings": list(self.warnings),
            "startup_ms": startup,
            "peak_rss_kib": rss,
        }


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
    ``same_behaviour=False`` with the difference in ``reason`` (``require_same`` raises it), and an original
    whose own runs differ as ``original_varies=True``. Each run gets stdin on /dev/null, ``PATH``,
    ``LANG=C``, ``HOME`` set to its own folder, and ``env`` on top; whatever it starts is ended with it.
    ``verify_cmd`` is a program given the binary's path as its only argument; when set it is what is
    compared, while the startup is still timed with ``args``. If both runs time out they count as the same,
    with a warning, and startup is not measured.
    """
    original, result, args = os.fspath(original), os.fspath(result), tuple(args)
    check(original, result, packed=packed)
    try:
        launch = plan_launch(original, env)
    except CannotRun as cannot:
        return VerifyResult(ran=False, args=args, same_behaviour=None, reason=cannot.reason)
    with Stage([original, result], os.path.basename(original)) as stage:
        job = _Job(stage, launch, args, verify_cmd, timeout, runner)
        compared = _compare_behaviour(job)
        if isinstance(compared, VerifyResult):
            return compared
        reference, same = compared
        return _time_startup(job, reference, same, runs) if measure else same


@dataclass(frozen=True)
class _Job:
    """What every run of one verification shares."""

    stage: Stage
    launch: Launch
    args: tuple[str, ...]
    verify_cmd: str | None
    timeout: float
    runner: Runner

    @property
    def subject(self) -> str:
        """How reasons start: with the --verify-cmd script's name when it is what was compared."""
        return "" if self.verify_cmd is None else f"{os.path.basename(self.verify_cmd)}: "

    def timed_command(self) -> list[str]:
        return [*self.launch.prefix, f"./{self.stage.name}", *self.args]


def _compare_behaviour(job: _Job) -> VerifyResult | tuple[Completed, VerifyResult]:
    """Run the original twice and the result once, and compare. Returns the verification's result when it
    ends here (cannot run, varies, differs, both timed out), else the reference run and the "same" result."""
    if job.verify_cmd is None:
        command = job.timed_command()
        launch = job.launch
    else:
        command = [os.path.abspath(job.verify_cmd), os.path.join(job.stage.path, job.stage.name)]
        qemu = {"BINSLIM_QEMU": job.launch.prefix[0]} if job.launch.prefix else {}
        launch = Launch((), {**job.launch.env, **qemu})

    def side_run(side: int) -> Completed:
        return run_in_stage(job.stage, side, command, launch, timeout=job.timeout, runner=job.runner)

    args, subject = job.args, job.subject
    try:
        reference = side_run(0)
        again = side_run(0)
    except ToolFailedError as exc:
        if job.verify_cmd is not None:
            raise
        return VerifyResult(
            ran=False, args=args, same_behaviour=None, reason=f"the original cannot be run: {exc}"
        )
    variation = compare.difference(reference, again, job.timeout, ("first run", "second run"))
    if variation is not None:
        return _varies(args, subject + compare.varies(f"first→second run: {variation}", job.verify_cmd))
    if reference.returncode == 127 and b"error while loading shared libraries" in reference.stderr:
        # The original stopped in the dynamic loader: it never ran, so nothing was compared.
        loader_error = reference.stderr.decode("utf-8", "replace").strip().splitlines()[0]
        reason = f"the original cannot load its libraries here ({loader_error}): pass {LIBRARY_HINT}"
        return VerifyResult(ran=False, args=args, same_behaviour=None, reason=reason)
    try:
        after = side_run(1)
    except ToolFailedError as exc:
        if job.verify_cmd is not None:
            raise
        code = compare.exit_code(reference.returncode)
        reason = f"the result cannot be run ({exc}); the original exited with {code}"
        return VerifyResult(ran=True, args=args, same_behaviour=False, reason=reason)
    difference = compare.difference(reference, after, job.timeout)
    if difference is not None:
        return VerifyResult(ran=True, args=args, same_behaviour=False, reason=subject + difference)
    warnings = tuple(compare.warnings(reference, args, job.verify_cmd, job.timeout))
    if reference.timed_out:
        reason = f"{subject}both timed out after {job.timeout:g} s; counted as the same; startup not measured"
        return VerifyResult(ran=True, args=args, same_behaviour=True, reason=reason, warnings=warnings)
    reason = subject + compare.describe_same(reference)
    return reference, VerifyResult(ran=True, args=args, same_behaviour=True, reason=reason, warnings=warnings)


def _time_startup(job: _Job, reference: Completed, same: VerifyResult, runs: int) -> VerifyResult:
    """The timed rounds, every run compared with the reference (with --verify-cmd, with the original's
    warm-up run, since the timed runs use the arguments instead)."""
    try:
        (original_timing, final_timing), added = _measure_against(
            job.stage,
            [0, 1],
            job.timed_command(),
            job.launch,
            reference if job.verify_cmd is None else None,
            timeout=job.timeout,
            runs=runs,
            runner=job.runner,
        )
    except NotMeasured as exc:
        return _with_reason(same, f"{same.reason}; startup not measured: {exc}")
    except RunDiffers as differs:
        if differs.side == 0:
            return _varies(job.args, compare.varies(differs.detail, None))
        return VerifyResult(ran=True, args=job.args, same_behaviour=False, reason=differs.detail)
    return VerifyResult(
        ran=True,
        args=job.args,
        same_behaviour=True,
        reason=same.reason,
        original=original_timing,
        final=final_timing,
        startup=added,
        warnings=same.warnings,
    )


def _varies(args: tuple[str, ...], reason: str) -> VerifyResult:
    return VerifyResult(ran=True, args=args, same_behaviour=None, reason=reason, original_varies=True)


def _with_reason(result: VerifyResult, reason: str) -> VerifyResult:
    return VerifyResult(
        ran=result.ran,
        args=result.args,
        same_behaviour=result.same_behaviour,
        reason=reason,
        warnings=result.warnings,
    )


def _measure_against(
    stage: Stage,
    sides: Sequence[int],
    command: Sequence[str],
    launch: Launch,
    reference: Completed | None,
    *,
    timeout: float,
    runs: int,
    runner: Runner,
) -> tuple[list[Timing], AddedStartup | None]:
    """``measure`` with every run compared to ``reference`` (the first warm-up of side 0 when None)."""

    def run_once(side: int, measure_rss: bool) -> Completed:
        return run_in_stage(
            stage, side, command, launch, timeout=timeout, runner=runner, measure_rss=measure_rss
        )

    names = ("original", "result") if len(sides) == 2 else ("binary", "binary")
    check = against_first_run(reference, names, timeout=timeout)
    return measure(run_once, sides, runs=runs, check=check)


def require_same(result: VerifyResult, path: str | None = None) -> None:
    """Raise VerificationError (exit code 3) when ``result`` found a behaviour difference, or when the
    original itself was not deterministic (then nothing could be compared)."""
    prefix = f"{path}: " if path else ""
    if result.original_varies:
        raise VerificationError(prefix + result.reason, verify=result)
    if result.same_behaviour is False:
        how = " ".join(result.args) or "no arguments"
        raise VerificationError(
            f"{prefix}the result does not behave like the original (run with {how}): {result.reason}",
            verify=result,
        )


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
    UnsupportedError when the file cannot be run, ToolFailedError when it cannot start, times out, or a
    run's exit code or output differs from the first's."""
    path = os.fspath(path)
    read_facts(path, full=True, error=MalformedELFError)  # NotELFError/MalformedELFError as verify gives
    try:
        launch = plan_launch(path, env)
    except CannotRun as cannot:
        cls = ToolNotFoundError if cannot.missing else UnsupportedError
        raise file_error(path, cannot.reason, cls) from None
    with Stage([path], os.path.basename(path)) as stage:
        try:
            (timing,), _ = _measure_against(
                stage,
                [0],
                [*launch.prefix, f"./{stage.name}", *args],
                launch,
                None,
                timeout=timeout,
                runs=runs,
                runner=runner,
            )
        except (NotMeasured, RunDiffers) as exc:
            raise file_error(path, f"startup not measured: {exc}", ToolFailedError) from exc
    return timing
