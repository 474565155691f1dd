"""Startup latency and peak RSS, with error bars.

Method: one untimed warm-up run per side, then ``runs`` rounds. Each round runs the two sides back to back,
in alternating order (A B, then B A: ABBA), so drift in the machine's load falls on both alike; then one run
per side measures peak RSS (see ``runner.run``'s ``measure_rss``; it is launched through dash, which would
distort wall time). Wall time is ``time.perf_counter`` (CLOCK_MONOTONIC) from just before the process is
started to the moment its exit is seen. The added startup is the mean of the per-round differences (result
minus original), with a 95% confidence interval from Student's t over those paired differences.

Every run, warm-ups and memory runs included, is handed to a ``check`` callback, which compares it with the
reference run and raises to stop at the first one that differs.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import ToolFailedError, UnsupportedError
from ..runner import Completed
from . import compare

# Two-sided 95% quantiles of Student's t for 1..30 degrees of freedom.
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip
_Z975 = 1.959964


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
class AddedStartup:
    """Startup the result adds over the original: the mean of the paired differences, and its 95% interval
    (None with a single pair, which has no spread)."""

    added_ms: float
    low_ms: float | None
    high_ms: float | None
    pairs: int

    @property
    def within_noise(self) -> bool:
        """The interval includes zero: no difference can be told from this machine's noise."""
        return self.low_ms is not None and self.high_ms is not None and self.low_ms <= 0.0 <= self.high_ms

    def describe(self) -> str:
        """``+75.0 ms (70.1 to 80.3)``, and ``, within noise`` when the interval includes zero."""
        if self.low_ms is None or self.high_ms is None:
            return f"{self.added_ms:+.1f} ms (one pair: no interval)"
        text = f"{self.added_ms:+.1f} ms ({self.low_ms:.1f} to {self.high_ms:.1f})"
        return text + (", within noise" if self.within_noise else "")


class NotMeasured(Exception):
    """A timed run could not be made at all (cannot start, dash or the subreaper missing)."""


RunOnce = Callable[[int, bool], Completed]  # (side, measure_rss) → the run
Check = Callable[[int, str, Completed], None]  # (side, which run, the run); raises when it differs


class RunDiffers(Exception):
    """A run did not match the reference: ``side`` 0 is the original (it varies), 1 the result."""

    def __init__(self, side: int, detail: str) -> None:
        super().__init__(detail)
        self.side = side
        self.detail = detail


def against_first_run(reference: Completed | None, names: Sequence[str], *, timeout: float) -> Check:
    """A ``check`` that compares every run with ``reference`` (when None, with the first run it is given,
    which must not time out) and raises RunDiffers at the first difference; ``names[side]`` says whose."""
    first: list[Completed] = [] if reference is None else [reference]

    def check(side: int, label: str, completed: Completed) -> None:
        if not first:
            first.append(completed)
            if completed.timed_out:
                raise NotMeasured(f"the {label} took longer than {timeout:g} s")
            return
        who = names[side]
        detail = compare.difference(first[0], completed, timeout, ("reference run", f"{label} of the {who}"))
        if detail is not None:
            raise RunDiffers(side, f"{label} of the {who} differs from the original's first run: {detail}")

    return check


def measure(
    run_once: RunOnce, sides: Sequence[int], *, runs: int, check: Check
) -> tuple[list[Timing], AddedStartup | None]:
    """Time each side (see the module docstring). With two sides, also the startup the second adds."""

    def once(side: int, measure_rss: bool, label: str) -> Completed:
        try:
            completed = run_once(side, measure_rss)
        except (ToolFailedError, UnsupportedError) as exc:
            raise NotMeasured(str(exc)) from exc
        check(side, label, completed)
        return completed

    for side in sides:
        once(side, False, "warm-up run")
    walls: dict[int, list[float]] = {side: [] for side in sides}
    peaks = dict.fromkeys(sides, 0)
    for round_index in range(max(1, runs)):
        order = list(sides) if round_index % 2 == 0 else list(reversed(sides))
        for side in order:
            walls[side].append(once(side, False, f"timed run {round_index + 1}").seconds * 1000.0)
        for side in order:
            peak = once(side, True, f"memory run {round_index + 1}").peak_rss_kib
            peaks[side] = max(peaks[side], peak)
    timings = [
        Timing(
            median_ms=statistics.median(walls[side]),
            min_ms=min(walls[side]),
            max_ms=max(walls[side]),
            peak_rss_kib=peaks[side],
        )
        for side in sides
    ]
    added = paired_difference(walls[sides[0]], walls[sides[1]]) if len(sides) == 2 else None
    return timings, added


def paired_difference(original_ms: Sequence[float], final_ms: Sequence[float]) -> AddedStartup:
    """Mean of ``final - original`` per pair, with a 95% Student-t interval."""
    differences = [final - original for original, final in zip(original_ms, final_ms)]
    mean = statistics.fmean(differences)
    if len(differences) < 2:
        return AddedStartup(mean, None, None, len(differences))
    half = t975(len(differences) - 1) * statistics.stdev(differences) / math.sqrt(len(differences))
    return AddedStartup(mean, mean - half, mean + half, len(differences))


def t975(degrees: int) -> float:
    """The 97.5% quantile of Student's t (two-sided 95%): a table to 30, then the Cornish-Fisher series."""
    if degrees < 1:
        raise ValueError("Student's t needs at least one degree of freedom")
    if degrees <= len(_T975):
        return _T975[degrees - 1]
    z = _Z975
    return z + (z**3 + z) / (4 * degrees) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * degrees**2)
