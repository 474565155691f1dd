"""Trees: slim every ELF file under some folders in place, several at a time, and sum up what happened.

``slim_tree(roots)`` walks each root without following symlinks below it, tells ELF files from the rest
by their first four bytes, and hands each ELF file to ``slim`` (in place). Nothing else is opened for
writing. A file with several hard links is processed once, under its first name in sorted order. When the
walk found all of its names, each of them is then renamed onto the new file (atomic, like every other
install); when some name lies outside the tree, the new bytes are written into the shared inode instead
(see ``fileops.install``), so every name sees them.

Work runs in this process and, for a big enough tree, in children forked after every import (_ForkedRun),
in batches of neighbouring files; results come back in sorted path order whatever order they finish in.
"""

from __future__ import annotations

import math
import os
import stat
import struct
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from . import children, fileops
from ._record import Record
from .errors import BinslimError, UnsupportedError
from .options import SlimOptions
from .slim import SlimResult, failed_result, try_slim

ELF_MAGIC = b"\x7fELF"
BATCH_BYTES = 16 << 20  # a batch holds at most this much input, or a single larger file
BATCHES_PER_WORKER = 4  # enough to keep workers busy to the end without paying per-file IPC
# Without -j, workers start only when the serial work is estimated above POOL_MIN_SECONDS: the forks and
# sending results back cost tens of milliseconds, which a small tree never wins back (on 2 CPUs workers
# broke even at 120-200 small programs). The estimate: a small ELF file takes
# about PER_FILE_SECONDS in-process, and bytes copy at about COPY_BYTES_PER_SECOND (benchmarks/speed.py
# measures both ends); verifying runs each program, which takes about VERIFIED_FILE_SECONDS.
POOL_MIN_SECONDS = 0.12
PER_FILE_SECONDS = 0.0007
VERIFIED_FILE_SECONDS = 0.05
COPY_BYTES_PER_SECOND = 500e6

_ELF, _OTHER, _SYMLINK, _SPECIAL, _UNREADABLE = "elf", "other", "symlink", "special", "unreadable"
_NOT_ELF_MESSAGES = {
    _OTHER: "not an ELF file; left untouched",
    _SYMLINK: "symbolic link; not followed",
    _SPECIAL: "not a regular file; left untouched",
}
_HARD_LINK_REASON = "hard link, processed under another name"


class TreeSummary(Record):
    """What happened to a tree. Byte totals count each ELF file once, however many names it has."""

    files: int  # every non-directory entry found
    elf: int
    stripped: int  # status "ok": stripped and/or packed
    skipped: tuple[tuple[str, int], ...]  # ELF files left as they were: (reason, count), sorted
    failed: int
    not_elf: int
    symlinks: int
    special: int
    bytes_before: int
    bytes_after: int
    packed: int
    not_packed: tuple[tuple[str, int], ...]  # with UPX: (reason, count) of ELF files it did not pack
    dry_run: bool

    @property
    def saved(self) -> int:
        return self.bytes_before - self.bytes_after

    def to_dict(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "elf": self.elf,
            "stripped": self.stripped,
            "skipped": dict(self.skipped),
            "failed": self.failed,
            "not_elf": self.not_elf,
            "symlinks": self.symlinks,
            "special": self.special,
            "bytes": {"before": self.bytes_before, "after": self.bytes_after, "saved": self.saved},
            "packed": self.packed,
            "not_packed": dict(self.not_packed),
            "dry_run": self.dry_run,
        }


class TreeResult(Record):
    results: tuple[SlimResult, ...]  # one per file found, ELF or not, sorted by path
    summary: TreeSummary


class _Entry(Record):
    """One thing the walk found."""

    path: str
    kind: str
    size: int = 0
    inode: tuple[int, int] = (0, 0)
    nlink: int = 1
    problem: str = ""


class _Job(Record):
    path: str
    size: int
    links: tuple[str, ...] = ()  # other names of the same file that the walk found
    relink: bool = False  # the walk found every name: rename them all onto the new file
    inode: tuple[int, int] = (0, 0)  # (st_dev, st_ino) the walk found under every name


def default_jobs() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def slim_tree(
    roots: Iterable[str | os.PathLike[str]],
    *,
    jobs: int | None = None,
    dry_run: bool = False,
    on_result: Callable[[SlimResult], None] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    **options: Any,
) -> TreeResult:
    """Slim every ELF file under ``roots`` in place; ``options`` are ``slim``'s.

    A root may also be a file; a root that is a symlink is followed (as ``find -H`` does), symlinks below
    it are not. Per-file problems never raise: they are results with status "failed". The result lists
    every file found; ``on_result`` gets those of ELF files and failures, in sorted path order, as soon as
    all before them are known. ``on_progress(done, total)`` counts ELF files as they finish. ``jobs``
    defaults to the CPUs available when the tree is big enough to pay for a pool of workers, else 1. With
    ``upx``, only executables are packed; shared libraries and objects are stripped only.
    """
    for refused in ("output", "upx_force", "upx_required", "keep_hard_links"):
        if options.get(refused):
            raise UnsupportedError(f"{refused} cannot be used on a tree")
    options.pop("output", None)
    options.setdefault("measure_startup", False)  # behaviour is checked; startup timing is not worth it here
    job_options = SlimOptions.from_kwargs({**options, "dry_run": dry_run})

    entries = _walk([os.path.normpath(os.fspath(root)) for root in roots])
    work, linked = _plan(entries)
    ready: dict[str, SlimResult] = {e.path: _not_processed(e) for e in entries if e.kind != _ELF}
    order = [e.path for e in entries]
    reported = {e.path for e in entries if e.kind in (_ELF, _UNREADABLE)}
    emitted = 0
    done = 0

    def receive(batch_results: list[SlimResult]) -> None:
        nonlocal emitted, done
        for result in batch_results:
            ready[result.input] = result
            if result.input not in linked:
                done += 1
        if on_progress is not None:
            on_progress(done, len(work))
        while emitted < len(order) and order[emitted] in ready:
            if on_result is not None and order[emitted] in reported:
                on_result(ready[order[emitted]])
            emitted += 1

    workers = max(1, jobs) if jobs is not None else _default_workers(work, job_options.verify)
    batches = _batches(work, workers)
    receive([])
    _execute(batches, min(workers, len(batches)), job_options, receive)
    results = tuple(ready[path] for path in order)
    return TreeResult(results, _summarize(entries, results, linked, dry_run))


# --- the walk ---------------------------------------------------------------------------------------------


def _walk(roots: Sequence[str]) -> list[_Entry]:
    """Everything below ``roots`` that is not a directory, sorted by path; each directory once."""
    found: dict[str, _Entry] = {}
    seen_dirs: set[tuple[int, int]] = set()
    for root in roots:
        try:
            root_stat = os.stat(root)
        except OSError as exc:
            found[root] = _Entry(root, _UNREADABLE, problem=f"{root}: {exc.strerror or exc}")
            continue
        if stat.S_ISDIR(root_stat.st_mode):
            if (root_stat.st_dev, root_stat.st_ino) not in seen_dirs:
                seen_dirs.add((root_stat.st_dev, root_stat.st_ino))
                _walk_folder(root, found, seen_dirs)
        elif stat.S_ISREG(root_stat.st_mode):
            # Rewrite the file a symlink root points to, so the link stays a link.
            path = os.path.realpath(root) if os.path.islink(root) else root
            found.setdefault(path, _classify(path))
        else:
            found[root] = _Entry(root, _SPECIAL)
    return sorted(found.values(), key=lambda entry: entry.path)


def _walk_folder(top: str, found: dict[str, _Entry], seen_dirs: set[tuple[int, int]]) -> None:
    pending = [top]
    while pending:
        folder = pending.pop()
        try:
            with os.scandir(folder) as listing:
                listed = list(listing)
        except OSError as exc:
            problem = f"{folder}: cannot list: {exc.strerror or exc}"
            found[folder] = _Entry(folder, _UNREADABLE, problem=problem)
            continue
        for child in listed:
            path = child.path
            try:
                if child.is_symlink():
                    found[path] = _Entry(path, _SYMLINK, size=child.stat(follow_symlinks=False).st_size)
                elif child.is_dir(follow_symlinks=False):
                    key = (child.stat(follow_symlinks=False).st_dev, child.inode())
                    if key not in seen_dirs:  # a bind mount or an overlapping root
                        seen_dirs.add(key)
                        pending.append(path)
                elif child.is_file(follow_symlinks=False):
                    found.setdefault(path, _classify(path))
                else:
                    found[path] = _Entry(path, _SPECIAL)
            except OSError as exc:
                found[path] = _Entry(path, _UNREADABLE, problem=f"{path}: {exc.strerror or exc}")


def _classify(path: str) -> _Entry:
    """Open without following a symlink or blocking on a FIFO swapped in since the listing; read 4 bytes."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
        try:
            info = os.fstat(fd)
            magic = os.read(fd, 4) if stat.S_ISREG(info.st_mode) else b""
        finally:
            os.close(fd)
    except OSError as exc:
        return _Entry(path, _UNREADABLE, problem=f"{path}: cannot read: {exc.strerror or exc}")
    if not stat.S_ISREG(info.st_mode):
        return _Entry(path, _SPECIAL)
    kind = _ELF if magic == ELF_MAGIC else _OTHER
    return _Entry(path, kind, info.st_size, (info.st_dev, info.st_ino), info.st_nlink)


def _not_processed(entry: _Entry) -> SlimResult:
    if entry.kind == _UNREADABLE:
        return failed_result(entry.path, None, entry.problem)
    return SlimResult(
        input=entry.path,
        output=entry.path,
        status="skipped",
        message=_NOT_ELF_MESSAGES[entry.kind],
        original_size=entry.size,
        stripped_size=entry.size,
        packed_size=None,
        final_size=entry.size,
    )


def _plan(entries: Sequence[_Entry]) -> tuple[list[_Job], set[str]]:
    """One job per ELF file (inode), under its first name; and the other names, handled with it."""
    names: dict[tuple[int, int], list[_Entry]] = {}
    for entry in entries:
        if entry.kind == _ELF:
            names.setdefault(entry.inode, []).append(entry)
    work = []
    linked: set[str] = set()
    for group in names.values():
        first, others = group[0], tuple(e.path for e in group[1:])
        linked.update(others)
        relink = bool(others) and len(group) == first.nlink
        work.append(_Job(first.path, first.size, others, relink=relink, inode=first.inode))
    work.sort(key=lambda job: job.path)
    return work, linked


def _default_workers(work: Sequence[_Job], verify: bool) -> int:
    """The CPUs available when the tree is big enough to pay for a pool; else 1 (no pool)."""
    per_file = VERIFIED_FILE_SECONDS if verify else PER_FILE_SECONDS
    estimate = len(work) * per_file + sum(job.size for job in work) / COPY_BYTES_PER_SECOND
    return default_jobs() if estimate >= POOL_MIN_SECONDS else 1


def _batches(work: Sequence[_Job], workers: int) -> list[list[_Job]]:
    if not work:
        return []
    per_batch = max(1, math.ceil(len(work) / (workers * BATCHES_PER_WORKER)))
    batches: list[list[_Job]] = [[]]
    size = 0
    for job in work:
        if batches[-1] and (len(batches[-1]) >= per_batch or size + job.size > BATCH_BYTES):
            batches.append([])
            size = 0
        batches[-1].append(job)
        size += job.size
    return batches


# --- running ----------------------------------------------------------------------------------------------


def _execute(
    batches: Sequence[list[_Job]],
    workers: int,
    options: SlimOptions,
    receive: Callable[[list[SlimResult]], None],
) -> None:
    if workers <= 1:
        for batch in batches:
            receive([result for job in batch for result in _run_job(job, options)])
        return
    _ForkedRun(batches, workers, options).run(receive)


_NO_BATCH = (1 << 64) - 1
_U64 = struct.Struct("<Q")  # a word of the shared memory, and the length before each message


class _ForkedRun:
    """``workers`` processes over ``batches``: this one and ``workers - 1`` children forked after every
    import, so none pays a start-up; on 2 CPUs no process sits idle waiting for the others.

    Whoever is free takes the next batch (a counter in shared memory, taken under a lock that its holder's
    death releases). A child sends each file's results as soon as they are known, through its own pipe; a
    child that dies has its file in hand, and the rest of its batch, reported as failed. A stop flag in the
    shared memory (Ctrl-C, SIGTERM, or this process gone) makes children stop between files.
    """

    def __init__(self, batches: Sequence[list[_Job]], workers: int, options: SlimOptions) -> None:
        import mmap

        self.batches = batches
        self.options = options
        self.workers = workers
        # Words: the next batch to take, the stop flag, then the batch each child holds.
        self.shared = mmap.mmap(-1, 8 * (2 + workers))
        for child in range(workers):
            self._set(2 + child, _NO_BATCH)
        self.lock = os.memfd_create("binslim-batches", os.MFD_CLOEXEC)
        self.parent = os.getpid()
        self.children: dict[int, tuple[int, int]] = {}  # pid -> (child number, its results pipe)
        self.reported: dict[int, set[int]] = {}  # batch -> its jobs whose results a child sent (or failed)
        self.ran_here: set[int] = set()  # batches this process ran itself

    def _get(self, word: int) -> int:
        return int(_U64.unpack_from(self.shared, 8 * word)[0])

    def _set(self, word: int, value: int) -> None:
        _U64.pack_into(self.shared, 8 * word, value)

    def _take(self) -> int | None:
        """The next batch nobody has taken, or None when all are (or a stop was asked)."""
        import fcntl

        fcntl.lockf(self.lock, fcntl.LOCK_EX)
        try:
            index = self._get(0)
            if index >= len(self.batches) or self._get(1):
                return None
            self._set(0, index + 1)
            return index
        finally:
            fcntl.lockf(self.lock, fcntl.LOCK_UN)

    def run(self, receive: Callable[[list[SlimResult]], None]) -> None:
        import selectors

        try:
            for child in range(1, self.workers):
                try:
                    self._fork(child)
                except OSError:  # no more processes to be had: go on with those there are
                    break
            selector = selectors.DefaultSelector()
            buffers = {}
            for pid, (_, pipe) in self.children.items():
                selector.register(pipe, selectors.EVENT_READ, pid)
                buffers[pid] = bytearray()
            while (index := self._take()) is not None:
                self.ran_here.add(index)
                for job in self.batches[index]:
                    receive(_run_job(job, self.options))
                    # Between files, so that no child waits long on a full pipe.
                    self._collect(selector, buffers, receive, timeout=0)
            while self.children:
                self._collect(selector, buffers, receive, timeout=None)
            selector.close()
            if unclaimed := self._unclaimed():
                receive(unclaimed)
        except BaseException:
            import fcntl
            import signal

            # A second Ctrl-C (or SIGTERM) waits until every child is reaped, as the runner's clean-up does:
            # else it would leave children nobody waits for.
            held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
            try:
                self._set(1, 1)  # children finish the file in hand, so nothing is left half-written
                # Interrupted between taking the lock and its try block, this process would hold it forever
                # and the children, waiting for it, would never see the stop: release it (a no-op when not
                # held).
                fcntl.lockf(self.lock, fcntl.LOCK_UN)
                self._reap_all()
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, held)
            raise
        finally:
            os.close(self.lock)
            self.shared.close()

    def _fork(self, child: int) -> None:
        import signal

        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        # Ctrl-C and SIGTERM wait until the child is on record: raised between the fork and the bookkeeping,
        # they would leave a child that nobody stops or waits for.
        held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            try:
                pid = os.fork()
            except OSError:
                os.close(read_end)
                os.close(write_end)
                raise
            if pid == 0:  # the child: never returns into the caller's code
                status = 1
                try:
                    # Ctrl-C goes to the whole process group: the parent decides, children only stop
                    # between files. (SIGTERM's handler, inherited, acts only in the parent.)
                    signal.signal(signal.SIGINT, signal.SIG_IGN)
                    signal.pthread_sigmask(signal.SIG_SETMASK, held)
                    # Only the parent may hold the read ends: a sibling holding one would keep this child's
                    # writes from failing (EPIPE) once the parent is gone.
                    for _, sibling_pipe in self.children.values():
                        os.close(sibling_pipe)
                    os.close(read_end)
                    status = self._child(child, write_end)
                finally:
                    os._exit(status)
            # Else a verification run's clean-up (no PID namespace) takes it for an orphan: kills, reaps it.
            children.register(pid)
            self.children[pid] = (child, read_end)
            os.close(write_end)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)

    def _child(self, child: int, pipe: int) -> int:
        import pickle

        while (index := self._take()) is not None:
            self._set(2 + child, index)
            for number, job in enumerate(self.batches[index]):
                if self._get(1) or os.getppid() != self.parent:
                    return 0
                message = pickle.dumps((index, number, _run_job(job, self.options)))
                try:
                    _write_all_to_pipe(pipe, _U64.pack(len(message)) + message)
                except BrokenPipeError:
                    return 0
            self._set(2 + child, _NO_BATCH)
        return 0

    def _collect(
        self,
        selector: Any,
        buffers: dict[int, bytearray],
        receive: Callable[[list[SlimResult]], None],
        timeout: float | None,
    ) -> None:
        """Results the children have sent; a child whose pipe closed is reaped."""
        import pickle

        for key, _ in selector.select(timeout):
            pid = key.data
            chunk = os.read(key.fd, 1 << 20)
            buffer = buffers[pid]
            buffer += chunk
            while len(buffer) >= _U64.size:
                (length,) = _U64.unpack_from(buffer)
                if len(buffer) < _U64.size + length:
                    break
                index, number, results = pickle.loads(buffer[_U64.size : _U64.size + length])
                del buffer[: _U64.size + length]
                self.reported.setdefault(index, set()).add(number)
                receive(results)
            if not chunk:
                selector.unregister(key.fd)
                receive(self._reap(pid))

    def _reap(self, pid: int) -> list[SlimResult]:
        """Wait for a child whose pipe closed; failed results for the files of a batch it left unfinished."""
        child, pipe = self.children.pop(pid)
        os.close(pipe)
        status = self._wait(pid)
        index = self._get(2 + child)
        if index == _NO_BATCH or self._get(1):
            return []
        code = os.waitstatus_to_exitcode(status)
        how = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
        return self._failed(index, f"worker process failed ({how})")

    def _failed(self, index: int, problem: str) -> list[SlimResult]:
        """Failed results for the jobs of batch ``index`` that nobody reported, now counted as reported."""
        done = self.reported.setdefault(index, set())
        failed = [number for number in range(len(self.batches[index])) if number not in done]
        done.update(failed)
        return [
            failed_result(path, None, f"{path}: {problem}")
            for number in failed
            for path in (self.batches[index][number].path, *self.batches[index][number].links)
        ]

    def _unclaimed(self) -> list[SlimResult]:
        """After every child is reaped: a batch taken by a child that died before saying which it held."""
        taken = min(self._get(0), len(self.batches))
        return [
            result
            for index in range(taken)
            if index not in self.ran_here
            for result in self._failed(index, "worker process died before reporting it")
        ]

    @staticmethod
    def _wait(pid: int) -> int:
        _, status = os.waitpid(pid, 0)
        children.unregister(pid)
        return status

    def _reap_all(self) -> None:
        """After a stop: wait for every child (each finishes the file in hand), reading their pipes so that
        none blocks on a full one."""
        for pid, (_, pipe) in list(self.children.items()):
            while os.read(pipe, 1 << 20):
                pass
            os.close(pipe)
            self._wait(pid)
            del self.children[pid]


def _write_all_to_pipe(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _run_job(job: _Job, options: SlimOptions) -> list[SlimResult]:
    result = _attempt(job.path, options._replace(keep_hard_links=not job.relink))
    results = [result]
    installed = result.status == "ok" and not options.dry_run
    for name in job.links:
        if installed and job.relink:
            if not _still_the_walks(name, job.inode):
                # Renaming the new file onto it would destroy whatever took that name since the walk.
                problem = f"no longer a hard link of {job.path} (replaced or removed since the walk)"
                problem += "; left as it was"
                results.append(failed_result(name, None, f"{name}: {problem}"))
                continue
            try:
                fileops.replace_with_link(job.path, name)
            except BinslimError as exc:
                results.append(failed_result(name, None, f"{exc}; it keeps the old content"))
                continue
        message = f"hard link of {job.path}: processed under that name"
        if result.status == "failed":
            message = f"hard link of {job.path}, which failed; left as it was"
        results.append(
            SlimResult(
                input=name,
                output=name,
                status="skipped",
                message=message,
                original_size=result.original_size,
                stripped_size=result.stripped_size,
                packed_size=result.packed_size,
                final_size=result.final_size,
            )
        )
    return results


def _still_the_walks(path: str, inode: tuple[int, int]) -> bool:
    try:
        info = os.lstat(path)
    except OSError:
        return False
    return (info.st_dev, info.st_ino) == inode


def _attempt(path: str, options: SlimOptions) -> SlimResult:
    return try_slim(path, None, options)[0]  # a failure, even a bug, is this file's; the others go on


# --- the summary ------------------------------------------------------------------------------------------


def _short_reason(text: str) -> str:
    """``already packed by UPX (no section table...); left as it was`` -> ``already packed by UPX``."""
    for stop in (";", " (", ":"):
        text = text.split(stop, 1)[0]
    return text.strip()


def _counts(reasons: Iterable[str]) -> tuple[tuple[str, int], ...]:
    tally: dict[str, int] = {}
    for reason in reasons:
        tally[reason] = tally.get(reason, 0) + 1
    return tuple(sorted(tally.items()))


def _summarize(
    entries: Sequence[_Entry], results: Sequence[SlimResult], linked: set[str], dry_run: bool
) -> TreeSummary:
    kinds = [entry.kind for entry in entries]
    elf = [r for r, kind in zip(results, kinds) if kind == _ELF]
    counted = [r for r in elf if r.input not in linked]
    skipped = [
        _HARD_LINK_REASON if r.input in linked else _short_reason(r.message)
        for r in elf
        if r.status == "skipped"
    ]
    return TreeSummary(
        files=len(entries),
        elf=len(elf),
        stripped=sum(r.status == "ok" for r in elf),
        skipped=_counts(skipped),
        failed=sum(r.status == "failed" for r in results),
        not_elf=kinds.count(_OTHER),
        symlinks=kinds.count(_SYMLINK),
        special=kinds.count(_SPECIAL),
        bytes_before=sum(r.original_size for r in counted),
        bytes_after=sum(r.final_size for r in counted),
        packed=sum(r.packed_size is not None for r in counted),
        not_packed=_counts(_short_reason(r.upx_reason) for r in counted if r.upx_reason),
        dry_run=dry_run,
    )
