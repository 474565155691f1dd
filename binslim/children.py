"""The child processes this process started and has not reaped yet, in every thread.

The runner registers each program it starts, and ``-r`` registers each worker it forks. A verification run's
clean-up ends the orphans it finds among our children, and leaves alone those registered here. The registry
lives apart from the runner so that forking workers does not import it.
"""

from __future__ import annotations

import threading

# Held while a child is started and registered, and while a clean-up scans for orphans: a child being started
# now is registered before a later scan sees it.
lock = threading.Lock()
started: set[int] = set()


def register(pid: int) -> None:
    with lock:
        started.add(pid)


def unregister(pid: int) -> None:
    with lock:
        started.discard(pid)
