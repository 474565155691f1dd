"""The one place that starts external programs.

Every call takes an argument list (never a shell string) and a timeout. The child runs in its own process
group so that a timeout kills it and everything it spawned. Captured output is capped so a binary that
floods stdout cannot exhaust our memory. Peak RSS comes from ``os.wait4``.

``ru_maxrss`` of a child we start directly is useless for small programs: at ``execve`` Linux records the
high-water mark of the old address space, which for a child of this process (fork or vfork alike) is our
own RSS. ``run(..., measure_rss=True)`` therefore has the program forked by a freshly started ``dash``,
whose image is about 1 MiB, and reaps it itself as its child subreaper; see ``_run_measured``.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import resource
import selectors
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable

from .errors import ToolFailedError, UnsupportedError

DEFAULT_OUTPUT_LIMIT = 1 << 20  # bytes kept per stream; the rest is read and dropped

_PR_SET_CHILD_SUBREAPER = 36
_PR_GET_CHILD_SUBREAPER = 37
_LAUNCHER_NAME = "binslim-launch"  # $0 of the launcher shell; prefixes its own error messages
_LEFTOVER_GRACE = 1.0  # seconds to wait for killed leftovers of a group to die and be reaped


@dataclass(frozen=True)
class Completed:
    argv: tuple[str, ...]
    returncode: int | None  # None when killed at the timeout; -N when killed by signal N
    stdout: bytes
    stderr: bytes
    seconds: float
    timed_out: bool
    peak_rss_kib: int
    stdout_truncated: bool = False
    stderr_truncated: bool = False

    def stderr_tail(self, lines: int = 5) -> str:
        text = self.stderr.decode("utf-8", "replace").strip().splitlines()
        return " | ".join(text[-lines:])


Runner = Callable[..., Completed]


def run(
    argv: Sequence[str],
    *,
    timeout: float,
    cwd: str | None = None,
    env: Mapping[str, str] | None = None,
    output_limit: int = DEFAULT_OUTPUT_LIMIT,
    check: bool = False,
    measure_rss: bool = False,
) -> Completed:
    """Run ``argv`` with stdin on /dev/null; return what it did. Raises ToolFailedError only when it cannot
    start or, with ``check=True``, when it exits non-zero or times out.

    ``measure_rss=True`` makes ``peak_rss_kib`` the program's own peak (see the module docstring). The
    price: ``seconds`` then includes starting dash and the hand-over (about 1 ms), a bare ``argv[0]`` is
    resolved on PATH and passed as a path, and the program starts with SIGINT and SIGQUIT ignored (dash
    does that to background jobs). Use it for memory figures, and plain runs for behaviour and wall time.
    Raises UnsupportedError where it cannot work (no dash, no child subreaper).
    """
    argv = tuple(str(a) for a in argv)
    if not argv:
        raise ValueError("run() needs a program to run")
    with _child_subreaper(required=measure_rss):
        if measure_rss:
            result = _run_measured(argv, timeout=timeout, cwd=cwd, env=env, output_limit=output_limit)
        else:
            result = _run_direct(argv, timeout=timeout, cwd=cwd, env=env, output_limit=output_limit)
    if check and (result.timed_out or result.returncode != 0):
        what = f"timed out after {timeout:g} s" if result.timed_out else f"exited with {result.returncode}"
        tail = result.stderr_tail()
        raise ToolFailedError(
            f"{os.path.basename(argv[0])} {what}" + (f": {tail}" if tail else ""),
            argv=argv,
            returncode=result.returncode,
            stderr_tail=tail,
            timed_out=result.timed_out,
        )
    return result


# --- plain runs -------------------------------------------------------------------------------------------


def _run_direct(
    argv: tuple[str, ...],
    *,
    timeout: float,
    cwd: str | None,
    env: Mapping[str, str] | None,
    output_limit: int,
) -> Completed:
    started = time.perf_counter()
    proc = _spawn(argv, argv, stdin=subprocess.DEVNULL, cwd=cwd, env=env)
    watch = _Watch(proc, output_limit)
    pid = proc.pid
    reaped = False
    try:
        watch.follow(pid)
        timed_out, ended = watch.wait(started + timeout)
        # The group id stays reserved while ``pid`` is an unreaped zombie, so killing it first cannot hit
        # an unrelated group that reused the number.
        _kill_group(pid)
        status, rusage = _reap(pid)
        reaped = True
        proc.returncode = os.waitstatus_to_exitcode(status)
        _reap_group(pid)
    finally:
        if not reaped:
            _abandon(proc, [pid])
        watch.close()
    return watch.completed(
        argv,
        returncode=None if timed_out else os.waitstatus_to_exitcode(status),
        seconds=ended - started,
        timed_out=timed_out,
        peak_rss_kib=int(rusage.ru_maxrss),
    )


# --- runs that measure the program's own peak RSS ---------------------------------------------------------

# dash forks the program from its own small image, so the high-water mark recorded at the program's execve
# is dash's (about 1 MiB), not ours. The fork reports its pid on fd 3 (a socket of ours) and blocks reading
# the same socket; dash exits; we reap dash, which makes the fork our child (we are a child subreaper), and
# only then let it exec the program. So dash can never reap the program itself (it does, if the program
# exits first), and os.wait4 gives the program's own status and rusage. Other ways fail: vfork shares our
# address space, exec'ing an intermediate keeps the mark in the signal struct it inherits, and a shell that
# waits for the program folds our mark back in through RUSAGE_CHILDREN.
_LAUNCH_SCRIPT = 'exec 3<&0 0</dev/null; { read _ <&3 && exec "$@" 3<&-; } & echo $! >&3'


def _run_measured(
    argv: tuple[str, ...],
    *,
    timeout: float,
    cwd: str | None,
    env: Mapping[str, str] | None,
    output_limit: int,
) -> Completed:
    program = _resolve_program(argv[0], cwd=cwd, env=env)
    script = _LAUNCH_SCRIPT if env is None or "PWD" in env else "unset PWD; " + _LAUNCH_SCRIPT
    launcher = (_dash(), "-c", script, _LAUNCHER_NAME, program, *argv[1:])
    ours, theirs = socket.socketpair()
    started = time.perf_counter()
    try:
        proc = _spawn(launcher, argv, stdin=theirs.fileno(), cwd=cwd, env=env)
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
    shell_pid = proc.pid
    watch = _Watch(proc, output_limit, control=ours.detach())
    program_pid: int | None = None
    pending = [shell_pid]  # started by us and not yet reaped
    try:
        deadline = started + timeout
        report = watch.read_pid_report(deadline)
        if report is not None:
            # dash exits right after reporting; once it is reaped, the waiting fork is our child.
            _, shell_status, _ = os.wait4(shell_pid, 0)
            pending.remove(shell_pid)
            proc.returncode = os.waitstatus_to_exitcode(shell_status)
            if not report.strip().isdigit():  # dash could not even fork
                watch.release()
                watch.drain(time.perf_counter() + 1.0)
                _reap_group(shell_pid)
                tail = watch.completed(argv, None, 0.0, False, 0).stderr_tail()
                raise ToolFailedError(
                    f"cannot run {argv[0]}: {_LAUNCHER_NAME} exited with {proc.returncode}: {tail}",
                    argv=argv,
                    returncode=proc.returncode,
                    stderr_tail=tail,
                )
            program_pid = int(report)
            pending.append(program_pid)
            watch.follow(program_pid)
            watch.release()
            timed_out, ended = watch.wait(deadline)
        else:
            timed_out, ended = True, time.perf_counter()
        _kill_group(shell_pid)  # reserved while the program is unreaped; see _run_direct
        if timed_out and program_pid is not None:
            _kill(program_pid)  # not a group leader, so it may have left the group
        returncode: int | None = None
        peak_rss_kib = 0
        if shell_pid in pending:
            os.wait4(shell_pid, 0)
            pending.remove(shell_pid)
        if program_pid is not None:
            status, rusage = _reap(program_pid)
            pending.remove(program_pid)
            returncode = os.waitstatus_to_exitcode(status)
            peak_rss_kib = int(rusage.ru_maxrss)
        _reap_group(shell_pid)
    finally:
        if pending:
            _abandon(proc, pending, group=shell_pid)
        watch.close()
    result = watch.completed(
        argv,
        returncode=None if timed_out else returncode,
        seconds=ended - started,
        timed_out=timed_out,
        peak_rss_kib=peak_rss_kib,
    )
    # The exec itself failed in dash's child (e.g. "Exec format error"): report it the way Popen would.
    prefix = f"{_LAUNCHER_NAME}: ".encode()
    if result.returncode in (126, 127) and result.stderr.startswith(prefix):
        message = result.stderr.decode("utf-8", "replace").strip().splitlines()[0].split(": ")[-1]
        raise ToolFailedError(
            f"cannot run {argv[0]}: {message}", argv=argv, returncode=result.returncode, stderr_tail=message
        )
    return result


def _dash() -> str:
    for candidate in ("/bin/dash", "/usr/bin/dash"):
        if os.access(candidate, os.X_OK):
            return candidate
    raise UnsupportedError("measuring peak RSS needs dash: install Debian's dash package")


def _resolve_program(name: str, *, cwd: str | None, env: Mapping[str, str] | None) -> str:
    """Find ``name`` the way Popen would and fail the way Popen would. dash would otherwise prefer its own
    builtins (``true``, ``echo``...) and run a file without a ``#!`` line as a shell script."""
    if "/" in name:
        path = name if os.path.isabs(name) or cwd is None else os.path.join(cwd, name)
        program = name
    else:
        search = env.get("PATH", os.defpath) if env is not None else None
        found = shutil.which(name, path=search)
        if found is None:
            raise ToolFailedError(f"cannot run {name}: No such file or directory", argv=(name,))
        path = program = found if os.path.isabs(found) else os.path.abspath(found)
    try:
        with open(path, "rb") as handle:
            magic = handle.read(4)
    except OSError as exc:
        raise ToolFailedError(f"cannot run {name}: {exc.strerror or exc}", argv=(name,)) from exc
    if not os.access(path, os.X_OK) or os.path.isdir(path):
        raise ToolFailedError(f"cannot run {name}: Permission denied", argv=(name,))
    if magic != b"\x7fELF" and not magic.startswith(b"#!"):
        raise ToolFailedError(f"cannot run {name}: Exec format error", argv=(name,))
    return program


_subreaper_lock = threading.Lock()
_subreaper_users = 0
_subreaper_state = "off"  # "ours" (we set it), "theirs" (already set), "unavailable" (prctl refused)


@contextmanager
def _child_subreaper(*, required: bool) -> Iterator[None]:
    """Be a child subreaper while any run is in flight: measured runs need it to reap the program, and
    every run then reaps what its killed group leaves behind rather than leave zombies to init. The flag
    is process-wide (orphans of any child of ours become ours), so it is held no longer than needed, and
    left alone when someone else had set it. Plain runs go on without it where prctl is refused."""
    global _subreaper_users, _subreaper_state
    with _subreaper_lock:
        if _subreaper_users == 0:
            try:
                if _prctl_get_subreaper():
                    _subreaper_state = "theirs"
                else:
                    _prctl(_PR_SET_CHILD_SUBREAPER, 1)
                    _subreaper_state = "ours"
            except UnsupportedError:
                _subreaper_state = "unavailable"
        if required and _subreaper_state == "unavailable":
            raise UnsupportedError("measuring peak RSS needs prctl(PR_SET_CHILD_SUBREAPER) (Linux 3.4+)")
        _subreaper_users += 1
    try:
        yield
    finally:
        with _subreaper_lock:
            _subreaper_users -= 1
            if _subreaper_users == 0:
                if _subreaper_state == "ours":
                    _prctl(_PR_SET_CHILD_SUBREAPER, 0)
                _subreaper_state = "off"


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _prctl(option: int, value: int) -> None:
    libc = _libc()
    if libc.prctl(option, ctypes.c_ulong(value), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0)):
        err = ctypes.get_errno()
        raise UnsupportedError(f"prctl({option}) failed: {os.strerror(err)}")


def _prctl_get_subreaper() -> bool:
    flag = ctypes.c_int(0)
    libc = _libc()
    if libc.prctl(_PR_GET_CHILD_SUBREAPER, ctypes.byref(flag), 0, 0, 0):
        err = ctypes.get_errno()
        raise UnsupportedError(f"prctl(PR_GET_CHILD_SUBREAPER) failed: {os.strerror(err)}")
    return bool(flag.value)


# --- shared machinery -------------------------------------------------------------------------------------


def _spawn(
    launch: Sequence[str],
    argv: tuple[str, ...],
    *,
    stdin: int,
    cwd: str | None,
    env: Mapping[str, str] | None,
) -> subprocess.Popen[bytes]:
    try:
        return subprocess.Popen(
            launch,
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env=None if env is None else dict(env),
            start_new_session=True,
            close_fds=True,
        )
    except OSError as exc:
        raise ToolFailedError(f"cannot run {argv[0]}: {exc.strerror or exc}", argv=argv) from exc


class _Watch:
    """Reads a child's capped output and notices when the followed process exits, without reaping it."""

    def __init__(self, proc: subprocess.Popen[bytes], output_limit: int, control: int | None = None) -> None:
        assert proc.stdout is not None and proc.stderr is not None
        self._proc = proc
        self._limit = output_limit
        self._selector = selectors.DefaultSelector()
        self._out_fd = proc.stdout.fileno()
        self._err_fd = proc.stderr.fileno()
        self._kept = {self._out_fd: bytearray(), self._err_fd: bytearray()}
        self._truncated = {self._out_fd: False, self._err_fd: False}
        self._open = {self._out_fd, self._err_fd}
        self._control = control  # measured runs: the launcher's pid report, and our go-ahead
        self._pid_report = bytearray()
        self._followed: int | None = None
        self._pidfd: int | None = None
        self._exited = False
        for fd in self._open:
            self._selector.register(fd, selectors.EVENT_READ)
        if control is not None:
            self._selector.register(control, selectors.EVENT_READ)

    def follow(self, pid: int) -> None:
        """Watch ``pid`` for exit: through a pidfd when the kernel has them, else by polling waitid."""
        self._followed = pid
        if hasattr(os, "pidfd_open"):
            try:
                self._pidfd = os.pidfd_open(pid)
            except OSError:
                self._pidfd = None
            else:
                self._selector.register(self._pidfd, selectors.EVENT_READ)

    def read_pid_report(self, deadline: float) -> bytes | None:
        """The launcher's line on the control socket (empty if it closed it first); None at the deadline."""
        while self._control is not None and not self._pid_report.endswith(b"\n"):
            if not self._step(deadline):
                return None
        return bytes(self._pid_report)

    def release(self) -> None:
        """Let the waiting fork exec the program, and stop listening to it."""
        if self._control is not None:
            with contextlib.suppress(OSError):
                os.write(self._control, b"\n")
            self._selector.unregister(self._control)
            os.close(self._control)
            self._control = None

    def wait(self, deadline: float) -> tuple[bool, float]:
        """Until the output is closed and the followed process has exited: (timed_out, when)."""
        while self._open or not self._has_exited():
            if not self._step(deadline):
                return True, time.perf_counter()
        return False, time.perf_counter()

    def drain(self, deadline: float) -> None:
        while self._open and self._step(deadline):
            pass

    def _has_exited(self) -> bool:
        if not self._exited and self._pidfd is None and self._followed is not None:
            try:
                info = os.waitid(os.P_PID, self._followed, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                info = None  # not our child yet
            self._exited = info is not None
        return self._exited

    def _step(self, deadline: float) -> bool:
        remaining = deadline - time.perf_counter()
        if remaining <= 0:
            return False
        # Without a pidfd, an exit after the output closed is only seen by polling.
        polling = self._pidfd is None and self._followed is not None and not self._open
        for key, _ in self._selector.select(min(remaining, 0.001 if polling else 0.5)):
            if key.fd == self._pidfd:
                self._exited = True
                self._selector.unregister(key.fd)
                continue
            if key.fd == self._control:
                report = os.read(key.fd, 64)
                self._pid_report += report if report else b"\n"
                if not report:
                    self.release()
                continue
            chunk = os.read(key.fd, 65536)
            if not chunk:
                self._selector.unregister(key.fd)
                self._open.discard(key.fd)
                continue
            kept = self._kept[key.fd]
            room = self._limit - len(kept)
            if room > 0:
                kept += chunk[:room]
            if len(chunk) > room:
                self._truncated[key.fd] = True
        return True

    def completed(
        self,
        argv: tuple[str, ...],
        returncode: int | None,
        seconds: float,
        timed_out: bool,
        peak_rss_kib: int,
    ) -> Completed:
        return Completed(
            argv=argv,
            returncode=returncode,
            stdout=bytes(self._kept[self._out_fd]),
            stderr=bytes(self._kept[self._err_fd]),
            seconds=seconds,
            timed_out=timed_out,
            peak_rss_kib=peak_rss_kib,
            stdout_truncated=self._truncated[self._out_fd],
            stderr_truncated=self._truncated[self._err_fd],
        )

    def close(self) -> None:
        self._selector.close()
        for fd in (self._pidfd, self._control):
            if fd is not None:
                os.close(fd)
        self._pidfd = self._control = None
        assert self._proc.stdout is not None and self._proc.stderr is not None
        self._proc.stdout.close()
        self._proc.stderr.close()
        if self._proc.returncode is None:
            self._proc.returncode = 0  # reaped by us; keep Popen from waiting again


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _reap(pid: int) -> tuple[int, resource.struct_rusage]:
    _, status, rusage = os.wait4(pid, 0)
    return status, rusage


def _reap_group(pgid: int) -> None:
    """Reap the killed leftovers of a group that are (or become, through the subreaper) our children, so
    no zombie or orphan outlives a run. Callers kill the group first, while a member of theirs is still
    unreaped: that keeps the number from naming some other group by then. A process being killed cannot
    fork, so one signal is enough."""
    give_up = time.perf_counter() + _LEFTOVER_GRACE
    while time.perf_counter() < give_up:
        try:
            pid, _ = os.waitpid(-pgid, os.WNOHANG)
        except ChildProcessError:
            pid = -1
        if pid > 0:
            continue
        if pid < 0 and not _group_exists(pgid):
            return
        time.sleep(0.001)  # members are dying, or about to be reparented to us or to init


def _group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # Only zombies left that belong to someone else (init reaps them) do not need us.
    return any(_is_live_member(pid, pgid) for pid in _pids())


def _pids() -> Iterator[int]:
    try:
        names = os.listdir("/proc")
    except OSError:
        return
    for name in names:
        if name.isdigit():
            yield int(name)


def _is_live_member(pid: int, pgid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except OSError:
        return False
    fields = stat[stat.rfind(b")") + 2 :].split()
    state, ppid, group = fields[0], int(fields[1]), int(fields[2])
    return group == pgid and (state != b"Z" or ppid == os.getpid())


def _abandon(proc: subprocess.Popen[bytes], pids: Sequence[int], group: int | None = None) -> None:
    """Clean up after an exception: kill the group, reap what we started."""
    pgid = proc.pid if group is None else group
    _kill_group(pgid)
    for pid in pids:
        _kill(pid)
    for pid in pids:
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
    _reap_group(pgid)
    if proc.returncode is None:
        proc.returncode = -signal.SIGKILL
