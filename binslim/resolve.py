"""Which files the dynamic loader maps for a program, found the way glibc's ld.so finds them (elf/dl-load.c),
without running the program or ldd.

For each program: its PT_INTERP, then its DT_NEEDED entries breadth first, each name looked up in order in
- the DT_RPATH of the object that needs it and of the objects that loaded that one, up to the program (only
  when the needing object has no DT_RUNPATH),
- LD_LIBRARY_PATH (only when the caller passes ``library_path``),
- the needing object's own DT_RUNPATH,
- /etc/ld.so.cache (unless the needing object has DF_1_NODEFLIB),
- the default folders (multiarch first on Debian), unless DF_1_NODEFLIB;
every folder also through its glibc-hwcaps subfolders the CPU supports, best first. A name already loaded
(by the name it was asked for or by its SONAME) is not looked up again. A candidate of the wrong class or
machine is skipped, as the loader skips it. $ORIGIN, $LIB and $PLATFORM are expanded in the search paths
and in names with a slash.

Not modelled: legacy hwcap subfolders (tls/, x86_64/; removed in glibc 2.37), LD_PRELOAD and
/etc/ld.so.preload, and secure-mode (setuid) restrictions.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .elf import constants as c
from .elf.dynamic import DynamicInfo, read_dynamic
from .elf.ldcache import CACHE_PATH, LdCache, expected_flags, read_cache
from .errors import BinslimError, MalformedELFError, NotELFError

# Debian's multiarch triplets, by (e_machine, 64-bit).
_TRIPLETS: dict[tuple[int, bool], str] = {
    (c.EM_X86_64, True): "x86_64-linux-gnu",
    (c.EM_X86_64, False): "x86_64-linux-gnux32",
    (c.EM_386, False): "i386-linux-gnu",
    (c.EM_AARCH64, True): "aarch64-linux-gnu",
    (c.EM_ARM, False): "arm-linux-gnueabihf",
    (c.EM_PPC64, True): "powerpc64le-linux-gnu",
    (c.EM_S390, True): "s390x-linux-gnu",
    (c.EM_RISCV, True): "riscv64-linux-gnu",
    (c.EM_MIPS, False): "mipsel-linux-gnu",
    (c.EM_MIPS, True): "mips64el-linux-gnuabi64",
    (c.EM_LOONGARCH, True): "loongarch64-linux-gnu",
}
# glibc's loader paths, for a library resolved on its own.
_DEFAULT_INTERPRETERS: dict[tuple[int, bool], str] = {
    (c.EM_X86_64, True): "/lib64/ld-linux-x86-64.so.2",
    (c.EM_X86_64, False): "/libx32/ld-linux-x32.so.2",
    (c.EM_386, False): "/lib/ld-linux.so.2",
    (c.EM_AARCH64, True): "/lib/ld-linux-aarch64.so.1",
    (c.EM_ARM, False): "/lib/ld-linux-armhf.so.3",
    (c.EM_PPC64, True): "/lib64/ld64.so.2",
    (c.EM_S390, True): "/lib/ld64.so.1",
    (c.EM_RISCV, True): "/lib/ld-linux-riscv64-lp64d.so.1",
}
# AT_PLATFORM as the kernel gives it, for $PLATFORM.
_PLATFORMS: dict[tuple[int, bool], str] = {
    (c.EM_X86_64, True): "x86_64",
    (c.EM_386, False): "i686",
    (c.EM_AARCH64, True): "aarch64",
    (c.EM_ARM, False): "v7l",
    (c.EM_PPC64, True): "power8",
    (c.EM_S390, True): "z900",
    (c.EM_RISCV, True): "riscv64",
}
# glibc-hwcaps subfolders for x86-64 and the CPU flags (as /proc/cpuinfo names them) each level needs.
_X86_64_LEVELS = (
    ("x86-64-v4", ("avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl")),
    ("x86-64-v3", ("avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave")),
    ("x86-64-v2", ("cx16", "lahf_lm", "popcnt", "sse4_1", "sse4_2", "ssse3")),
)
# Folders of one search path named in a "not found" error; the rest are counted.
_FOLDERS_SHOWN = 4
_DST = re.compile(r"\$(\{(ORIGIN|LIB|PLATFORM)\}|(ORIGIN|LIB|PLATFORM)(?![A-Za-z0-9_]))")


class MissingLibraryError(BinslimError):
    """A DT_NEEDED library is found nowhere the loader looks."""


@dataclass(frozen=True)
class LoadedObject:
    """One file the loader maps for a program."""

    path: str  # the path the loader opens, as ldd prints it (symlinks not resolved)
    name: str  # the name it was asked for: the DT_NEEDED string, or the PT_INTERP path
    needed_by: tuple[str, ...]  # display names (SONAME, else file name) of the objects that need it
    # "PT_INTERP", "DT_RPATH", "LD_LIBRARY_PATH", "DT_RUNPATH", "ld.so.cache", "default folder" or "path"
    found_via: str
    soname: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "name": self.name,
            "needed_by": list(self.needed_by),
            "found_via": self.found_via,
            "soname": self.soname,
        }


@dataclass(frozen=True)
class ProgramDeps:
    """The objects the loader maps for ``program``, in load order (the interpreter first)."""

    program: str
    interpreter: str | None
    objects: tuple[LoadedObject, ...]
    imported: frozenset[str]  # undefined dynamic symbols of the program and all its objects

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(obj.path for obj in self.objects)


@dataclass(frozen=True)
class SearchConfig:
    """Where the loader looks, for one machine and class. Build with ``search_config``."""

    e_machine: int
    is64: bool
    cache: LdCache | None
    default_dirs: tuple[str, ...]
    hwcaps: tuple[str, ...]  # glibc-hwcaps subfolders the CPU supports, best first
    lib: str  # what $LIB expands to
    platform: str  # what $PLATFORM expands to
    library_path: tuple[str, ...] = ()  # LD_LIBRARY_PATH, when asked for
    cache_flags: int = field(default=0)


def search_config(
    e_machine: int,
    is64: bool,
    *,
    e_flags: int = 0,
    library_path: Sequence[str] = (),
    cache_path: str = CACHE_PATH,
    root: str = "/",
) -> SearchConfig:
    """The loader's search setup on this machine (``root`` is where its folders are looked at) for objects of
    this machine and class."""
    triplet = _TRIPLETS.get((e_machine, is64))
    multiarch = triplet is not None and os.path.isdir(os.path.join(root, "usr/lib", triplet))
    if multiarch:
        default_dirs: tuple[str, ...] = (f"/lib/{triplet}", f"/usr/lib/{triplet}", "/lib", "/usr/lib")
        lib = f"lib/{triplet}"
    elif is64 and e_machine in (c.EM_X86_64, c.EM_PPC64, c.EM_S390, c.EM_AARCH64):
        default_dirs, lib = ("/lib64", "/usr/lib64"), "lib64"
    else:
        default_dirs, lib = ("/lib", "/usr/lib"), "lib"
    cache = read_cache(os.path.join(root, cache_path.lstrip("/")))
    hwcaps = _x86_64_levels() if (e_machine, is64) == (c.EM_X86_64, True) else ()
    return SearchConfig(
        e_machine=e_machine,
        is64=is64,
        cache=cache,
        default_dirs=default_dirs,
        hwcaps=hwcaps,
        lib=lib,
        platform=_PLATFORMS.get((e_machine, is64), os.uname().machine),
        library_path=tuple(library_path),
        cache_flags=expected_flags(e_machine, is64, e_flags),
    )


@functools.cache
def _x86_64_levels() -> tuple[str, ...]:
    """The x86-64 levels this CPU supports, best first (what ld.so --help calls "supported")."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            flags_line = next((line for line in handle if line.startswith("flags")), "")
    except OSError:
        return ()
    flags = set(flags_line.partition(":")[2].split())
    levels = []
    for name, needs in reversed(_X86_64_LEVELS):
        if not flags.issuperset(needs):
            break
        levels.append(name)
    return tuple(reversed(levels))


class _Object:
    """A mapped object during resolution: its facts, the names it answers to, who loaded it, how it was found
    and who needs it."""

    def __init__(
        self,
        path: str,
        info: DynamicInfo,
        loader: _Object | None,
        origin: str,
        *,
        asked_as: str = "",
        found_via: str = "",
    ) -> None:
        self.path = path
        self.info = info
        self.loader = loader
        self.origin = origin
        self.asked_as = asked_as  # the DT_NEEDED string or PT_INTERP path it was asked for
        self.found_via = found_via
        self.needed_by: list[str] = []
        self.names: set[str] = set()
        if info.soname:
            self.names.add(info.soname)

    @property
    def display(self) -> str:
        return self.info.soname or os.path.basename(self.path)


def resolve(
    program: str | os.PathLike[str], config: SearchConfig | None = None, *, interpreter: str | None = None
) -> ProgramDeps:
    """The objects the loader maps for ``program``. MissingLibraryError names the first library found
    nowhere; a static program has none. ``config`` defaults to this machine's setup for the program's
    machine and class. For a shared library, ``interpreter`` is the loader of the program it goes into
    (default: glibc's usual one for its machine)."""
    program = os.fspath(program)
    main_info = read_dynamic(program)
    if config is None:
        config = search_config(main_info.e_machine, main_info.is64)
    # The loader takes the program's origin from /proc/self/exe, which has every symlink resolved.
    main = _Object(program, main_info, None, os.path.dirname(os.path.realpath(program)))
    interp = _map_interpreter(program, main_info, config, interpreter)
    loaded = [] if interp is None else [interp]
    _map_needed_closure(program, main, loaded, config)
    if loaded and main_info.interpreter is None and not loaded[0].needed_by:
        # A library whose closure never names the loader: ld.so leaves itself out of the list then.
        loaded.pop(0)
    imported = set(main_info.imported)
    for obj in loaded:
        imported |= obj.info.imported
    return ProgramDeps(
        program=program,
        interpreter=main_info.interpreter,
        objects=tuple(
            LoadedObject(
                path=obj.path,
                name=obj.asked_as,
                needed_by=tuple(obj.needed_by),
                found_via=obj.found_via,
                soname=obj.info.soname,
            )
            for obj in loaded
        ),
        imported=frozenset(imported),
    )


def _map_interpreter(
    program: str, main_info: DynamicInfo, config: SearchConfig, interpreter: str | None
) -> _Object | None:
    """The loader itself, mapped first; None for a static program."""
    interp_path = main_info.interpreter
    if interp_path is None and main_info.e_type == c.ET_DYN and main_info.needed:
        # A library is loaded into a program, whose interpreter is then already mapped (and answers to its
        # SONAME, as in a DT_NEEDED on ld-linux-x86-64.so.2).
        interp_path = interpreter or _DEFAULT_INTERPRETERS.get((main_info.e_machine, main_info.is64))
    if not interp_path:
        if main_info.needed and main_info.e_type == c.ET_EXEC:
            raise MissingLibraryError(f"{program}: needs shared libraries but has no interpreter (PT_INTERP)")
        return None
    interp_info = _read_candidate(interp_path, config, must_match=False)
    if interp_info is None:
        raise MissingLibraryError(f"{program}: its interpreter {interp_path} does not exist")
    interp = _Object(
        interp_path,
        interp_info,
        None,
        os.path.dirname(interp_path),
        asked_as=interp_path,
        found_via="PT_INTERP",
    )
    interp.names.add(interp_path)
    if main_info.interpreter:
        interp.needed_by.append(os.path.basename(program))
    return interp


def _map_needed_closure(program: str, main: _Object, loaded: list[_Object], config: SearchConfig) -> None:
    """Map the DT_NEEDED entries of ``main`` and of what they bring in, breadth first, appending each new
    object to ``loaded`` and noting who needs which."""
    queue = [main]
    while queue:
        obj = queue.pop(0)
        for name in obj.info.needed:
            dep = next((other for other in loaded if name in other.names), None)
            if dep is None:
                dep = _map_needed(program, obj, main, name, config)
                loaded.append(dep)
                queue.append(dep)
            dep.names.add(name)
            who = os.path.basename(program) if obj is main else obj.display
            if who not in dep.needed_by:
                dep.needed_by.append(who)


def _map_needed(program: str, loader: _Object, main: _Object, name: str, config: SearchConfig) -> _Object:
    """The object the loader maps for ``name``, a DT_NEEDED entry of ``loader``, or MissingLibraryError."""
    mapped = _map_object(loader, main, name, config)
    if mapped is None:
        where = "no such file" if "/" in name else "searched " + ", ".join(_searched(loader, main, config))
        raise MissingLibraryError(f"{program}: {name} (needed by {loader.display}) not found ({where})")
    path, info, via = mapped
    return _Object(path, info, loader, os.path.dirname(path), asked_as=name, found_via=via)


def _map_object(
    loader: _Object, main: _Object, name: str, config: SearchConfig
) -> tuple[str, DynamicInfo, str] | None:
    """(path, facts, how it was found) for ``name`` needed by ``loader``, or None."""
    if "/" in name:
        path = _expand(name, loader, config)
        info = _read_candidate(path, config)
        return None if info is None else (path, info, "path")
    for via, dirs in _search_list(loader, main, config):
        if via == "ld.so.cache":
            cached = config.cache.lookup(name, config.cache_flags, config.hwcaps) if config.cache else None
            if cached is not None:
                info = _read_candidate(cached, config)
                if info is not None:
                    return cached, info, via
            continue
        for folder in dirs:
            for sub in (*(f"glibc-hwcaps/{level}" for level in config.hwcaps), ""):
                path = _join(folder, sub, name)
                info = _read_candidate(path, config)
                if info is not None:
                    return path, info, via
    return None


def _search_list(loader: _Object, main: _Object, config: SearchConfig) -> list[tuple[str, tuple[str, ...]]]:
    order: list[tuple[str, tuple[str, ...]]] = []
    if not loader.info.has_runpath:
        chain: _Object | None = loader
        while chain is not None:
            if chain.info.rpath and not (chain is main and main.info.has_runpath):
                order.append(("DT_RPATH", tuple(_expand(d, chain, config) for d in chain.info.rpath)))
            chain = chain.loader
    if config.library_path:
        order.append(("LD_LIBRARY_PATH", tuple(_expand(d, main, config) for d in config.library_path)))
    if loader.info.runpath:
        order.append(("DT_RUNPATH", tuple(_expand(d, loader, config) for d in loader.info.runpath)))
    if not loader.info.nodeflib:
        order.append(("ld.so.cache", ()))
        order.append(("default folder", config.default_dirs))
    return order


def _searched(loader: _Object, main: _Object, config: SearchConfig) -> list[str]:
    """Where the loader looked, for the "not found" error: each source with its first folders, so that a
    search path of thousands of folders still makes a line one can read."""
    shown = []
    for via, dirs in _search_list(loader, main, config):
        if not dirs:
            shown.append(via)
            continue
        text = ":".join(dirs[:_FOLDERS_SHOWN])
        if len(dirs) > _FOLDERS_SHOWN:
            text += f":... ({len(dirs) - _FOLDERS_SHOWN} more)"
        shown.append(f"{via} {text}")
    return shown


def _expand(text: str, obj: _Object, config: SearchConfig) -> str:
    def substitute(match: re.Match[str]) -> str:
        token = match.group(2) or match.group(3)
        if token == "ORIGIN":
            return obj.origin
        return config.lib if token == "LIB" else config.platform

    # An empty search-path entry means the current folder, as in glibc's fillin_rpath.
    return _DST.sub(substitute, text) or "."


def _join(folder: str, sub: str, name: str) -> str:
    return f"{folder.rstrip('/')}/{sub + '/' if sub else ''}{name}"


def _read_candidate(path: str, config: SearchConfig, *, must_match: bool = True) -> DynamicInfo | None:
    """The facts of ``path`` when the loader would accept it: an ELF file of the right class and machine."""
    try:
        info = read_dynamic(path)
    except (NotELFError, MalformedELFError):
        return None
    except BinslimError:
        return None  # missing or unreadable: the loader goes on to the next folder
    if must_match and (info.e_machine != config.e_machine or info.is64 != config.is64):
        return None
    if info.e_type not in (c.ET_DYN, c.ET_EXEC):
        return None
    return info
