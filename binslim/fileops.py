"""Safe writes: a temporary file beside the target, metadata carried over, then one atomic rename."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator

from .elf.copy import copy_range
from .errors import BinslimError, file_error

CAPABILITY_XATTR = "security.capability"
TEMP_PREFIX = ".binslim-"


def _io_error(path: str, action: str, exc: OSError) -> BinslimError:
    reason = {
        errno.ENOSPC: "no space left on device",
        errno.EROFS: "read-only file system",
        errno.EACCES: "permission denied",
        errno.EPERM: "permission denied",
        errno.ENOENT: "no such file or directory",
        errno.EISDIR: "is a directory",
        errno.ENOTDIR: "a path component is not a directory",
        errno.ETXTBSY: "it is running (text file busy)",
    }.get(exc.errno or 0, exc.strerror or str(exc))
    return file_error(path, f"cannot {action}: {reason}")


def copy_metadata(source_stat: os.stat_result, source: str, dest: str, *, preserve_dates: bool) -> None:
    """Give ``dest`` the mode, owner (as root), file capabilities and optionally times of ``source``."""
    _apply_metadata(source_stat, _capability(source), dest, preserve_dates=preserve_dates)


def _capability(path: str) -> bytes | None:
    try:
        return os.getxattr(path, CAPABILITY_XATTR)
    except OSError:
        return None


def _apply_metadata(
    source_stat: os.stat_result, capability: bytes | None, dest: str, *, preserve_dates: bool
) -> None:
    if os.geteuid() == 0:
        # chown drops set-id bits and capabilities, so it comes first.
        with contextlib.suppress(OSError):
            os.chown(dest, source_stat.st_uid, source_stat.st_gid)
    os.chmod(dest, stat.S_IMODE(source_stat.st_mode))
    if capability is not None:
        os.setxattr(dest, CAPABILITY_XATTR, capability)
    if preserve_dates:
        os.utime(dest, ns=(source_stat.st_atime_ns, source_stat.st_mtime_ns))


def _temp_name(folder: str) -> str:
    """A fresh name for a temporary file in ``folder`` (48 random bits: callers create it with O_EXCL)."""
    return os.path.join(folder, f"{TEMP_PREFIX}{os.urandom(6).hex()}.tmp")


def temp_path_beside(target: str) -> str:
    """Create an empty private temporary file in the target's folder and return its path."""
    folder = os.path.dirname(os.path.abspath(target))
    if os.path.isdir(target) and not os.path.islink(target):
        raise file_error(target, "is a directory")
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    while True:
        path = _temp_name(folder)
        try:
            os.close(os.open(path, flags, 0o600))
            return path
        except FileExistsError:
            continue
        except OSError as exc:
            raise _io_error(target, "write", exc) from exc


@contextlib.contextmanager
def atomic_target(target: str, *, like: str, preserve_dates: bool = False) -> Iterator[str]:
    """Yield a temporary path; when the block succeeds it replaces ``target`` with ``like``'s metadata.

    On any exception (including KeyboardInterrupt) the temporary file is removed and ``target`` is untouched.
    """
    tmp = temp_path_beside(target)
    try:
        yield tmp
        install(tmp, target, like=like, preserve_dates=preserve_dates)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def install(
    tmp: str, target: str, *, like: str, preserve_dates: bool = False, keep_hard_links: bool = False
) -> None:
    """Move the finished ``tmp`` over ``target`` in one rename, carrying ``like``'s metadata.

    With ``keep_hard_links``, a ``target`` that is ``like`` itself (an in-place rewrite) and has several
    names gets the new bytes written into its own inode instead, so every name sees them (see
    ``_write_into``); that one case is not atomic.
    """
    try:
        source_stat = os.stat(like)
        if keep_hard_links and source_stat.st_nlink > 1 and _same_inode(target, source_stat):
            _write_into(tmp, target, source_stat, _capability(like), preserve_dates=preserve_dates)
            return
        copy_metadata(source_stat, like, tmp, preserve_dates=preserve_dates)
        os.replace(tmp, target)
    except OSError as exc:
        raise _io_error(target, "write", exc) from exc


def _same_inode(path: str, other: os.stat_result) -> bool:
    try:
        return os.path.samestat(os.stat(path), other)
    except FileNotFoundError:
        return False


def _write_into(
    tmp: str, target: str, target_stat: os.stat_result, capability: bytes | None, *, preserve_dates: bool
) -> None:
    """Copy ``tmp`` over the bytes of ``target``'s inode, then remove ``tmp``.

    Not atomic: a crash while copying leaves ``target`` partly written. A running program cannot be
    rewritten this way (ETXTBSY) and stays as it was.
    """
    size = os.path.getsize(tmp)
    with open(tmp, "rb") as source, open(target, "r+b") as dest:
        copy_range(source.fileno(), dest.fileno(), 0, 0, size)
        os.ftruncate(dest.fileno(), size)
    # Writing clears file capabilities (and set-id bits when not root): put them back.
    _apply_metadata(target_stat, capability, target, preserve_dates=preserve_dates)
    os.unlink(tmp)


def replace_with_link(source: str, target: str) -> None:
    """Make ``target`` one more name of ``source``'s inode, in one rename: ``target`` is never missing."""
    folder = os.path.dirname(os.path.abspath(target))
    while True:
        link = _temp_name(folder)
        try:
            os.link(source, link)
            break
        except FileExistsError:
            continue
        except OSError as exc:
            raise _io_error(target, "link", exc) from exc
    try:
        os.replace(link, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(link)
        raise _io_error(target, "write", exc) from exc


@contextlib.contextmanager
def open_new(path: str, *, name: str | None = None) -> Iterator[int]:
    """Open ``path`` for writing (truncating) and fsync-free close; I/O errors name ``name`` (the target a
    temporary file stands for) or else the file."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise _io_error(name or path, "write", exc) from exc
    try:
        yield fd
    except OSError as exc:
        raise _io_error(name or path, "write", exc) from exc
    finally:
        os.close(fd)
