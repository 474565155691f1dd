"""The one place that starts external programs, and ends everything they start.

Every call takes an argument list (never a shell string) and a timeout. Captured output is capped so a
binary that floods stdout cannot exhaust our memory. Peak RSS comes from ``os.wait4``.

Containment. While any run is in flight this process is a child subreaper (``PR_SET_CHILD_SUBREAPER``), so
a run's orphans (double forks, ``setsid`` daemons) become our children instead of init's. A run ends when its
main process exits; then every process the run left behind is killed and reaped: its process group, its
session, and the orphans it handed to us. Output is read only until then (plus a short drain), so a
descendant holding stdout open cannot turn a finished run into a timeout. ``run(..., isolate=True)``
(verification) also starts the program as PID 1 of a new PID namespace (``unshare --pid --fork
--kill-child``) where that is allowed: the kernel then kills the whole namespace when the program exits,
whatever its descendants did. Without a namespace, an orphan that left the run's session cannot be told
apart from another child of this process, so every unknown child of ours is ended with the run: a library
caller that runs its own children from other threads during a run should let binslim use a namespace. An
isolated run is also started behind ``setpriv --pdeathsig KILL``, so that when this process is killed
outright (SIGKILL, nothing of ours runs) the kernel kills ``unshare``, and with it the namespace, or,
without a namespace, the program itself.

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
from typing import Any, Callable

from . import children
from .errors import ToolFailedError, UnsupportedError

DEFAULT_OUTPUT_LIMIT = 1 << 20  # bytes kept per stream; the rest is read and dropped

_PR_SET_CHILD_SUBREAPER = 36
_PR_GET_CHILD_SUBREAPER = 37
_LAUNCHER_NAME = "binslim-launch"  # $0 of the launcher shell; prefixes its own error messages
_LEFTOVER_GRACE = 2.0  # seconds to wait for a run's killed leftovers to die and be reaped
_DRAIN_GRACE = 0.5  # seconds to keep reading output after a run ended, for what is still in the pipes
_UNSHARE_ARGS = ("--pid", "--fork", "--kill-child", "--")


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
    isolate: bool = False,
) -> Completed:
    """Run ``argv`` with stdin on /dev/null; return what it did. Raises ToolFailedError only when it cannot
    start or, with ``check=True``, when it exits non-zero or times out. Nothing the run started is left
    alive when this returns (see the module docstring).

    ``isolate=True`` runs the program as PID 1 of its own PID namespace where one can be had (see
    ``pid_namespace_available``): containment then holds even for processes that leave the session, at
    the price of ``unshare``'s own start (about 1 ms) in ``seconds``, ``getpid() == 1``, and PID 1's rule
    that a signal the program sends itself without a handler is ignored.

    ``measure_rss=True`` makes ``peak_rss_kib`` the program's own peak (see the module docstring). The
    price: ``seconds`` then includes starting dash and the hand-over (about 1 ms), a bare ``argv[0]`` is
    resolved on PATH and passed as a path, and the program starts with SIGINT and SIGQUIT ignored (dash
    does that to background jobs). Use it for memory figures, and plain runs for behaviour and wall time.
    Raises UnsupportedError where it cannot work (no dash, no child subreaper).
    """
    argv = tuple(str(a) for a in argv)
    if not argv:
        raise ValueError("run() needs a program to run")
    namespace = _namespace_prefix() if isolate else ()
    prefix = (namespace or _death_guard()) if isolate else ()
    # Without a namespace, an isolated run also ends the unknown children of ours (orphans that left its
    # session); tools binslim runs itself (UPX...) leave none, and other threads' children stay untouched.
    options: dict[str, Any] = {
        "timeout": timeout,
        "cwd": cwd,
        "env": env,
        "output_limit": output_limit,
        "adopt_orphans": isolate and not namespace,
    }
    with _child_subreaper(required=measure_rss):
        result = (_run_measured if measure_rss else _run_direct)(argv, prefix, **options)
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
    prefix: tuple[str, ...],
    *,
    timeout: float,
    cwd: str | None,
    env: Mapping[str, str] | None,
    output_limit: int,
    adopt_orphans: bool,
) -> Completed:
    launch = argv
    if prefix:
        # unshare would report a program it cannot exec in its own words; fail the way Popen does.
        launch = (*prefix, _resolve_program(argv[0], cwd=cwd, env=env), *argv[1:])
    started = time.perf_counter()
    proc = _spawn(launch, argv, stdin=subprocess.DEVNULL, cwd=cwd, env=env)
    pid = proc.pid
    reaped = False
    watch: _Watch | None = None
    try:
        watch = _Watch(proc, output_limit)
        watch.follow(pid)
        timed_out, ended = watch.wait(started + timeout)
        # The session id stays reserved while ``pid`` is an unreaped zombie, so ending the session first
        # cannot hit an unrelated one that reused the number.
        _end_leftovers(pid, main=pid, adopt_orphans=adopt_orphans)
        status, rusage = _reap(pid)
        reaped = True
        proc.returncode = os.waitstatus_to_exitcode(status)
        watch.drain(time.perf_counter() + _DRAIN_GRACE)
    finally:
        if not reaped:
            _abandon(proc, [pid], adopt_orphans=adopt_orphans)
        _close(watch, proc)
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
    prefix: tuple[str, ...],
    *,
    timeout: float,
    cwd: str | None,
    env: Mapping[str, str] | None,
    output_limit: int,
    adopt_orphans: bool,
) -> Completed:
    proc, ours, started = _start_launcher(argv, prefix, cwd=cwd, env=env)
    shell_pid = proc.pid
    program_pid: int | None = None
    pending = [shell_pid]  # started by us and not yet reaped
    watch: _Watch | None = None
    try:
        watch = _Watch(proc, output_limit, control=ours.detach())
        deadline = started + timeout
        report = watch.read_pid_report(deadline)
        if report is not None:
            program_pid = _take_over_program(report, proc, watch, pending, argv, adopt_orphans=adopt_orphans)
            watch.follow(program_pid)
            watch.release()
            timed_out, ended = watch.wait(deadline)
        else:
            timed_out, ended = True, time.perf_counter()
        # dash's session id stays reserved while the program (a member) is unreaped; see _run_direct.
        _end_leftovers(shell_pid, main=program_pid, adopt_orphans=adopt_orphans)
        returncode, peak_rss_kib = _reap_measured(shell_pid, program_pid, pending)
        watch.drain(time.perf_counter() + _DRAIN_GRACE)
    finally:
        if pending:
            _abandon(proc, pending, session=shell_pid, adopt_orphans=adopt_orphans)
        if watch is None:
            ours.close()
        _close(watch, proc)
    result = watch.completed(
        argv,
        returncode=None if timed_out else returncode,
        seconds=ended - started,
        timed_out=timed_out,
        peak_rss_kib=peak_rss_kib,
    )
    _check_exec(result)
    return result


def _start_launcher(
    argv: tuple[str, ...], prefix: tuple[str, ...], *, cwd: str | None, env: Mapping[str, str] | None
) -> tuple[subprocess.Popen[bytes], socket.socket, float]:
    """Start dash on ``_LAUNCH_SCRIPT``: (dash, our end of the control socket, when it started)."""
    program = _resolve_program(argv[0], cwd=cwd, env=env)
    script = _LAUNCH_SCRIPT if env is None or "PWD" in env else "unset PWD; " + _LAUNCH_SCRIPT
    # With a namespace the fork execs unshare, which forks the program: unshare's image is small too, and
    # wait4 on it reports the larger of its own peak and the program's.
    launcher = (_dash(), "-c", script, _LAUNCHER_NAME, *prefix, program, *argv[1:])
    ours, theirs = socket.socketpair()
    started = time.perf_counter()
    try:
        proc = _spawn(launcher, argv, stdin=theirs.fileno(), cwd=cwd, env=env)
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
    return proc, ours, started


def _take_over_program(
    report: bytes,
    proc: subprocess.Popen[bytes],
    watch: _Watch,
    pending: list[int],
    argv: tuple[str, ...],
    *,
    adopt_orphans: bool,
) -> int:
    """Reap dash once it has reported the waiting fork's pid, which makes that fork our child, and return
    the pid. ``pending`` is kept up to date. Raises ToolFailedError when dash could not fork."""
    shell_pid = proc.pid
    program_pid: int | None = None
    if report.strip().isdigit():
        program_pid = int(report)
        children.register(program_pid)  # our child as soon as dash is reaped: not an orphan to end
        pending.append(program_pid)
    # dash exits right after reporting; once it is reaped, the waiting fork is our child.
    _, shell_status, _ = os.wait4(shell_pid, 0)
    pending.remove(shell_pid)
    children.unregister(shell_pid)
    proc.returncode = os.waitstatus_to_exitcode(shell_status)
    if program_pid is None:  # dash could not even fork
        watch.release()
        watch.drain(time.perf_counter() + 1.0)
        _end_leftovers(shell_pid, main=None, adopt_orphans=adopt_orphans)
        tail = watch.completed(argv, None, 0.0, False, 0).stderr_tail()
        raise ToolFailedError(
            f"cannot run {argv[0]}: {_LAUNCHER_NAME} exited with {proc.returncode}: {tail}",
            argv=argv,
            returncode=proc.returncode,
            stderr_tail=tail,
        )
    return program_pid


def _reap_measured(shell_pid: int, program_pid: int | None, pending: list[int]) -> tuple[int | None, int]:
    """Reap dash if that is still to do, then the program: (the program's exit code, its peak RSS in KiB),
    or (None, 0) when it never started. ``pending`` is kept up to date."""
    returncode: int | None = None
    peak_rss_kib = 0
    if shell_pid in pending:
        os.wait4(shell_pid, 0)
        pending.remove(shell_pid)
        children.unregister(shell_pid)
    if program_pid is not None:
        status, rusage = _reap(program_pid)
        pending.remove(program_pid)
        returncode = os.waitstatus_to_exitcode(status)
        peak_rss_kib = int(rusage.ru_maxrss)
    return returncode, peak_rss_kib


def _check_exec(result: Completed) -> None:
    """The exec itself failed in dash's child (e.g. "Exec format error"): report it the way Popen would."""
    prefix_text = f"{_LAUNCHER_NAME}: ".encode()
    if result.returncode in (126, 127) and result.stderr.startswith(prefix_text):
        message = result.stderr.decode("utf-8", "replace").strip().splitlines()[0].split(": ")[-1]
        raise ToolFailedError(
            f"cannot run {result.argv[0]}: {message}",
            argv=result.argv,
            returncode=result.returncode,
            stderr_tail=message,
        )


def pid_namespace_available() -> bool:
    """Whether ``run(..., isolate=True)`` gets its own PID namespace here (root, or a kernel and
    ``unshare`` that allow it); probed once by starting ``true`` in one."""
    return bool(_namespace_prefix())


@functools.cache
def _namespace_prefix() -> tuple[str, ...]:
    """The prefix that starts a program as PID 1 of its own PID namespace, behind _death_guard; () where
    that cannot be had."""
    unshare = shutil.which("unshare")
    if unshare is None or os.environ.get("BINSLIM_NO_PID_NAMESPACE"):
        return ()
    prefix = (*_death_guard(), unshare, *_UNSHARE_ARGS)
    return prefix if _starts_true(prefix) else ()


@functools.cache
def _death_guard() -> tuple[str, ...]:
    """``setpriv --pdeathsig KILL``: binslim killed (SIGKILL: no clean-up of its own runs), the kernel kills
    what it started. In front of ``unshare --kill-child`` that ends the whole namespace; without a namespace,
    it ends the program itself (not what the program forked). () where setpriv lacks the option."""
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return ()
    guard = (setpriv, "--pdeathsig", "KILL")
    return guard if _starts_true(guard) else ()


def _starts_true(prefix: tuple[str, ...]) -> bool:
    """Whether ``prefix`` can start ``true`` here: probed once for each prefix."""
    true = shutil.which("true")
    if true is None:
        return False
    try:
        with _child_subreaper(required=False):
            probe = _run_direct(
                (*prefix, true), (), timeout=10.0, cwd=None, env=None, output_limit=4096, adopt_orphans=False
            )
    except ToolFailedError:
        return False
    return probe.returncode == 0


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
    # Under the lock, so that no run's clean-up takes this child for an orphan before it is registered;
    # with Ctrl-C and SIGTERM held, so that no child is started without its caller knowing it.
    held = _HeldInterrupts()
    with held, children.lock:
        try:
            proc = subprocess.Popen(
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
        children.started.add(proc.pid)
    if held.pending:
        _abandon(proc, [proc.pid], adopt_orphans=False)
        _close(None, proc)
        held.deliver()
    return proc


class _HeldInterrupts:
    """Within the block, Ctrl-C and SIGTERM are noted instead of acted on (in the main thread, the only one
    Python delivers them to); ``deliver`` then acts on them as their handlers would have."""

    _SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.pending: list[int] = []
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _HeldInterrupts:
        if threading.current_thread() is threading.main_thread():
            for signum in self._SIGNALS:
                self._previous[signum] = signal.signal(signum, self._note)
        return self

    def _note(self, signum: int, frame: object) -> None:
        self.pending.append(signum)

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def deliver(self) -> None:
        for signum in self.pending:
            handler = self._previous.get(signum)
            if callable(handler):
                handler(signum, None)  # raises KeyboardInterrupt (or binslim's Terminated)
            elif handler == signal.SIG_DFL:
                os.kill(os.getpid(), signum)


def _close(watch: _Watch | None, proc: subprocess.Popen[bytes]) -> None:
    if watch is not None:
        watch.close()
        return
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()
    if proc.returncode is None:
        proc.returncode = -signal.SIGKILL  # reaped by _abandon; keep Popen from waiting again


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
        """Read output until the followed process has exited: (timed_out, when). Not until the output is
        closed: a descendant may hold it open, and the run's clean-up ends those."""
        while not self._has_exited():
            if not self._step(deadline):
                return True, time.perf_counter()
        return False, time.perf_counter()

    def drain(self, deadline: float) -> None:
        """Read what is left until end of file, or until ``deadline`` if something we could not end (outside
        our reach) still holds the output."""
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
        # Without a pidfd, the exit is only seen by polling.
        polling = self._pidfd is None and self._followed is not None and not self._exited
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


def _reap(pid: int) -> tuple[int, resource.struct_rusage]:
    _, status, rusage = os.wait4(pid, 0)
    children.unregister(pid)
    return status, rusage


# --- ending what a run left behind ------------------------------------------------------------------------

_STATE, _PPID, _PGRP, _SESSION = range(4)  # fields of a _process_table entry


def _process_table() -> dict[int, tuple[bytes, int, int, int]]:
    """pid → (state, ppid, process group, session) of every process, from /proc/PID/stat."""
    table: dict[int, tuple[bytes, int, int, int]] = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return table
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            continue  # gone meanwhile
        fields = stat[stat.rfind(b")") + 2 :].split()
        table[int(name)] = (fields[0], int(fields[1]), int(fields[2]), int(fields[3]))
    return table


def _leftovers(session: int, main: int | None, adopt_orphans: bool) -> tuple[set[int], set[int]]:
    """(live, our zombies) among what the run whose session leader is ``session`` left behind: members of
    its session or group, every descendant of those, and (``adopt_orphans``) the children of ours that no
    run started, which are orphans handed to us as child subreaper. ``main`` is never in the zombies."""
    me = os.getpid()
    with children.lock:  # a child being started now is registered before a later scan sees it
        table = _process_table()
        known = set(children.started)
    roots = {pid for pid, proc in table.items() if session in (proc[_SESSION], proc[_PGRP])}
    if main is not None and main in table:
        roots.add(main)
    if adopt_orphans:
        # Not a child of another run in flight: one it started, or one in its session or group (the fork a
        # measured run's dash hands over is ours before that run has read its pid).
        roots |= {
            pid for pid, (_, ppid, pgrp, sid) in table.items() if ppid == me and not {pid, pgrp, sid} & known
        }
    offspring: dict[int, list[int]] = {}
    for pid, (_, ppid, _, _) in table.items():
        offspring.setdefault(ppid, []).append(pid)
    members: set[int] = set()
    stack = list(roots)
    while stack:
        pid = stack.pop()
        if pid not in members and pid != me:
            members.add(pid)
            stack.extend(offspring.get(pid, ()))
    live = {pid for pid in members if table[pid][_STATE] != b"Z"}
    zombies = {pid for pid in members - live if table[pid][_PPID] == me and pid != main}
    return live, zombies


def _end_leftovers(session: int, main: int | None, *, adopt_orphans: bool) -> None:
    """Kill everything the run left behind (``main`` included, which is left unreaped) and reap what
    becomes ours, until nothing of it is alive. A process being killed cannot fork, so the set only
    shrinks; killed descendants of killed parents come to us as subreaper and are reaped in turn."""
    give_up = time.perf_counter() + _LEFTOVER_GRACE
    while True:
        live, zombies = _leftovers(session, main, adopt_orphans)
        # The main process first: when it is unshare, killed before the program it cannot report the
        # program's death on stderr.
        for pid in sorted(live, key=lambda pid: pid != main):
            _kill(pid)
        for pid in zombies:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
        if main is not None:
            live.discard(main)  # a zombie once killed; the caller reaps it for its status
        if (not live and not zombies) or time.perf_counter() > give_up:
            return
        time.sleep(0.001)  # dying, or about to be handed to us


def _abandon(
    proc: subprocess.Popen[bytes], pids: Sequence[int], *, session: int | None = None, adopt_orphans: bool
) -> None:
    """Clean up after an exception (Ctrl-C, SIGTERM): end the run's leftovers, reap what we started. A
    second Ctrl-C waits until this is done."""
    held = _HeldInterrupts()
    with held:
        leader = proc.pid if session is None else session
        for pid in pids:
            _kill(pid)
        _end_leftovers(leader, main=None, adopt_orphans=adopt_orphans)
        for pid in pids:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
            children.unregister(pid)
        if proc.returncode is None:
            proc.returncode = -signal.SIGKILL
    held.deliver()
