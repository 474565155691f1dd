"""The dependency resolver and the ld.so.cache parser, with ldd as the oracle: for the same program the
resolved set of files must be exactly what ldd reports on this machine."""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from binslim.elf import constants as c
from binslim.elf.dynamic import read_dynamic
from binslim.elf.ldcache import (
    FLAG_ELF_LIBC6,
    FLAG_X8664_LIB64,
    HWCAP_EXTENSION_TAG,
    parse_cache,
    read_cache,
)
from binslim.errors import MalformedELFError
from binslim.resolve import MissingLibraryError, resolve, search_config
from testdata.build import Fixture
from tests.helpers import FIXTURE_DIR, require_tool

X86_64_FLAGS = FLAG_ELF_LIBC6 | FLAG_X8664_LIB64
# Debian programs scripts/install.sh --test installs (jq, sqlite3) and the Python running the tests.
REAL_PROGRAMS = ("/usr/bin/jq", "/usr/bin/sqlite3", os.path.realpath(sys.executable))
FIXTURE_PROGRAMS = ("hello-c-pie", "hello-cxx", "hello-rust", "usegreet")


def ldd_paths(path: str, env: dict[str, str] | None = None) -> set[str]:
    """The files ldd says the loader maps for ``path`` (the vDSO left out)."""
    out = subprocess.run(
        [require_tool("ldd"), path], capture_output=True, text=True, timeout=60, env=env, check=True
    ).stdout
    assert "not found" not in out, out
    paths = set()
    for line in out.splitlines():
        arrow = re.match(r"\s*\S+ => (\S+) \(0x", line)
        bare = re.match(r"\s*(/\S+) \(0x", line)
        if arrow:
            paths.add(arrow.group(1))
        elif bare:
            paths.add(bare.group(1))
    return paths


@pytest.mark.parametrize("program", REAL_PROGRAMS)
def test_real_programs_resolve_as_ldd_does(program: str) -> None:
    if not os.path.exists(program):
        require_tool(os.path.basename(program))
    assert set(resolve(program).paths) == ldd_paths(program)


@pytest.mark.parametrize("name", FIXTURE_PROGRAMS)
def test_fixtures_resolve_as_ldd_does(fixtures: dict[str, Fixture], name: str) -> None:
    path = os.path.realpath(fixtures[name].path)
    deps = resolve(path)
    assert set(deps.paths) == ldd_paths(path)
    assert deps.objects[0].found_via == "PT_INTERP"


def test_origin_runpath_finds_the_private_library(fixtures: dict[str, Fixture]) -> None:
    path = os.path.realpath(fixtures["usegreet"].path)
    greet = next(o for o in resolve(path).objects if o.name == "libgreet.so")
    assert greet.found_via == "DT_RUNPATH"
    assert greet.path == os.path.join(os.path.dirname(path), "libgreet.so")
    assert greet.needed_by == ("usegreet",)


def test_every_usr_bin_program_resolves_as_ldd_does() -> None:
    """A sweep of the first 80 dynamically linked programs in /usr/bin (not symlinks: ldd takes $ORIGIN
    from the path it is given, the kernel from the real file)."""
    checked = 0
    for entry in sorted(os.scandir("/usr/bin"), key=lambda e: e.name):
        if checked == 80:
            break
        if entry.is_symlink() or not entry.is_file():
            continue
        with open(entry.path, "rb") as handle:
            if handle.read(4) != b"\x7fELF":
                continue
        info = read_dynamic(entry.path)
        if not info.interpreter:
            continue
        done = subprocess.run(["ldd", entry.path], capture_output=True, text=True, timeout=60, check=False)
        if done.returncode != 0 or "not found" in done.stdout:
            continue
        assert set(resolve(entry.path).paths) == ldd_paths(entry.path), entry.path
        checked += 1
    assert checked >= 20


def _build(tmp_path: Path, name: str, *flags: str) -> str:
    gcc = require_tool("gcc")
    out = tmp_path / name
    subprocess.run(
        [gcc, "-O1", f"-I{Path(__file__).parent.parent / 'testdata' / 'c'}", "-o", str(out),
         str(Path(__file__).parent.parent / "testdata" / "c" / "usegreet.c"),
         f"-L{FIXTURE_DIR}", "-lgreet", *flags],
        check=True, timeout=120, capture_output=True,
    )  # fmt: skip
    return str(out)


@pytest.mark.parametrize(
    ("rpath", "place", "dtags"),
    [
        ("$ORIGIN/../$LIB", "../{lib}", "--enable-new-dtags"),
        ("${ORIGIN}/$PLATFORM", "{platform}", "--enable-new-dtags"),
        ("$ORIGIN/rp", "rp", "--disable-new-dtags"),
    ],
)
def test_dynamic_string_tokens_and_rpath(
    fixtures: dict[str, Fixture], tmp_path: Path, rpath: str, place: str, dtags: str
) -> None:
    config = search_config(c.EM_X86_64, True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    program = _build(bin_dir, "usegreet", f"-Wl,{dtags},-rpath,{rpath}")
    lib_dir = (bin_dir / place.format(lib=config.lib, platform=config.platform)).resolve()
    lib_dir.mkdir(parents=True)
    shutil.copy(fixtures["libgreet"].path, lib_dir / "libgreet.so")
    deps = resolve(program)
    greet = next(o for o in deps.objects if o.name == "libgreet.so")
    assert greet.found_via == ("DT_RPATH" if "disable" in dtags else "DT_RUNPATH")
    assert set(deps.paths) == ldd_paths(program)


@pytest.mark.parametrize("impostor", ["hello-go-arm64", "hello-c-i386"])
def test_wrong_machine_or_class_candidate_is_skipped(
    fixtures: dict[str, Fixture], tmp_path: Path, impostor: str
) -> None:
    """An aarch64 or 32-bit file named like the library, first on the path, is passed over as the loader
    passes it over."""
    if impostor not in fixtures:
        pytest.skip(f"{impostor} is an optional fixture that did not build here")
    wrong, right = tmp_path / "wrong", tmp_path / "right"
    wrong.mkdir()
    right.mkdir()
    program = _build(tmp_path, "usegreet-plain")
    shutil.copy(fixtures[impostor].path, wrong / "libgreet.so")
    shutil.copy(fixtures["libgreet"].path, right / "libgreet.so")
    config = search_config(c.EM_X86_64, True, library_path=(str(wrong), str(right)))
    deps = resolve(program, config)
    greet = next(o for o in deps.objects if o.name == "libgreet.so")
    assert greet.path == str(right / "libgreet.so")
    assert greet.found_via == "LD_LIBRARY_PATH"
    env = {**os.environ, "LD_LIBRARY_PATH": f"{wrong}:{right}"}
    assert set(deps.paths) == ldd_paths(program, env)


def test_library_path_is_used_only_when_given(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    program = _build(tmp_path, "usegreet-plain")
    with pytest.raises(MissingLibraryError, match=r"libgreet\.so \(needed by usegreet-plain\) not found"):
        resolve(program)
    config = search_config(c.EM_X86_64, True, library_path=(str(FIXTURE_DIR),))
    assert str(FIXTURE_DIR / "libgreet.so") in resolve(program, config).paths


def test_a_huge_search_path_makes_a_short_not_found_error(tmp_path: Path) -> None:
    """A library missing behind a 5,000-folder LD_LIBRARY_PATH: the error names the first folders and counts
    the rest (it was one 130 KB line)."""
    program = _build(tmp_path, "usegreet-plain")
    folders = tuple(str(tmp_path / f"lib{index:04}") for index in range(5000))
    config = search_config(c.EM_X86_64, True, library_path=folders)
    with pytest.raises(MissingLibraryError) as raised:
        resolve(program, config)
    message = str(raised.value)
    assert f"LD_LIBRARY_PATH {':'.join(folders[:4])}:... (4996 more)" in message
    assert "\n" not in message and len(message) < 1000


# --- ld.so.cache ------------------------------------------------------------------------------------------


def test_system_cache_agrees_with_ldd() -> None:
    cache = read_cache()
    assert cache is not None and cache.format in ("new", "old+new")
    libc = next(p for p in ldd_paths("/usr/bin/jq") if p.endswith("/libc.so.6"))
    assert cache.lookup("libc.so.6", X86_64_FLAGS) == libc
    assert cache.lookup("libc.so.6", FLAG_ELF_LIBC6) != libc  # i386 flags: never the x86_64 one
    assert cache.lookup("no-such-library.so.1", X86_64_FLAGS) is None


def _new_cache(entries: list[tuple[str, str, int, int]], hwcaps: list[str]) -> bytes:
    """A new-format cache as ldconfig writes it: header, entries, strings, and a glibc-hwcaps extension.
    String offsets count from the start of the new header."""
    strings = bytearray()
    header_size, entry_size = 48, 24
    strings_at = header_size + entry_size * len(entries)
    offsets: dict[str, int] = {}

    def intern(text: str) -> int:
        if text not in offsets:
            offsets[text] = strings_at + len(strings)
            strings.extend(text.encode() + b"\0")
        return offsets[text]

    packed = b"".join(
        struct.pack("<iIIIQ", flags, intern(name), intern(path), 0, hwcap)
        for name, path, flags, hwcap in entries
    )
    hwcap_offsets = [intern(name) for name in hwcaps]
    while (strings_at + len(strings)) % 4:
        strings.append(0)
    ext_at = strings_at + len(strings)
    section_at = ext_at + 8 + 16
    extension = struct.pack("<II", 0xEAA42174, 1) + struct.pack("<IIII", 1, 0, section_at, 4 * len(hwcaps))
    extension += struct.pack(f"<{len(hwcaps)}I", *hwcap_offsets)
    header = b"glibc-ld.so.cache1.1" + struct.pack("<IIB3xI12x", len(entries), len(strings), 2, ext_at)
    assert len(header) == header_size
    return header + packed + bytes(strings) + extension


def test_new_format_prefers_the_best_supported_glibc_hwcaps() -> None:
    data = _new_cache(
        [
            (
                "libfoo.so.1",
                "/usr/lib/glibc-hwcaps/x86-64-v3/libfoo.so.1",
                X86_64_FLAGS,
                HWCAP_EXTENSION_TAG | 1,
            ),
            (
                "libfoo.so.1",
                "/usr/lib/glibc-hwcaps/x86-64-v2/libfoo.so.1",
                X86_64_FLAGS,
                HWCAP_EXTENSION_TAG | 0,
            ),
            ("libfoo.so.1", "/usr/lib/libfoo.so.1", X86_64_FLAGS, 0),
        ],
        ["x86-64-v2", "x86-64-v3"],
    )
    cache = parse_cache(data, "test-cache")
    assert cache.format == "new"
    assert [e.hwcaps_subdir for e in cache.entries] == ["x86-64-v3", "x86-64-v2", None]
    assert cache.lookup("libfoo.so.1", X86_64_FLAGS) == "/usr/lib/libfoo.so.1"
    assert (
        cache.lookup("libfoo.so.1", X86_64_FLAGS, ("x86-64-v2",))
        == "/usr/lib/glibc-hwcaps/x86-64-v2/libfoo.so.1"
    )
    v3 = ("x86-64-v4", "x86-64-v3", "x86-64-v2")
    assert cache.lookup("libfoo.so.1", X86_64_FLAGS, v3) == "/usr/lib/glibc-hwcaps/x86-64-v3/libfoo.so.1"


def test_old_format_and_old_plus_new() -> None:
    # Old format: magic, count, entries of (flags, key, value) with offsets from the string table's start.
    names = b"libold.so.2\0/lib/libold.so.2\0"
    old = b"ld.so-1.7.0" + struct.pack("=I", 1) + struct.pack("=iII", 1, 0, 12) + names
    cache = parse_cache(old, "old-cache")
    assert cache.format == "old"
    assert cache.lookup("libold.so.2", 1) == "/lib/libold.so.2"
    # glibc 2.2 to 2.31: the new table follows the old one at an 8-byte boundary, and wins.
    table = b"ld.so-1.7.0" + struct.pack("=I", 1) + struct.pack("=iII", 1, 0, 0)
    table += b"\0" * (-len(table) % 8)
    combined = table + _new_cache([("libnew.so.1", "/lib/libnew.so.1", X86_64_FLAGS, 0)], [])
    cache = parse_cache(combined, "combined-cache")
    assert cache.format == "old+new"
    assert cache.lookup("libnew.so.1", X86_64_FLAGS) == "/lib/libnew.so.1"


@pytest.mark.parametrize(
    "data",
    [b"", b"glibc-ld.so.cache1.1", b"ld.so-1.7.0\xff\xff\xff\x7f", b"something else entirely"],
)
def test_malformed_caches_are_refused(data: bytes) -> None:
    with pytest.raises(MalformedELFError):
        parse_cache(data, "bad-cache")


def test_missing_cache_is_none(tmp_path: Path) -> None:
    assert read_cache(tmp_path / "ld.so.cache") is None


def test_nodefaultlib_skips_the_cache_and_the_default_folders(
    fixtures: dict[str, Fixture], tmp_path: Path
) -> None:
    """-z nodefaultlib (DF_1_NODEFLIB): libc.so.6 is then found only through the search paths, as ldd
    agrees."""
    program = _build(tmp_path, "usegreet-nodeflib", "-Wl,-z,nodefaultlib", f"-Wl,-rpath,{FIXTURE_DIR}")
    assert read_dynamic(program).nodeflib
    with pytest.raises(MissingLibraryError, match=r"libc\.so\.6 \(needed by usegreet-nodeflib\) not found"):
        resolve(program)
    out = subprocess.run(["ldd", program], capture_output=True, text=True, timeout=60, check=False).stdout
    assert re.search(r"libc\.so\.6 => not found", out)
    libc_dir = os.path.dirname(next(p for p in ldd_paths("/usr/bin/jq") if p.endswith("/libc.so.6")))
    config = search_config(c.EM_X86_64, True, library_path=(libc_dir,))
    assert set(resolve(program, config).paths) == ldd_paths(
        program, {**os.environ, "LD_LIBRARY_PATH": libc_dir}
    )


def test_glibc_hwcaps_subfolders_of_a_search_path(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    """A library in $ORIGIN/glibc-hwcaps/x86-64-v2/ wins over the one in $ORIGIN when the CPU supports the
    level, as ldd shows."""
    config = search_config(c.EM_X86_64, True)
    if "x86-64-v2" not in config.hwcaps:
        pytest.skip("this CPU does not support x86-64-v2")
    program = _build(tmp_path, "usegreet-hwcaps", "-Wl,-rpath,$ORIGIN")
    shutil.copy(fixtures["libgreet"].path, tmp_path / "libgreet.so")
    (tmp_path / "glibc-hwcaps" / "x86-64-v2").mkdir(parents=True)
    shutil.copy(fixtures["libgreet"].path, tmp_path / "glibc-hwcaps" / "x86-64-v2" / "libgreet.so")
    deps = resolve(program)
    greet = next(o for o in deps.objects if o.name == "libgreet.so")
    assert greet.path == str(tmp_path / "glibc-hwcaps" / "x86-64-v2" / "libgreet.so")
    assert set(deps.paths) == ldd_paths(program)
