"""The one error hierarchy. Every failure binslim reports is a BinslimError."""

from __future__ import annotations

from collections.abc import Sequence


def printable(text: str) -> str:
    """``text`` with what a terminal would act on (ESC, newlines) escaped: section names and paths come from
    the input."""
    if text.isprintable():  # the usual case, checked in C: no per-character loop
        return text
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


def byte_count(size: int) -> str:
    """``1 byte``, ``4,096 bytes``."""
    return "1 byte" if size == 1 else f"{size:,} bytes"


class BinslimError(Exception):
    """Base class. ``str(err)`` is a one-line message fit for ``error: ...``."""

    exit_code = 1

    def __str__(self) -> str:
        return printable(super().__str__())


class UsageError(BinslimError):
    """Options that cannot go together (e.g. --no-verify with a startup budget): exit code 2, like the
    command line's own usage errors."""

    exit_code = 2


class NotELFError(BinslimError):
    """The input is not an ELF file at all (text, script, empty, directory...)."""


class MalformedELFError(BinslimError):
    """The input claims to be ELF but its headers cannot be trusted."""


class UnsupportedError(BinslimError):
    """A valid request that binslim refuses on purpose (e.g. removing a loaded section)."""


class ToolNotFoundError(BinslimError):
    """An external program is missing; the message says how to get it."""


class ToolFailedError(BinslimError):
    """An external program failed or timed out."""

    def __init__(
        self,
        message: str,
        *,
        argv: Sequence[str] = (),
        returncode: int | None = None,
        stderr_tail: str = "",
        timed_out: bool = False,
    ) -> None:
        super().__init__(message)
        self.argv = tuple(argv)
        self.returncode = returncode
        self.stderr_tail = stderr_tail
        self.timed_out = timed_out


class VerificationError(BinslimError):
    """The slimmed binary does not behave like the original, or the original itself varies. Nothing was
    installed. ``verify`` is the verification's result (a ``VerifyResult``) when runs were compared."""

    exit_code = 3

    def __init__(self, message: str, *, verify: object | None = None) -> None:
        super().__init__(message)
        self.verify = verify


def file_error(path: object, problem: str, cls: type[BinslimError] = BinslimError) -> BinslimError:
    """Build an error whose message names the file first, as the CLI prints it."""
    return cls(f"{path}: {problem}")
