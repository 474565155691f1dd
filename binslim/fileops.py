"""Safe writes: a temporary file beside the target, metadata carried over, then one atomic rename."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from collections.abc import Iterator
from typing import Optional

from .errors import BinslimError, file_error

CAPABILITY_XATTR = "security.capability"
TEMP_PREFIX = ".binslim-"


def _io_error(path: str, action: str, exc: OSError) -> BinslimError:
    reason = {errno.ENOSPC: "no space left on device", errno.EROFS: "read-only file system",
              errno.EACCES: "permission denied", errno.EPERM: "permission denied",
              errno.ENOENT: "no such file or directory", errno.EISDIR: "is a directory",
              errno.ENOTDIR: "a path component is not a directory"}.get(exc.errno or 0, exc.strerror or str(exc))
    return file_error(path, f"cannot {action}: {reason}")


def copy_metadata(source_stat: os.stat_result, source: str, dest: str, *, preserve_dates: bool) -> None:
    """Give ``dest`` the mode, owner (as root), file capabilities and optionally times of ``source``."""
    if os.geteuid() == 0:
        # chown drops set-id bits and capabilities, so it comes first.
        with contextlib.suppress(OSError):
            os.chown(dest, source_stat.st_uid, source_stat.st_gid)
    os.chmod(dest, stat.S_IMODE(source_stat.st_mode))
    try:
        capability: Optional[bytes] = os.getxattr(source, CAPABILITY_XATTR)
    except OSError:
        capability = None
    if capability is not None:
        os.setxattr(dest, CAPABILITY_XATTR, capability)
    if preserve_dates:
        os.utime(dest, ns=(source_stat.st_atime_ns, source_stat.st_mtime_ns))


def temp_path_beside(target: str) -> str:
    """Create an empty private temporary file in the target's folder and return its path."""
    folder = os.path.dirname(os.path.abspath(target))
    if os.path.isdir(target) and not os.path.islink(target):
        raise file_error(target, "is a directory")
    try:
        fd, path = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=".tmp", dir=folder)
    except OSError as exc:
        raise _io_error(target, "write", exc) from exc
    os.close(fd)
    return path


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


def install(tmp: str, target: str, *, like: str, preserve_dates: bool = False) -> None:
    """Move the finished ``tmp`` over ``target`` in one rename, carrying ``like``'s metadata."""
    try:
        source_stat = os.stat(like)
        copy_metadata(source_stat, like, tmp, preserve_dates=preserve_dates)
        os.replace(tmp, target)
    except OSError as exc:
        raise _io_error(target, "write", exc) from exc


@contextlib.contextmanager
def open_new(path: str) -> Iterator[int]:
    """Open ``path`` for writing (truncating) and fsync-free close; I/O errors name the file."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise _io_error(path, "write", exc) from exc
    try:
        yield fd
    except OSError as exc:
        raise _io_error(path, "write", exc) from exc
    finally:
        os.close(fd)
