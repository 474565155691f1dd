"""Behaviour: how two runs differ, in one line, and what a comparison did not cover.

Every run is compared with one reference run of the original: its exit code (or that it was still running at
the timeout), stdout and stderr. The same words serve the original's own runs (does it vary?) and the
result's (does it behave differently?).
"""

from __future__ import annotations

import signal
from collections.abc import Sequence

from ..runner import Completed
from .launch import OUTPUT_LIMIT

_QUOTE_LIMIT = 60  # characters of a differing line shown in a message
_HOW_TO_CHOOSE = "choose --verify-args or --verify-cmd"


def difference(
    reference: Completed, other: Completed, timeout: float, names: tuple[str, str] = ("original", "result")
) -> str | None:
    """How ``other`` differs from ``reference``, or None when it does not. ``names`` label the two runs.
    Two runs that both timed out are alike: what a killed program had written by then is a matter of
    timing, not behaviour."""
    if reference.timed_out and other.timed_out:
        return None
    if reference.timed_out != other.timed_out:
        slow, quick, code = names[1], names[0], reference.returncode
        if reference.timed_out:
            slow, quick, code = names[0], names[1], other.returncode
        return f"the {slow} timed out after {timeout:g} s; the {quick} exited with {exit_code(code)}"
    parts = []
    if reference.returncode != other.returncode:
        parts.append(f"exit code {exit_code(reference.returncode)}→{exit_code(other.returncode)}")
    for stream in ("stdout", "stderr"):
        differs = _first_difference(
            getattr(reference, stream),
            getattr(reference, f"{stream}_truncated"),
            getattr(other, stream),
            getattr(other, f"{stream}_truncated"),
        )
        if differs is not None:
            parts.append(f"{stream} {differs}")
    return "; ".join(parts) if parts else None


def describe_same(completed: Completed) -> str:
    text = f"same exit code ({exit_code(completed.returncode)}), stdout and stderr"
    if completed.stdout_truncated or completed.stderr_truncated:
        text += f" (output past {OUTPUT_LIMIT:,} bytes not compared)"
    return text


def varies(detail: str, verify_cmd: str | None) -> str:
    """The reason given when the original's own runs differ."""
    what = "its --verify-cmd script" if verify_cmd is not None else "the arguments given"
    return (
        f"the original itself is not deterministic with {what} ({detail}), so its result cannot be compared;"
        f" {_HOW_TO_CHOOSE} whose output and exit code do not change from run to run"
    )


def warnings(reference: Completed, args: Sequence[str], verify_cmd: str | None, timeout: float) -> list[str]:
    """What the comparison did not cover, judged from the reference run."""
    how = f"--verify-cmd {verify_cmd}" if verify_cmd is not None else f"args: {' '.join(args) or '(none)'}"
    if reference.timed_out:
        return [
            f"both were still running after {timeout:g} s ({how}), like a server: only that was compared, not"
            f" their output or exit code; {_HOW_TO_CHOOSE} that make it exit"
        ]
    if reference.returncode != 0:
        return [
            f"the original exits with {exit_code(reference.returncode)} ({how}): only that error path was"
            f" exercised; {_HOW_TO_CHOOSE} that make it succeed"
        ]
    return []


def exit_code(code: int | None) -> str:
    if code is None:
        return "(timed out)"
    if code < 0:
        try:
            return f"{code} ({signal.Signals(-code).name})"
        except ValueError:
            return str(code)
    return str(code)


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
