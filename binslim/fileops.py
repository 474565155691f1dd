"""Safe writes: a temporary file beside the target, metadata carried over, then one atomic rename."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import time
from collections.abc import Iterator

from .elf.copy import copy_range
from .errors import BinslimError, NotELFError, file_error

CAPABILITY_XATTR = "security.capability"
TEMP_PREFIX = ".binslim-"
LOCK_NAME = ".lock"


def io_error(path: str, action: str, exc: OSError) -> BinslimError:
    """``PATH: cannot ACTION: reason``, the reason in words for the errors a write meets."""
    reason = {
        errno.ENOSPC: "no space left on device",
        errno.EROFS: "read-only file system",
        errno.EACCES: "permission denied",
        errno.EPERM: "permission denied",
        errno.ENOENT: "no such file or directory",
        errno.EISDIR: "is a directory",
        errno.ENOTDIR: "a path component is not a directory",
        errno.ETXTBSY: "it is running (text file busy)",
        errno.ENXIO: "no process reads from this FIFO",
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
    # A temporary file this process holds is changed through its descriptor: no path lookup through /proc.
    where: int | str = _held.get(dest, dest)
    if os.geteuid() == 0:
        current = os.stat(where)
        if (current.st_uid, current.st_gid) != (source_stat.st_uid, source_stat.st_gid):
            # chown drops set-id bits and capabilities, so it comes first.
            with contextlib.suppress(OSError):
                os.chown(where, source_stat.st_uid, source_stat.st_gid)
    os.chmod(where, stat.S_IMODE(source_stat.st_mode))
    if capability is not None:
        os.setxattr(where, CAPABILITY_XATTR, capability)
    if preserve_dates:
        os.utime(where, ns=(source_stat.st_atime_ns, source_stat.st_mtime_ns))


def _temp_name(folder: str) -> str:
    """A fresh name for a temporary file in ``folder`` (48 random bits: callers create it with O_EXCL)."""
    return os.path.join(folder, f"{TEMP_PREFIX}{os.urandom(6).hex()}.tmp")


# Temporary files this process holds: path -> the descriptor that keeps it alive. An unnamed one
# (O_TMPFILE) is reached through /proc/<pid>/fd/N, which child processes can open too; a named one holds
# an flock, so a later run can tell it from a live one after a crash (see sweep_stale).
_held: dict[str, int] = {}
_swept: set[str] = set()
# Named leftovers younger than this are never swept: their owner may not have locked them yet.
STALE_AFTER_SECONDS = 60.0


def temp_path_beside(target: str, *, named: bool = False) -> str:
    """Create an empty private temporary file in the target's folder and return a path to it.

    Unless ``named``, the file has no name (O_TMPFILE): a SIGKILL leaves nothing behind, and ``commit``
    links it into place. Where the file system lacks O_TMPFILE, and for programs that need a real name
    (UPX refuses /proc/self/fd links), it is a named ``.binslim-*.tmp`` file, locked while in use.
    """
    folder = os.path.dirname(os.path.abspath(target))
    if os.path.isdir(target) and not os.path.islink(target):
        raise file_error(target, "is a directory")
    sweep_stale(folder)
    if not named and hasattr(os, "O_TMPFILE"):
        try:
            fd = os.open(folder, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.ENOENT):
                raise io_error(target, "write", exc) from exc
        else:
            path = f"/proc/{os.getpid()}/fd/{fd}"
            _held[path] = fd
            return path
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    while True:
        path = _temp_name(folder)
        try:
            fd = os.open(path, flags, 0o600)
            break
        except FileExistsError:
            continue
        except OSError as exc:
            raise io_error(target, "write", exc) from exc
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    _held[path] = fd
    return path


def is_unnamed(path: str) -> bool:
    return path in _held and path.startswith("/proc/")


def commit(tmp: str, target: str) -> None:
    """Put the finished temporary file ``tmp`` at ``target`` in one rename; raises OSError."""
    if is_unnamed(tmp):
        folder = os.path.dirname(target) or os.curdir
        dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            while True:
                name = os.path.basename(_temp_name(folder))
                try:
                    # linkat(AT_SYMLINK_FOLLOW) through /proc gives the unnamed file a name; the
                    # rename right after makes it the target.
                    os.link(tmp, name, dst_dir_fd=dir_fd, follow_symlinks=True)
                    break
                except FileExistsError:
                    continue
            try:
                os.replace(name, target, src_dir_fd=dir_fd)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(name, dir_fd=dir_fd)
                raise
        finally:
            os.close(dir_fd)
    else:
        os.replace(tmp, target)
    _release(tmp)


def discard(tmp: str) -> None:
    """Remove a temporary file made by temp_path_beside (or any file), if it is still there."""
    if not tmp.startswith("/proc/"):  # an unnamed one (O_TMPFILE) goes with its last descriptor
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    _release(tmp)


def _release(tmp: str) -> None:
    fd = _held.pop(tmp, None)
    if fd is not None:
        os.close(fd)


def sweep_stale(folder: str, prefix: str = TEMP_PREFIX) -> None:
    """Remove what a killed binslim left in ``folder``: with the ``.binslim-`` prefix, temporary files and
    folders; with another prefix (scratch folders in the shared temporary folder), folders only. Only what no
    live process holds locked and is older than a minute goes. Once per folder, prefix and run."""
    key = os.path.join(folder, prefix)
    if key in _swept:
        return
    _swept.add(key)
    try:
        entries = [e for e in os.scandir(folder) if e.name.startswith(prefix)]
    except OSError:
        return
    for entry in entries:
        is_dir = entry.is_dir(follow_symlinks=False)
        if is_dir or prefix == TEMP_PREFIX:
            _remove_if_stale(entry.path, is_dir=is_dir)


def _remove_if_stale(path: str, *, is_dir: bool) -> None:
    lock_path = os.path.join(path, LOCK_NAME) if is_dir else path
    try:
        if time.time() - os.lstat(path).st_mtime < STALE_AFTER_SECONDS:
            return
        fd = os.open(lock_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return  # its owner is alive
        if is_dir:
            import shutil

            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.unlink(path)
    finally:
        os.close(fd)


@contextlib.contextmanager
def scratch_dir(prefix: str, folder: str | None = None) -> Iterator[str]:
    """A private folder (``folder``, by default the system's temporary folder), removed at the end. It is
    locked while in use, so stale ones a SIGKILL left behind are removed by the next run (sweep_stale)."""
    import shutil
    import tempfile

    parent = folder if folder is not None else tempfile.gettempdir()
    if not prefix.startswith(TEMP_PREFIX):
        sweep_stale(parent, prefix)
    path = tempfile.mkdtemp(prefix=prefix, dir=parent)
    try:
        fd = os.open(os.path.join(path, LOCK_NAME), os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        raise
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        os.close(fd)


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
        discard(tmp)
        raise


def install(
    tmp: str, target: str, *, like: str, preserve_dates: bool = False, keep_hard_links: bool = False
) -> None:
    """Move the finished ``tmp`` over ``target`` in one rename, carrying ``like``'s metadata.

    With ``keep_hard_links``, a ``target`` that is ``like`` itself (an in-place rewrite) and has several
    names gets the new bytes written into its own inode instead, so every name sees them (see
    ``_write_into``); that one case is not atomic. A ``target`` that is a character device or a FIFO is
    written through, as GNU strip does (``-o /dev/stdout``); see ``check_output``.
    """
    try:
        if writes_to_stdout(target):
            _write_through(tmp, target, fd=1)
            return
        if output_kind(target) in WRITTEN_THROUGH:
            _write_through(tmp, target)
            return
        source_stat = os.stat(like)
        if keep_hard_links and source_stat.st_nlink > 1 and _same_inode(target, source_stat):
            _write_into(tmp, target, source_stat, _capability(like), preserve_dates=preserve_dates)
            return
        copy_metadata(source_stat, like, tmp, preserve_dates=preserve_dates)
        commit(tmp, target)
    except OSError as exc:
        raise io_error(target, "write", exc) from exc


# What an existing -o target may be besides a regular file (or a link to one).
WRITTEN_THROUGH = ("character device", "FIFO")


def written_through(path: str) -> bool:
    """Whether ``install`` copies into ``path`` (standard output, an existing FIFO or character device)
    instead of renaming a file onto it: that write is the one that can still fail when installing."""
    return writes_to_stdout(path) or output_kind(path) in WRITTEN_THROUGH


def output_kind(path: str) -> str | None:
    """``None`` for a missing path, a regular file or a symlink (replaced as a file), else what it is."""
    try:
        mode = os.lstat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None  # nothing there (writing it then fails with the reason, naming the output)
    if stat.S_ISREG(mode) or stat.S_ISLNK(mode):
        return None
    return _kind_name(mode)


def _kind_name(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "directory"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
        (stat.S_ISFIFO, "FIFO"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISREG, "regular file"),
    ):
        if test(mode):
            return name
    return "special file"


def check_output(path: str) -> None:
    """Refuse an existing ``-o`` target that binslim must not replace: a directory, block device or socket.
    A character device or FIFO is written through at the end (``-o /dev/stdout`` works, as with GNU strip);
    nothing is ever put in place of a device node."""
    kind = output_kind(path)
    if kind is not None and kind not in WRITTEN_THROUGH:
        raise file_error(
            path, f"is a {kind}; the output must be a regular file, a character device or a FIFO"
        )


def check_input(path: str) -> None:
    """Fail at once for an input that is not a regular file (a FIFO would block the first read)."""
    try:
        st = os.stat(path)
    except FileNotFoundError as exc:
        raise file_error(path, "no such file") from exc
    except OSError as exc:
        raise file_error(path, f"cannot read: {exc.strerror or exc}") from exc
    if stat.S_ISDIR(st.st_mode):
        raise file_error(path, "is a directory, not an ELF file (use -r for trees)", NotELFError)
    if not stat.S_ISREG(st.st_mode):
        raise file_error(path, f"is a {_kind_name(st.st_mode)}, not a regular file", NotELFError)


def writes_to_stdout(path: str) -> bool:
    """Whether ``path`` is this process's standard output (``-o /dev/stdout``, ``-o /proc/self/fd/1``)."""
    try:
        return os.path.samestat(os.stat(path), os.fstat(1))
    except OSError:
        return False


def in_place_target(path: str) -> str:
    """Where an in-place rewrite of ``path`` goes: a symlink's final target, so the link stays a link
    (as GNU strip does)."""
    return os.path.realpath(path) if os.path.islink(path) else path


def resolve_output(path: str) -> str:
    """Where ``-o PATH`` writes: a symlink's final target (the link is never replaced by a file), except
    this process's standard output, which is written as it is. A link to a descriptor this process has not
    open (``-o /dev/stdout`` with stdout closed) is refused under the name given."""
    if writes_to_stdout(path) or not os.path.islink(path):
        return path
    target = os.path.realpath(path)
    folder, name = os.path.split(target)
    if folder in (f"/proc/{os.getpid()}/fd", "/proc/self/fd") and not os.path.exists(target):
        raise file_error(path, f"cannot write: file descriptor {name} is not open")
    return target


def _write_through(tmp: str, target: str, *, fd: int | None = None) -> None:
    """Copy ``tmp`` into the existing device or FIFO ``target``, or into descriptor ``fd``. A FIFO without a
    reader fails at once instead of blocking."""
    own = fd is None
    if fd is None:
        fd = os.open(target, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        os.set_blocking(fd, True)
        with open(tmp, "rb") as source:
            while chunk := source.read(1 << 20):
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view) :]
    finally:
        if own:
            os.close(fd)
    discard(tmp)


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
    discard(tmp)


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
            raise io_error(target, "link", exc) from exc
    try:
        os.replace(link, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(link)
        raise io_error(target, "write", exc) from exc


@contextlib.contextmanager
def open_new(path: str, *, name: str | None = None) -> Iterator[int]:
    """Open ``path`` for writing, emptied, and close it without fsync; I/O errors name ``name`` (the target a
    temporary file stands for) or else the file.

    A file that is already empty is not truncated: on ext4 a truncation to zero makes the close flush the
    new data to disk (auto_da_alloc), which costs more than the whole strip of a small program. For an
    unnamed temporary file of this process the descriptor that holds it is duplicated instead of reopening
    it through /proc.
    """
    try:
        held = _held.get(path)
        if held is not None:
            fd = os.dup(held)
        else:
            fd = os.open(path, os.O_RDWR | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise io_error(name or path, "write", exc) from exc
    try:
        if os.fstat(fd).st_size:
            os.ftruncate(fd, 0)
        yield fd
    except OSError as exc:
        raise io_error(name or path, "write", exc) from exc
    finally:
        os.close(fd)
