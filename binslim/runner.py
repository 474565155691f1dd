"""The one place that starts external programs.

Every call takes an argument list (never a shell string) and a timeout. The child runs in its own process
group so that a timeout kills it and everything it spawned. Captured output is capped so a binary that
floods stdout cannot exhaust our memory. Peak RSS comes from ``os.wait4``.
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Callable, Optional

from .errors import ToolFailedError

DEFAULT_OUTPUT_LIMIT = 1 << 20  # bytes kept per stream; the rest is read and dropped


@dataclass(frozen=True)
class Completed:
    argv: tuple[str, ...]
    returncode: Optional[int]  # None when killed at the timeout
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


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run(
    argv: Sequence[str],
    *,
    timeout: float,
    cwd: Optional[str] = None,
    env: Optional[Mapping[str, str]] = None,
    output_limit: int = DEFAULT_OUTPUT_LIMIT,
    check: bool = False,
) -> Completed:
    """Run ``argv`` with stdin closed; return what it did. Raises ToolFailedError only when it cannot start
    or, with ``check=True``, when it exits non-zero or times out."""
    argv = tuple(str(a) for a in argv)
    started = time.perf_counter()
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env=None if env is None else dict(env),
            start_new_session=True,
            close_fds=True,
        )
    except OSError as exc:
        raise ToolFailedError(f"cannot run {argv[0]}: {exc.strerror or exc}", argv=argv) from exc

    kept: dict[int, bytearray] = {}
    truncated: dict[int, bool] = {}
    timed_out = False
    assert proc.stdout is not None and proc.stderr is not None
    streams = {proc.stdout.fileno(): proc.stdout, proc.stderr.fileno(): proc.stderr}
    deadline = started + timeout
    try:
        with selectors.DefaultSelector() as selector:
            for fd in streams:
                kept[fd] = bytearray()
                truncated[fd] = False
                selector.register(fd, selectors.EVENT_READ)
            while selector.get_map():
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    timed_out = True
                    break
                for key, _ in selector.select(min(remaining, 0.5)):
                    chunk = os.read(key.fd, 65536)
                    if not chunk:
                        selector.unregister(key.fd)
                        continue
                    room = output_limit - len(kept[key.fd])
                    if room > 0:
                        kept[key.fd] += chunk[:room]
                    if len(chunk) > room:
                        truncated[key.fd] = True
        # Output closed; the process may still be running (e.g. it closed its stdout).
        status = None
        rusage = None
        while not timed_out:
            pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() >= deadline:
                timed_out = True
                break
            time.sleep(0.001)
        if timed_out:
            _kill_group(proc.pid)
            _, status, rusage = os.wait4(proc.pid, 0)
        else:
            _kill_group(proc.pid)  # reap anything it left behind in its group
    except BaseException:
        _kill_group(proc.pid)
        try:
            os.waitpid(proc.pid, 0)
        except ChildProcessError:
            pass
        raise
    finally:
        proc.stdout.close()
        proc.stderr.close()
        proc.returncode = 0  # reaped by wait4 above; keep Popen from waiting again
    seconds = time.perf_counter() - started
    assert status is not None and rusage is not None
    returncode: Optional[int] = None if timed_out else os.waitstatus_to_exitcode(status)
    out_fd, err_fd = list(streams)
    result = Completed(
        argv=argv,
        returncode=returncode,
        stdout=bytes(kept[out_fd]),
        stderr=bytes(kept[err_fd]),
        seconds=seconds,
        timed_out=timed_out,
        peak_rss_kib=int(rusage.ru_maxrss),
        stdout_truncated=truncated[out_fd],
        stderr_truncated=truncated[err_fd],
    )
    if check and (timed_out or returncode != 0):
        what = f"timed out after {timeout:g} s" if timed_out else f"exited with {returncode}"
        tail = result.stderr_tail()
        raise ToolFailedError(
            f"{os.path.basename(argv[0])} {what}" + (f": {tail}" if tail else ""),
            argv=argv,
            returncode=returncode,
            stderr_tail=tail,
            timed_out=timed_out,
        )
    return result
