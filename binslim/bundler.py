"""``binslim bundle``: the smallest root filesystem in which dynamically linked programs still run.

The steps, top to bottom: resolve each program's loader closure (``resolve``), add what the loader and libc
open at run time (``--with``, and the dlopen needs detected from imported symbols), lay every path out as the
host has it (each symlink on the way, merged-/usr links included, so PT_INTERP and the SONAME links exist),
slim each ELF file once, run each program inside the root and compare it with the original, and only then
move the root (a folder, or a reproducible tar) into place.
"""

from __future__ import annotations

import errno
import io
import os
import shutil
import stat
import tarfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import fileops
from .elf.dynamic import read_dynamic
from .elf.kind import read_kind
from .elf.ldcache import CACHE_PATH
from .errors import (
    BinslimError,
    NotELFError,
    ToolNotFoundError,
    UnsupportedError,
    VerificationError,
    file_error,
    printable,
)
from .options import SlimOptions
from .resolve import ProgramDeps, SearchConfig, resolve, search_config
from .runner import Completed, Runner, run
from .verification.measure import AddedStartup, Timing

WITH_CHOICES = ("certs", "tz", "nss", "gconv")
SCHEMA = 1
_MAX_LINK_DEPTH = 40  # as the kernel's ELOOP limit
_CA_BUNDLES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt")
_ZONEINFO = "/usr/share/zoneinfo"
# sh -c IN_ROOT_SCRIPT NAME ROOT MOUNT CHROOT PROGRAM ARGS...: run the program chrooted into ROOT with /proc
# and /dev, inside a fresh mount and PID namespace (see _launcher).
IN_ROOT_SCRIPT = (
    'set -e; root=$1; mount=$2; chroot=$3; shift 3; "$mount" -t proc proc "$root/proc";'
    ' "$mount" --rbind /dev "$root/dev"; exec "$chroot" "$root" "$@"'
)


def in_root_command(root: str, program: str) -> list[str] | None:
    """sh running IN_ROOT_SCRIPT for ``program`` in ``root`` (to run inside ``unshare --mount --pid
    --fork``); None without sh, mount or chroot."""
    tools = [shutil.which(name, path=_SYSTEM_PATH) for name in ("sh", "mount", "chroot")]
    if None in tools:
        return None
    sh, mount, chroot = (str(tool) for tool in tools)
    return [sh, "-c", IN_ROOT_SCRIPT, "binslim-root", root, mount, chroot, program]


_SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Imports that make glibc read /etc/nsswitch.conf and the passwd/group/hosts databases at run time.
NSS_SYMBOLS = frozenset(
    {
        "getpwnam", "getpwnam_r", "getpwuid", "getpwuid_r", "getpwent", "getpwent_r", "getspnam",
        "getgrnam", "getgrnam_r", "getgrgid", "getgrgid_r", "getgrent", "getgrouplist", "initgroups",
        "getaddrinfo", "getnameinfo", "gethostbyname", "gethostbyname2", "gethostbyname_r",
        "gethostbyname2_r", "gethostbyaddr", "gethostbyaddr_r", "getservbyname", "getservbyname_r",
        "getservbyport", "getprotobyname", "getprotobynumber", "getpwnam@GLIBC_2.2.5",
    }
)  # fmt: skip
# glibc unwinds a cancelled thread through libgcc_s, which it dlopens on first use.
CANCEL_SYMBOLS = frozenset({"pthread_cancel", "pthread_exit"})
ICONV_SYMBOLS = frozenset({"iconv_open"})
_MINIMAL_FILES: dict[str, bytes] = {
    "/etc/nsswitch.conf": b"passwd: files\ngroup: files\nshadow: files\nhosts: files dns\nservices: files\n",
    "/etc/hosts": b"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
}
_DEFAULT_PASSWD = (
    b"root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n"
)
_DEFAULT_GROUP = b"root:x:0:\nnogroup:x:65534:\n"


@dataclass(frozen=True)
class BundleFile:
    """One entry of the root: a file, a symlink or a generated file."""

    path: str  # absolute, inside the root
    kind: str  # "file" or "symlink"
    source: str | None  # the host file it comes from; None for a generated file
    link_target: str | None
    size_before: int  # bytes on the host (0 for symlinks)
    size_after: int  # bytes in the root
    action: str  # "stripped", "packed", "already stripped", "copied", "generated", "link"
    reasons: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "kind": self.kind,
            "source": self.source,
            "link_target": self.link_target,
            "size": {"before": self.size_before, "after": self.size_after},
            "action": self.action,
            "reasons": list(self.reasons),
        }


@dataclass(frozen=True)
class ProgramCheck:
    """How one program behaved inside the root, compared with the original (as binslim.verifier compares)."""

    program: str
    path_in_root: str
    method: str  # "chroot", "user namespace", "loader", or "" when not run
    ran: bool
    same_behaviour: bool | None
    reason: str
    original: Timing | None = None  # startup and peak RSS on the host
    root: Timing | None = None  # the same inside the root
    added: AddedStartup | None = None  # what the root adds: mean of paired differences, 95% interval
    original_varies: bool = False  # the original's own runs differed: nothing could be compared

    def to_dict(self) -> dict[str, Any]:
        startup = peak = None
        if self.original is not None and self.root is not None and self.added is not None:
            startup = {
                "original": round(self.original.median_ms, 3),
                "root": round(self.root.median_ms, 3),
                "added": round(self.added.added_ms, 3),
                "added_low": None if self.added.low_ms is None else round(self.added.low_ms, 3),
                "added_high": None if self.added.high_ms is None else round(self.added.high_ms, 3),
            }
            peak = {"original": self.original.peak_rss_kib, "root": self.root.peak_rss_kib}
        return {
            "program": self.program,
            "path_in_root": self.path_in_root,
            "method": self.method,
            "ran": self.ran,
            "same_behaviour": self.same_behaviour,
            "original_varies": self.original_varies,
            "reason": self.reason,
            "startup_ms": startup,
            "peak_rss_kib": peak,
        }


@dataclass(frozen=True)
class BundleResult:
    output: str
    format: str  # "folder" or "tar"
    programs: tuple[str, ...]
    files: tuple[BundleFile, ...]
    checks: tuple[ProgramCheck, ...]
    notes: tuple[str, ...]
    total_bytes: int  # sum of size_after: what the root's files hold
    output_bytes: int  # the tar's size, or total_bytes for a folder

    @property
    def original_bytes(self) -> int:
        return sum(f.size_before for f in self.files)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "output": self.output,
            "format": self.format,
            "programs": list(self.programs),
            "files": [f.to_dict() for f in self.files],
            "total_bytes": self.total_bytes,
            "original_bytes": self.original_bytes,
            "output_bytes": self.output_bytes,
            "verify": [check.to_dict() for check in self.checks],
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class BundleOptions:
    """Everything ``bundle`` takes besides the programs and the output; see ``bundle``."""

    includes: Sequence[str] = ()
    with_: Sequence[str] = ()
    auto_dlopen: bool = True
    library_path: Sequence[str] = ()
    gconv_charsets: Sequence[str] = ()
    keep_section_headers: bool = False
    ld_cache: str = CACHE_PATH  # the ld.so.cache the resolution reads (another one: for tests)
    upx: bool = False
    verify: bool = True
    verify_args: Sequence[str] = ("--version",)
    verify_cmd: str | None = None
    verify_timeout: float = 10.0
    verify_runs: int = 3
    verify_env: Mapping[str, str] | None = None
    source_date_epoch: int | None = None
    runner: Runner = field(default=run)

    def __post_init__(self) -> None:
        if self.gconv_charsets and "gconv" not in self.with_:
            object.__setattr__(self, "with_", (*self.with_, "gconv"))
        unknown = sorted(set(self.with_) - set(WITH_CHOICES))
        if unknown:
            raise BinslimError(f"--with: unknown {', '.join(unknown)} (choose from {','.join(WITH_CHOICES)})")


def bundle(
    programs: Sequence[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    *,
    includes: Sequence[str | os.PathLike[str]] = (),
    with_: Sequence[str] = (),
    auto_dlopen: bool = True,
    library_path: Sequence[str] = (),
    gconv_charsets: Sequence[str] = (),
    keep_section_headers: bool = False,
    ld_cache: str = CACHE_PATH,
    upx: bool = False,
    verify: bool = True,
    verify_args: Sequence[str] = ("--version",),
    verify_cmd: str | None = None,
    verify_timeout: float = 10.0,
    verify_runs: int = 3,
    verify_env: Mapping[str, str] | None = None,
    source_date_epoch: int | None = None,
    runner: Runner = run,
) -> BundleResult:
    """Build the root for ``programs`` at ``output`` (a folder that must not exist or be empty, or a file
    ending in ``.tar``). ``includes``: extra files or folders, their ELF dependencies resolved too.
    ``with_``: any of certs, tz, nss, gconv. ``auto_dlopen``: add libgcc_s and the NSS files when the
    imported symbols say glibc will dlopen or read them. ``gconv_charsets``: only the gconv modules for
    these charsets (and the gconv cache), instead of all of them; implies gconv. ``library_path``:
    LD_LIBRARY_PATH for the resolution. Every ELF file is cut to what the loader maps (binslim's
    --strip-section-headers level, libraries included: nothing links against a runtime root) unless
    ``keep_section_headers``, which
    strips at the default level. ``upx``: pack the executables. ``verify``: run each program in the root with
    ``verify_args`` (or ``verify_cmd SCRIPT``, given a launcher for each side) and compare it with the
    original; a difference raises VerificationError (exit code 3) and nothing is installed.
    ``source_date_epoch``: the time of every tar entry (default: $SOURCE_DATE_EPOCH, else 0). ``ld_cache``:
    the ld.so.cache the resolution reads."""
    if source_date_epoch is None and os.environ.get("SOURCE_DATE_EPOCH", "").strip():
        try:
            source_date_epoch = int(os.environ["SOURCE_DATE_EPOCH"])
        except ValueError:
            raise BinslimError(
                f"SOURCE_DATE_EPOCH={os.environ['SOURCE_DATE_EPOCH']!r} is not an integer"
            ) from None
    options = BundleOptions(
        includes=tuple(os.fspath(p) for p in includes),
        with_=tuple(with_),
        auto_dlopen=auto_dlopen,
        library_path=tuple(library_path),
        gconv_charsets=tuple(gconv_charsets),
        keep_section_headers=keep_section_headers,
        ld_cache=ld_cache,
        upx=upx,
        verify=verify,
        verify_args=tuple(verify_args),
        verify_cmd=verify_cmd,
        verify_timeout=verify_timeout,
        verify_runs=verify_runs,
        verify_env=verify_env,
        source_date_epoch=source_date_epoch,
        runner=runner,
    )
    return bundle_with([os.fspath(p) for p in programs], os.fspath(output), options)


def bundle_with(programs: Sequence[str], output: str, options: BundleOptions) -> BundleResult:
    if not programs:
        raise BinslimError("bundle: name at least one program")
    as_tar = output.endswith(".tar")
    output = os.path.abspath(output)
    _check_target(output, as_tar)
    # What a killed run left beside the target goes first: an --include of that folder must not list it.
    fileops.sweep_stale(os.path.dirname(output))
    plan = _Plan()
    notes: list[str] = []
    deps = [_resolve_program(p, options) for p in programs]
    for program, program_deps in zip(programs, deps):
        plan.add_path(os.path.abspath(program), f"program {os.path.basename(program)}", executable=True)
        for obj in program_deps.objects:
            reason = (
                "interpreter (PT_INTERP)" if obj.found_via == "PT_INTERP" else _needed_reason(obj.needed_by)
            )
            plan.add_path(obj.path, reason)
    interpreter = next((d.interpreter for d in deps if d.interpreter), None)
    config = _config_for(programs[0], options)
    for include in options.includes:
        _add_include(plan, include, interpreter, config, options)
    _add_runtime_needs(plan, deps, interpreter, config, options, notes)

    parent = os.path.dirname(output)
    stage_dir = fileops.scratch_dir(fileops.TEMP_PREFIX + "bundle-", parent)
    try:
        stage = stage_dir.__enter__()
    except OSError as exc:
        raise fileops.io_error(output, "write", exc) from exc
    root = os.path.join(stage, "root")
    try:
        os.mkdir(root, 0o755)
        files = _materialize(plan, root, options)
        files = sorted(files + _root_cache(deps, config, root, options), key=lambda f: f.path)
        checks: list[ProgramCheck] = []
        if options.verify:
            for program in programs:
                check = _verify_in_root(program, root, options)
                checks.append(check)
                if check.original_varies:
                    raise VerificationError(f"{program}: {check.reason}; nothing was installed")
                if check.same_behaviour is False:
                    raise VerificationError(
                        f"{program}: does not behave inside the root as on the host: {check.reason}; nothing"
                        " was installed"
                    )
        total = sum(f.size_after for f in files)
        if as_tar:
            tar_temp = os.path.join(stage, "root.tar")
            _write_tar(root, tar_temp, options.source_date_epoch or 0)
            output_bytes = os.path.getsize(tar_temp)
            os.replace(tar_temp, output)
        else:
            if options.source_date_epoch is not None:
                _set_times(root, options.source_date_epoch)
            if os.path.isdir(output):
                _remove_empty_target(output)
            os.rename(root, output)
            output_bytes = total
    except OSError as exc:
        raise fileops.io_error(output, "write", exc) from exc
    except BinslimError as exc:
        _name_the_output(exc, root, output)
        raise
    finally:
        stage_dir.__exit__(None, None, None)
    return BundleResult(
        output=output,
        format="tar" if as_tar else "folder",
        programs=tuple(programs),
        files=tuple(files),
        checks=tuple(checks),
        notes=tuple(notes),
        total_bytes=total,
        output_bytes=output_bytes,
    )


def _name_the_output(error: BinslimError, root: str, output: str) -> None:
    """Errors about a file being written in the stage name it where it was to go: the stage is removed."""
    if error.args and isinstance(error.args[0], str) and root in error.args[0]:
        error.args = (error.args[0].replace(root, output), *error.args[1:])


# --- what goes in ------------------------------------------------------------------------------------------


class _Entry:
    def __init__(self, kind: str, source: str | None, link_target: str | None = None) -> None:
        self.kind = kind  # "dir", "file", "symlink", "generated"
        self.source = source
        self.link_target = link_target
        self.reasons: list[str] = []
        self.executable = False
        self.content: bytes | None = None


class _Plan:
    """Root paths → what they are, as on the host."""

    def __init__(self) -> None:
        self.entries: dict[str, _Entry] = {}

    def _entry(self, path: str, entry: _Entry, reason: str) -> _Entry:
        existing = self.entries.setdefault(path, entry)
        if reason and reason not in existing.reasons and existing.kind != "dir":
            existing.reasons.append(reason)
        return existing

    def add_path(self, path: str, reason: str, *, executable: bool = False, depth: int = 0) -> str:
        """Add ``path`` as the host resolves it: every symlink on the way and the file at the end. Returns
        the real path of the file."""
        if depth > _MAX_LINK_DEPTH:
            raise file_error(path, "too many levels of symbolic links")
        parts = [p for p in os.path.normpath(path).split("/") if p]
        current = "/"
        for index, part in enumerate(parts):
            host = os.path.join(current, part)
            try:
                st = os.lstat(host)
            except FileNotFoundError:
                raise file_error(host, "no such file") from None
            if stat.S_ISLNK(st.st_mode):
                target = os.readlink(host)
                last = index == len(parts) - 1
                # A folder link (merged /usr: /lib -> usr/lib) serves every path below it: say so once.
                self._entry(
                    host,
                    _Entry("symlink", host, target),
                    reason if last else "folder link on the loader's paths",
                )
                resolved = os.path.normpath(os.path.join(current, target))
                return self.add_path(
                    os.path.join(resolved, *parts[index + 1 :]),
                    reason,
                    executable=executable,
                    depth=depth + 1,
                )
            if index < len(parts) - 1:
                if not stat.S_ISDIR(st.st_mode):
                    raise file_error(host, "not a folder")
                self.entries.setdefault(host, _Entry("dir", None))
                current = host
            elif stat.S_ISREG(st.st_mode):
                entry = self._entry(host, _Entry("file", host), reason)
                entry.executable = entry.executable or executable
            elif stat.S_ISDIR(st.st_mode):
                self.entries.setdefault(host, _Entry("dir", None))
            else:
                raise file_error(host, "not a regular file, folder or symlink")
        return os.path.join("/", *parts)

    def add_tree(self, folder: str, reason: str) -> list[str]:
        """Add ``folder`` and everything under it (symlinks stay symlinks, never followed). Returns the
        regular files added."""
        real = self.add_path(folder, reason)
        added: list[str] = []
        for dirpath, dirnames, filenames in os.walk(real):
            dirnames.sort()
            for name in sorted(filenames) + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
                path = os.path.join(dirpath, name)
                if os.path.islink(path):
                    self._entry(path, _Entry("symlink", path, os.readlink(path)), reason)
                elif os.path.isfile(path):
                    self._entry(path, _Entry("file", path), reason)
                    added.append(path)
            for name in dirnames:
                if not os.path.islink(os.path.join(dirpath, name)):
                    self.entries.setdefault(os.path.join(dirpath, name), _Entry("dir", None))
        return added

    def add_generated(self, path: str, content: bytes, reason: str) -> None:
        parent = os.path.dirname(path)
        if os.path.isdir(parent):
            self.add_path(parent, "")
        entry = self._entry(path, _Entry("generated", None), reason)
        entry.content = content


def _check_target(output: str, as_tar: bool) -> None:
    parent = os.path.dirname(output)
    if not os.path.isdir(parent):
        raise file_error(output, "its folder does not exist")
    if as_tar:
        if os.path.isdir(output):
            raise file_error(output, "is a folder; a .tar output must be a file")
        kind = fileops.output_kind(output)
        if kind is not None:  # the tar is renamed onto the name: a FIFO or device would be replaced
            raise file_error(output, f"is a {kind}; a .tar output must be a regular file")
        return
    if os.path.islink(output):
        # Even to an empty folder: the finished root is moved onto the name itself, not where it points.
        raise file_error(output, "is a symbolic link; -o must be a folder that does not exist or is empty")
    if os.path.lexists(output) and not (os.path.isdir(output) and not os.listdir(output)):
        raise file_error(output, "exists and is not an empty folder: remove it or choose another -o")
    if os.path.isdir(output) and os.path.ismount(output):
        raise file_error(output, _mount_point(output))


def _mount_point(output: str) -> str:
    return (
        "is a mount point, and the finished root is put in place with one rename: name a new folder inside"
        f" it, such as {os.path.join(output, 'rootfs')}"
    )


def _remove_empty_target(output: str) -> None:
    """Make room for the rename; a mount point (a bind mount on the same file system, which ismount cannot
    tell) refuses with EBUSY."""
    try:
        os.rmdir(output)  # empty, as _check_target made sure
    except OSError as exc:
        if exc.errno == errno.EBUSY:
            raise file_error(output, _mount_point(output)) from exc
        raise


def _config_for(program: str, options: BundleOptions) -> SearchConfig:
    kind = read_kind(program)
    return search_config(
        kind.e_machine,
        kind.is64,
        e_flags=kind.e_flags,
        library_path=options.library_path,
        cache_path=options.ld_cache,
    )


def _resolve_program(program: str, options: BundleOptions) -> ProgramDeps:
    kind = read_kind(program)
    if not kind.is_executable:
        raise file_error(
            program, f"is a {kind.description}, not a program (add it with --include)", UnsupportedError
        )
    config = search_config(
        kind.e_machine,
        kind.is64,
        e_flags=kind.e_flags,
        library_path=options.library_path,
        cache_path=options.ld_cache,
    )
    return resolve(program, config)


def _needed_reason(needed_by: Sequence[str]) -> str:
    return "needed by " + ", ".join(needed_by)


def _add_include(
    plan: _Plan, include: str, interpreter: str | None, config: SearchConfig, options: BundleOptions
) -> None:
    if not os.path.lexists(include):
        raise file_error(include, "no such file (--include)")
    reason = f"--include {include}"
    if os.path.isdir(include) and not os.path.islink(include):
        files = plan.add_tree(include, reason)
    else:
        files = [plan.add_path(os.path.abspath(include), reason)]
    for path in files:
        _add_elf_deps(plan, path, interpreter, config)


def _add_elf_deps(plan: _Plan, path: str, interpreter: str | None, config: SearchConfig) -> None:
    try:
        info = read_dynamic(path)
    except NotELFError:
        return
    if not info.dynamic or info.e_machine != config.e_machine or info.is64 != config.is64:
        return
    for obj in resolve(path, config, interpreter=interpreter).objects:
        reason = "interpreter (PT_INTERP)" if obj.found_via == "PT_INTERP" else _needed_reason(obj.needed_by)
        plan.add_path(obj.path, reason)


def _add_runtime_needs(
    plan: _Plan,
    deps: Sequence[ProgramDeps],
    interpreter: str | None,
    config: SearchConfig,
    options: BundleOptions,
    notes: list[str],
) -> None:
    wanted = set(options.with_)
    for program_deps in deps:
        name = os.path.basename(program_deps.program)
        nss = sorted(program_deps.imported & NSS_SYMBOLS)
        if nss and "nss" not in wanted:
            if options.auto_dlopen:
                wanted.add("nss")
                notes.append(f"{name} imports {nss[0]}: added the NSS files (as --with nss)")
            else:
                notes.append(f"{name} imports {nss[0]}: NSS files not added (--no-auto-dlopen)")
        cancel = sorted(program_deps.imported & CANCEL_SYMBOLS)
        if cancel and not any(o.soname == "libgcc_s.so.1" for o in program_deps.objects):
            libgcc = (
                config.cache.lookup("libgcc_s.so.1", config.cache_flags, config.hwcaps)
                if config.cache
                else None
            )
            if libgcc is None:
                libgcc = next(
                    (
                        os.path.join(d, "libgcc_s.so.1")
                        for d in config.default_dirs
                        if os.path.exists(os.path.join(d, "libgcc_s.so.1"))
                    ),
                    None,
                )
            if not options.auto_dlopen:
                notes.append(f"{name} imports {cancel[0]}: libgcc_s.so.1 not added (--no-auto-dlopen)")
            elif libgcc is None:
                notes.append(
                    f"{name} imports {cancel[0]}: glibc dlopens libgcc_s.so.1 then, but none is installed"
                )
            else:
                plan.add_path(
                    libgcc, f"dlopen'ed by glibc to unwind cancelled threads ({name} imports {cancel[0]})"
                )
                _add_elf_deps(plan, libgcc, interpreter, config)
        if program_deps.imported & ICONV_SYMBOLS and "gconv" not in wanted:
            notes.append(
                f"{name} imports iconv_open: without --with gconv only glibc's built-in conversions"
                " (UTF-8, ASCII, UCS-2/4, UTF-16/32, ISO-8859-1) work"
            )
    libc = next((o.path for d in deps for o in d.objects if o.soname == "libc.so.6"), None)
    for choice in WITH_CHOICES:
        if choice in wanted:
            _add_with(plan, choice, libc, interpreter, config, notes, options.gconv_charsets)


def _add_with(
    plan: _Plan,
    choice: str,
    libc: str | None,
    interpreter: str | None,
    config: SearchConfig,
    notes: list[str],
    gconv_charsets: Sequence[str] = (),
) -> None:
    reason = f"--with {choice}"
    if choice == "certs":
        bundle_path = next((p for p in _CA_BUNDLES if os.path.exists(p)), None)
        if bundle_path is None:
            raise BinslimError("--with certs: no CA bundle here (install Debian's ca-certificates)")
        plan.add_path(bundle_path, reason)
    elif choice == "tz":
        if not os.path.isdir(_ZONEINFO):
            raise BinslimError(f"--with tz: no {_ZONEINFO} here (install Debian's tzdata)")
        plan.add_tree(_ZONEINFO, reason)
        if os.path.lexists("/etc/localtime"):
            plan.add_path("/etc/localtime", reason)
    elif choice == "nss":
        for path, content in _MINIMAL_FILES.items():
            plan.add_generated(path, content, f"{reason} (minimal)")
        plan.add_generated(
            "/etc/passwd",
            _minimal_db("/etc/passwd", ("root", "nobody"), _DEFAULT_PASSWD),
            f"{reason} (root and nobody)",
        )
        plan.add_generated(
            "/etc/group",
            _minimal_db("/etc/group", ("root", "nogroup"), _DEFAULT_GROUP),
            f"{reason} (root and nogroup)",
        )
        if libc is not None and not _libc_has_builtin_nss(libc):
            # Before glibc 2.34 the files and dns services were modules that libc dlopens.
            for module in ("libnss_files.so.2", "libnss_dns.so.2"):
                found = config.cache.lookup(module, config.cache_flags) if config.cache else None
                if found:
                    plan.add_path(found, reason)
                    _add_elf_deps(plan, found, interpreter, config)
    elif choice == "gconv":
        if libc is None:
            notes.append("--with gconv: no glibc among the libraries; nothing added")
            return
        gconv = os.path.join(os.path.dirname(os.path.realpath(libc)), "gconv")
        if not os.path.isdir(gconv):
            raise BinslimError(f"--with gconv: no {gconv} here (install Debian's libc6)")
        if not gconv_charsets:
            for path in plan.add_tree(gconv, reason):
                _add_elf_deps(plan, path, interpreter, config)
            return
        for charset, files in _gconv_modules(gconv, gconv_charsets).items():
            for name in files:
                path = os.path.join(gconv, name + ".so")
                plan.add_path(path, f"--gconv {charset}")
                _add_elf_deps(plan, path, interpreter, config)
        # iconv reads the cache when there is one and the text configuration only otherwise.
        cache = os.path.join(gconv, "gconv-modules.cache")
        if os.path.exists(cache):
            plan.add_path(cache, reason)
        else:
            plan.add_path(os.path.join(gconv, "gconv-modules"), reason)
            if os.path.isdir(os.path.join(gconv, "gconv-modules.d")):
                plan.add_tree(os.path.join(gconv, "gconv-modules.d"), reason)


def _gconv_modules(gconv: str, charsets: Sequence[str]) -> dict[str, list[str]]:
    """For each charset, the module files (without .so) that convert it from and to glibc's INTERNAL, read
    from gconv-modules and gconv-modules.d/*.conf (``alias NAME// TARGET//``, ``module FROM// TO// FILE
    COST``). BinslimError names a charset no module converts."""
    configs = [os.path.join(gconv, "gconv-modules")]
    folder = os.path.join(gconv, "gconv-modules.d")
    if os.path.isdir(folder):
        configs += [os.path.join(folder, n) for n in sorted(os.listdir(folder)) if n.endswith(".conf")]
    aliases: dict[str, str] = {}
    modules: dict[str, set[str]] = {}
    for config_path in configs:
        if not os.path.exists(config_path):
            continue
        with open(config_path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                words = line.split("#", 1)[0].split()
                if len(words) >= 3 and words[0] == "alias":
                    aliases[words[1].upper().rstrip("/")] = words[2].upper().rstrip("/")
                elif len(words) >= 4 and words[0] == "module":
                    for end in (words[1], words[2]):
                        modules.setdefault(end.upper().rstrip("/"), set()).add(words[3])
    found: dict[str, list[str]] = {}
    for charset in charsets:
        name = charset.upper().rstrip("/")
        name = aliases.get(name, name)
        files = sorted(modules.get(name, set()))
        if not files:
            raise BinslimError(f"--gconv {charset}: no gconv module converts it here")
        found[charset] = files
    return found


def _minimal_db(path: str, names: Iterable[str], default: bytes) -> bytes:
    """The host's lines for ``names`` from ``path`` (else ``default``)."""
    try:
        with open(path, "rb") as handle:
            lines = [
                line
                for line in handle.read().splitlines(keepends=True)
                if line.split(b":", 1)[0].decode(errors="replace") in names
            ]
    except OSError:
        return default
    return b"".join(lines) if lines else default


def _libc_has_builtin_nss(libc: str) -> bool:
    with open(libc, "rb") as handle:
        return b"_nss_files_getpwnam_r" in handle.read()


# --- laying it out -----------------------------------------------------------------------------------------


def _materialize(plan: _Plan, root: str, options: BundleOptions) -> list[BundleFile]:
    from .slim import slim_with

    files: list[BundleFile] = []
    for path in sorted(plan.entries):
        entry = plan.entries[path]
        inside = os.path.join(root, path.lstrip("/"))
        os.makedirs(os.path.dirname(inside), 0o755, exist_ok=True)
        if entry.kind == "dir":
            os.makedirs(inside, 0o755, exist_ok=True)
            continue
        reasons = tuple(entry.reasons) or ("on the path to another entry",)
        if entry.kind == "symlink":
            assert entry.link_target is not None
            os.symlink(entry.link_target, inside)
            files.append(BundleFile(path, "symlink", entry.source, entry.link_target, 0, 0, "link", reasons))
            continue
        if entry.kind == "generated":
            assert entry.content is not None
            with open(inside, "wb") as handle:
                handle.write(entry.content)
            os.chmod(inside, 0o644)
            size = len(entry.content)
            files.append(BundleFile(path, "file", None, None, 0, size, "generated", reasons))
            continue
        assert entry.source is not None
        before = os.path.getsize(entry.source)
        action = "copied"
        if _is_elf(entry.source):
            packing = options.upx and entry.executable
            level = "all" if options.keep_section_headers else "sections"
            slim_options = SlimOptions(
                level=level, force=True, verify=False, upx=packing, runner=options.runner
            )
            result = slim_with(entry.source, inside, slim_options)
            action = (
                "packed"
                if result.packed_size is not None
                else ("stripped" if result.stripped_size < before else "already stripped")
            )
        else:
            shutil.copyfile(entry.source, inside)
            os.chmod(inside, stat.S_IMODE(os.stat(entry.source).st_mode))
        files.append(
            BundleFile(path, "file", entry.source, None, before, os.path.getsize(inside), action, reasons)
        )
    return files


def _root_cache(
    deps: Sequence[ProgramDeps], config: SearchConfig, root: str, options: BundleOptions
) -> list[BundleFile]:
    """An /etc/ld.so.cache for the root when a library was found through the host's cache in a folder the
    loader does not search by default (/usr/local/lib, a CUDA folder): without it the loader would not find
    it there. ldconfig writes it from a temporary ld.so.conf in the root, which is removed afterwards."""
    defaults = {os.path.normpath(d) for d in config.default_dirs}
    extra = sorted(
        {
            os.path.dirname(obj.path)
            for program_deps in deps
            for obj in program_deps.objects
            if obj.found_via == "ld.so.cache" and os.path.normpath(os.path.dirname(obj.path)) not in defaults
        }
    )
    if not extra:
        return []
    ldconfig = shutil.which("ldconfig") or next(
        (p for p in ("/sbin/ldconfig", "/usr/sbin/ldconfig") if os.path.exists(p)), None
    )
    if ldconfig is None:
        raise ToolNotFoundError(f"ldconfig not found: the root needs an ld.so.cache for {', '.join(extra)}")
    etc = os.path.join(root, "etc")
    os.makedirs(etc, 0o755, exist_ok=True)
    conf = os.path.join(etc, "ld.so.conf")
    with open(conf, "w", encoding="utf-8") as handle:
        handle.write("".join(folder + "\n" for folder in extra))
    try:
        # -X: leave the SONAME links as they were copied; -r: read and write inside the root.
        run([ldconfig, "-X", "-r", root], timeout=120.0, check=True)
    finally:
        os.remove(conf)
    cache = os.path.join(etc, "ld.so.cache")
    reason = f"the loader finds libraries in {', '.join(extra)} only through it"
    return [
        BundleFile("/etc/ld.so.cache", "file", None, None, 0, os.path.getsize(cache), "generated", (reason,))
    ]


def _is_elf(path: str) -> bool:
    with open(path, "rb") as handle:
        return handle.read(4) == b"\x7fELF"


def _write_tar(root: str, target: str, mtime: int) -> None:
    """A tar of ``root`` whose bytes depend only on its contents: sorted entries, owner 0:0 without names,
    every time ``mtime``."""
    paths: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in dirnames + filenames:
            paths.append(os.path.join(dirpath, name))
    with open(target, "wb") as raw, tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for path in sorted(paths, key=lambda p: os.path.relpath(p, root)):
            info = tar.gettarinfo(path, arcname=os.path.relpath(path, root))
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = mtime
            info.mode = stat.S_IMODE(os.lstat(path).st_mode)
            if info.isreg():
                with open(path, "rb") as handle:
                    tar.addfile(info, handle)
            else:
                tar.addfile(info)


def _set_times(root: str, mtime: int) -> None:
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames + dirnames:
            os.utime(os.path.join(dirpath, name), (mtime, mtime), follow_symlinks=False)
    os.utime(root, (mtime, mtime))


# --- running inside the root -------------------------------------------------------------------------------


def _verify_in_root(program: str, root: str, options: BundleOptions) -> ProgramCheck:
    # The program's path as given works inside the root too: every symlink on the way was copied.
    in_root = os.path.abspath(program)
    # The mount points, only while the runs last.
    made = [
        path for path in (os.path.join(root, "proc"), os.path.join(root, "dev")) if not os.path.lexists(path)
    ]
    for path in made:
        os.mkdir(path, 0o755)
    try:
        return _compare_in_root(program, root, in_root, options)
    finally:
        for path in made:
            os.rmdir(path)


def _compare_in_root(program: str, root: str, in_root: str, options: BundleOptions) -> ProgramCheck:
    """As the verifier compares (binslim.verifier): the original twice (it must not vary), the root side once,
    then ABBA timed rounds in which every run is compared with the original's first."""
    from .verification import compare
    from .verification.measure import NotMeasured, RunDiffers, against_first_run, measure

    method, launcher = _launcher(root, in_root)
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C", "HOME": "/", **(options.verify_env or {})}
    # Locked while in use, so one a SIGKILL left is swept by a later run (as the verifier's are); the runs
    # get a folder of their own in it, without the lock file.
    with fileops.scratch_dir("binslim-bundle-run-") as base:
        scratch = os.path.join(base, "run")
        os.mkdir(scratch, 0o700)
        # The timed rounds use the plain arguments, also with --verify-cmd (as the verifier does).
        timed = ([os.path.abspath(program), *options.verify_args], [*launcher, *options.verify_args])
        compared = timed
        if options.verify_cmd is not None:
            wrapper = _wrapper_script(scratch, launcher)
            script = os.path.abspath(options.verify_cmd)
            compared = ([script, os.path.abspath(program)], [script, wrapper])

        def once(argv: Sequence[str], measure_rss: bool = False) -> Completed:
            return options.runner(
                list(argv),
                timeout=options.verify_timeout,
                cwd=scratch,
                env=env,
                isolate=True,
                measure_rss=measure_rss,
            )

        def ran(same: bool | None, reason: str, **timing: Any) -> ProgramCheck:
            return ProgramCheck(program, in_root, method, True, same, reason, **timing)

        try:
            before, again = once(compared[0]), once(compared[0])
        except BinslimError as exc:
            return ProgramCheck(program, in_root, method, False, None, f"the original cannot be run: {exc}")
        variation = compare.difference(before, again, options.verify_timeout, ("first run", "second run"))
        if variation is not None:
            reason = compare.varies(f"first→second run: {variation}", options.verify_cmd)
            return ran(None, reason, original_varies=True)
        if before.returncode == 127 and b"error while loading shared libraries" in before.stderr:
            # Nothing to compare with: the original stops in the loader (LD_LIBRARY_PATH in verify_env helps).
            loader_error = before.stderr.decode("utf-8", "replace").strip().splitlines()[0]
            reason = f"the original cannot load its libraries here ({loader_error})"
            return ProgramCheck(program, in_root, method, False, None, reason)
        differs = compare.difference(before, once(compared[1]), options.verify_timeout, ("original", "root"))
        if differs is not None:
            return ran(False, differs)
        same = compare.describe_same(before)
        if before.timed_out or options.verify_runs < 1:
            return ran(True, same)
        # With --verify-cmd the timed runs use the plain arguments: their reference is the first warm-up.
        reference = before if options.verify_cmd is None else None
        check = against_first_run(reference, ("original", "root"), timeout=options.verify_timeout)
        try:
            (host, inside), added = measure(
                lambda side, rss: once(timed[side], rss), [0, 1], runs=options.verify_runs, check=check
            )
        except NotMeasured as exc:
            return ran(True, f"{same}; startup not measured: {exc}")
        except RunDiffers as run_differs:
            if run_differs.side == 0:
                return ran(None, run_differs.detail, original_varies=True)
            return ran(False, run_differs.detail)
    return ran(True, same, original=host, root=inside, added=added)


def _launcher(root: str, in_root: str) -> tuple[str, list[str]]:
    """How to run ``in_root`` with ``root`` as its whole filesystem: chroot as root, else a user namespace,
    else the root's own loader told to look only inside it.

    Container engines give a program /proc and /dev, and programs need them: the loader finds the program's
    $ORIGIN through /proc/self/exe, git opens /dev/null. So the chroot runs in its own mount and PID
    namespaces (unshare), with proc mounted on the root's /proc and the host's /dev bound on its /dev, all
    gone when the run ends; plain chroot(8) only where there is no unshare."""
    unshare = shutil.which("unshare", path=_SYSTEM_PATH)
    command = in_root_command(root, in_root)
    isolated = ["--mount", "--pid", "--fork", *(command or [])]
    if os.geteuid() == 0:
        # Root in a container (a docker build's RUN) may not create namespaces, but may still chroot.
        if unshare and command and _namespaces_work(unshare):
            return "chroot", [unshare, *isolated]
        if shutil.which("chroot"):
            return "chroot", [shutil.which("chroot") or "chroot", root, in_root]
    if unshare and command and _userns_works(unshare):
        return "user namespace", [unshare, "--map-root-user", *isolated]
    interp = read_dynamic(os.path.join(root, in_root.lstrip("/"))).interpreter
    if interp is None:
        return "direct", [os.path.join(root, in_root.lstrip("/"))]
    dirs = sorted({os.path.dirname(os.path.join(root, p.lstrip("/"))) for p in _libraries_in(root)})
    return "loader", [
        os.path.join(root, interp.lstrip("/")),
        "--inhibit-cache",
        "--library-path",
        ":".join(dirs),
        os.path.join(root, in_root.lstrip("/")),
    ]


def _libraries_in(root: str) -> list[str]:
    found = []
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            if ".so" in name:
                found.append(os.path.relpath(os.path.join(dirpath, name), root))
    return found


def _namespaces_work(unshare: str) -> bool:
    try:
        return run([unshare, "--mount", "--pid", "--fork", "true"], timeout=10.0).returncode == 0
    except BinslimError:
        return False


def _userns_works(unshare: str) -> bool:
    try:
        return run([unshare, "--map-root-user", "true"], timeout=10.0).returncode == 0
    except BinslimError:
        return False


def _wrapper_script(folder: str, launcher: Sequence[str]) -> str:
    """A launcher a --verify-cmd script can run like the program: it runs it inside the root."""
    import shlex

    path = os.path.join(folder, "in-root")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("#!/bin/sh\nexec " + " ".join(shlex.quote(part) for part in launcher) + ' "$@"\n')
    os.chmod(path, 0o755)
    return path


# --- the report --------------------------------------------------------------------------------------------


def render_text(result: BundleResult) -> str:
    lines = [
        f"{result.output}: root for {', '.join(map(os.path.basename, result.programs))} ({result.format})"
    ]
    for f in result.files:
        why = "; ".join(f.reasons)
        if f.kind == "symlink":
            lines.append(f"  {f.path} -> {f.link_target}  ({why})")
        elif f.action == "generated":
            lines.append(f"  {f.path}  {f.size_after:,} B, generated  ({why})")
        else:
            lines.append(f"  {f.path}  {f.size_before:,} B -> {f.size_after:,} B, {f.action}  ({why})")
    lines.append(
        f"total {result.total_bytes:,} B in {sum(1 for f in result.files if f.kind == 'file')} files"
        f" (from {result.original_bytes:,} B on the host)"
        + (f"; tar {result.output_bytes:,} B" if result.format == "tar" else "")
    )
    for check in result.checks:
        state = "same" if check.same_behaviour else ("not run" if not check.ran else "DIFFERENT")
        timing = ""
        if check.original is not None and check.root is not None and check.added is not None:
            timing = (
                f"; startup {check.original.median_ms:.2f} ms on the host, {check.root.median_ms:.2f} ms in"
                f" the root, added {check.added.describe()}"
            )
        lines.append(
            f"verify {os.path.basename(check.program)} ({check.method}): {state}: {check.reason}{timing}"
        )
    lines.extend(f"note: {note}" for note in result.notes)
    # Paths and program names come from the file system: one entry stays one line, and no escape reaches
    # the terminal.
    return "\n".join(map(printable, lines))


def to_json_bytes(result: BundleResult) -> bytes:
    import json

    buffer = io.StringIO()
    json.dump({**result.to_dict(), "binslim": _version()}, buffer, indent=2, sort_keys=False)
    return buffer.getvalue().encode()


def _version() -> str:
    from ._version import __version__

    return __version__
