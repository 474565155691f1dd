"""Move file bytes without holding them in Python memory."""

from __future__ import annotations

import errno
import os

_CHUNK = 1 << 20
# Errors that mean "this kernel/filesystem cannot do it", not "the disk is broken".
_UNSUPPORTED = {
    errno.ENOSYS,
    errno.EXDEV,
    errno.EINVAL,
    errno.EOPNOTSUPP,
    errno.ENOTSUP,
    errno.EBADF,
    errno.EPERM,
}


def copy_range(src_fd: int, dst_fd: int, src_offset: int, dst_offset: int, length: int) -> None:
    """Copy ``length`` bytes at ``src_offset`` to ``dst_offset``.

    copy_file_range first (in-kernel, may reflink), then sendfile, then a chunked pread/pwrite loop.
    """
    done = _copy_file_range(src_fd, dst_fd, src_offset, dst_offset, length)
    if done < length:
        done += _sendfile(src_fd, dst_fd, src_offset + done, dst_offset + done, length - done)
    if done < length:
        _chunked(src_fd, dst_fd, src_offset + done, dst_offset + done, length - done)


def _copy_file_range(src_fd: int, dst_fd: int, src_offset: int, dst_offset: int, length: int) -> int:
    if not hasattr(os, "copy_file_range"):
        return 0
    done = 0
    while done < length:
        try:
            n = os.copy_file_range(src_fd, dst_fd, length - done, src_offset + done, dst_offset + done)
        except OSError as exc:
            if exc.errno in _UNSUPPORTED:
                return done
            raise
        if n == 0:
            return done
        done += n
    return done


def _sendfile(src_fd: int, dst_fd: int, src_offset: int, dst_offset: int, length: int) -> int:
    done = 0
    try:
        os.lseek(dst_fd, dst_offset, os.SEEK_SET)
        while done < length:
            n = os.sendfile(dst_fd, src_fd, src_offset + done, length - done)
            if n == 0:
                break
            done += n
    except OSError as exc:
        if exc.errno in _UNSUPPORTED:
            return done
        raise
    return done


def _chunked(src_fd: int, dst_fd: int, src_offset: int, dst_offset: int, length: int) -> None:
    done = 0
    while done < length:
        chunk = os.pread(src_fd, min(_CHUNK, length - done), src_offset + done)
        if not chunk:
            raise EOFError(f"source ended {length - done} bytes early")
        write_all(dst_fd, chunk, dst_offset + done)
        done += len(chunk)


def write_all(fd: int, data: bytes | bytearray, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n
