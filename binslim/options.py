"""One record of the options of a slim job, passed whole from ``slim``/``slim_tree`` to each stage."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ._record import Record
from .errors import BinslimError, UsageError

if TYPE_CHECKING:
    from .runner import Runner

UPX_METHODS = ("nrv", "lzma", "auto")
LEVELS = ("all", "debug", "sections")


class SlimOptions(Record):
    """Everything ``slim`` takes besides the input and output paths; see ``slim`` for each field.

    ``checked()`` (which ``slim_with`` applies) stores sequences as tuples, sets ``upx`` whenever
    ``upx_method`` is, and raises BinslimError for a bad combination. A NamedTuple rather than a dataclass:
    ``dataclasses`` alone would cost a plain strip more start-up time than the strip itself takes.
    """

    level: str = "all"
    keep_sections: Sequence[str] = ()
    remove_sections: Sequence[str] = ()
    keep_debug: str | None = None
    force: bool = False
    upx: bool = False
    upx_method: str | None = None
    upx_level: int | None = None
    upx_args: str = ""
    upx_timeout: float = 600.0
    upx_force: bool = False
    upx_required: bool = False
    max_startup_ms: float | None = None
    verify: bool = True
    verify_args: Sequence[str] = ("--version",)
    verify_cmd: str | None = None
    verify_timeout: float = 10.0
    verify_runs: int = 9
    verify_env: Mapping[str, str] | None = None
    preserve_dates: bool = False
    keep_hard_links: bool = True
    measure_startup: bool = True
    dry_run: bool = False
    runner: Runner | None = None  # None: binslim.runner.run, imported only when a stage runs a program

    def checked(self) -> SlimOptions:
        """These options, validated and normalised."""
        if self.upx_method is not None and self.upx_method not in UPX_METHODS:
            raise BinslimError(
                f"unknown UPX method {self.upx_method!r} (choose from {', '.join(UPX_METHODS)})"
            )
        if self.upx_method == "auto" and self.max_startup_ms is None:
            raise UsageError(
                "--upx-method auto needs --max-startup-ms: it keeps the smallest method within that startup"
                " budget"
            )
        if not self.verify and (self.upx_method == "auto" or self.max_startup_ms is not None):
            what = "--upx-method auto" if self.upx_method == "auto" else "--max-startup-ms"
            raise UsageError(
                f"{what} needs the startup measured by running the binary, and --no-verify never runs it:"
                " drop one of them"
            )
        if self.max_startup_ms is not None and self.verify_runs < 2:
            raise UsageError(
                "--max-startup-ms needs --verify-runs 2 or more: a budget is judged by the upper end of the"
                " added startup's 95% interval, which one timed pair cannot give"
            )
        return self._replace(
            keep_sections=tuple(self.keep_sections),
            remove_sections=tuple(self.remove_sections),
            verify_args=tuple(self.verify_args),
            keep_debug=os.fspath(self.keep_debug) if self.keep_debug is not None else None,
            upx=self.upx or self.upx_method is not None,
        )

    @property
    def program_runner(self) -> Runner:
        if self.runner is not None:
            return self.runner
        from .runner import run

        return run

    @classmethod
    def from_kwargs(cls, options: Mapping[str, Any]) -> SlimOptions:
        """From ``slim``'s keyword arguments; an unknown name is a TypeError, as a call would make it."""
        unknown = set(options) - set(cls._fields)
        if unknown:
            raise TypeError(f"unknown slim option(s): {', '.join(sorted(unknown))}")
        return cls(**options).checked()
