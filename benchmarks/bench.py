#!/usr/bin/env python3
"""Measure binslim against GNU strip, llvm-strip, sstrip, and ``strip --strip-unneeded`` followed by ``upx``.

    python3 benchmarks/bench.py [--quick] [--rounds N] [--json FILE] [--profile] [BINARY...]

One run prints, as tables on stdout, the figures of four questions (benchmarks/README.md says more):

1. strip: output sizes, median wall time over alternated rounds (binslim's CLI in a subprocess, so Python's
   startup counts; the in-process ``binslim.strip()`` separately) and each tool's peak RSS, on every fixture
   of testdata/build.py, on a generated DWARF-heavy C++ binary of more than 50 MB and on each BINARY given;
2. UPX: ``binslim --upx`` against ``strip --strip-unneeded`` then ``upx`` on the go-cmd fixture;
3. trees: ``binslim -r DIR`` against one ``strip`` over the same 300 small binaries;
4. startup: a binary and its UPX-packed version timed here, beside what ``binslim --json`` reports.

It ends with the targets, each PASS, FAIL or n/a. Generated inputs are cached under build/bench/.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import cProfile
import datetime
import hashlib
import io
import json
import os
import platform
import pstats
import re
import shlex
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

REPO_ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = REPO_ROOT / "build" / "bench"
FIXTURES_DIR = REPO_ROOT / "build" / "fixtures"
SCHEMA = 1

DEFAULT_ROUNDS = 7
QUICK_ROUNDS = 3
UPX_ROUNDS = 3
QUICK_UPX_ROUNDS = 1
STARTUP_RUNS = 21
QUICK_STARTUP_RUNS = 9

BIG_UNITS = 48  # C++ translation units of the big binary; 48 make about 58 MB with GCC 12
BIG_MIN_BYTES = 50_000_000
TREE_FILES = 300
TREE_PROGRAMS = 10
TREE_FOLDERS = 10
RSS_LIMIT_KIB = 64 * 1024
UPX_FIXTURE = "go-cmd"

STRIP_TIMEOUT = 300.0
UPX_TIMEOUT = 900.0
COMPILE_TIMEOUT = 600.0
RUN_TIMEOUT = 60.0
PROBE_TIMEOUT = 30.0

GNU_TIME = "/usr/bin/time"
GNU_TIME_MISSING = (
    "peak RSS not measured: /usr/bin/time is missing (Debian package `time`; bash scripts/install.sh --test "
    "installs it). A child's own ru_maxrss starts at the benchmark's RSS, so it is not used instead."
)


class BenchError(Exception):
    """A step of the benchmark could not run; the message says which and why."""


# --- running programs ---------------------------------------------------------------------------------


def command_text(argv: Sequence[object]) -> str:
    return " ".join(shlex.quote(str(arg)) for arg in argv)


def run(
    argv: Sequence[object],
    *,
    timeout: float,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    capture: bool = False,
    shown: Sequence[object] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run ``argv`` (stdin on /dev/null, stdout dropped unless ``capture``); BenchError unless it exits 0.

    Error messages name ``shown`` when given: the command without a measuring wrapper.
    """
    args = [str(arg) for arg in argv]
    text = command_text(args if shown is None else shown)
    try:
        completed = subprocess.run(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env=None if env is None else dict(env),
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"timed out after {timeout:g} s: {text}") from exc
    except OSError as exc:
        raise BenchError(f"cannot run {args[0]}: {exc.strerror or exc}") from exc
    if completed.returncode != 0:
        tail = completed.stderr.decode(errors="replace").strip().splitlines()[-4:]
        detail = "".join(f"\n    {line}" for line in tail)
        raise BenchError(f"exit {completed.returncode}: {text}{detail}")
    return completed


def timed(argv: Sequence[object], *, timeout: float, **kwargs: Any) -> float:
    """Wall-clock seconds of one successful run, launch included."""
    started = time.perf_counter()
    run(argv, timeout=timeout, **kwargs)
    return time.perf_counter() - started


def gnu_time_available() -> bool:
    return os.access(GNU_TIME, os.X_OK)


def peak_rss_kib(argv: Sequence[object], *, timeout: float, **kwargs: Any) -> int | None:
    """The program's own peak RSS in KiB, via GNU time; None (after a plain run) when GNU time is missing.

    The child of a large process cannot report its own peak: at execve Linux keeps the parent's high-water
    mark. GNU time is small, so the mark its child inherits is GNU time's, about 2 MiB.
    """
    if not gnu_time_available():
        run(argv, timeout=timeout, **kwargs)
        return None
    fd, report = tempfile.mkstemp(prefix="bench-rss-", suffix=".txt")
    os.close(fd)
    try:
        run([GNU_TIME, "-f", "%M", "-o", report, *argv], timeout=timeout, shown=argv, **kwargs)
        fields = Path(report).read_text().split()
        if not fields or not fields[-1].isdigit():
            raise BenchError(f"GNU time wrote no peak RSS for {command_text(argv)}")
        return int(fields[-1])
    finally:
        os.unlink(report)


def first_line(argv: Sequence[str]) -> str:
    try:
        completed = subprocess.run(
            list(argv), capture_output=True, timeout=PROBE_TIMEOUT, check=False, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unavailable"
    lines = (completed.stdout or completed.stderr).decode(errors="replace").strip().splitlines()
    return lines[0] if lines else ""


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def paired_ratio(numerators: Sequence[float], denominators: Sequence[float]) -> float | None:
    """Median of the per-round ratios: each round's two runs ran back to back, so load cancels out."""
    ratios = [a / b for a, b in zip(numerators, denominators) if b > 0]
    return statistics.median(ratios) if ratios else None


def rotated(items: Sequence[Any], round_index: int) -> list[Any]:
    """The items in a different order each round, so no tool always runs first (or right after another)."""
    if not items:
        return []
    shift = round_index % len(items)
    return [*items[shift:], *items[:shift]]


def remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


# --- formatting ---------------------------------------------------------------------------------------


def render_table(header: Sequence[str], rows: Sequence[Sequence[str]], left: int = 1) -> str:
    """Columns padded to their widest cell; the first ``left`` columns left-aligned, the others right."""
    table = [list(header), *[list(row) for row in rows]]
    widths = [max(len(row[column]) for row in table) for column in range(len(header))]
    lines = []
    for number, row in enumerate(table):
        cells = [cell.ljust(widths[i]) if i < left else cell.rjust(widths[i]) for i, cell in enumerate(row)]
        lines.append("  ".join(cells).rstrip())
        if number == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines)


def fmt_bytes(size: int | None) -> str:
    return "-" if size is None else f"{size:,}"


def fmt_ms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1000:.1f}" if seconds < 10 else f"{seconds * 1000:.0f}"


def fmt_ratio(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.2f}x"


def fmt_units(size: int) -> str:
    return f"{size:,} B = {size / 1e6:.2f} MB = {size / 1048576:.2f} MiB"


def heading(title: str) -> None:
    print(f"\n== {title} " + "=" * max(0, 100 - len(title)), flush=True)


def say(text: str = "") -> None:
    print(text, flush=True)


def seconds_list(values: Sequence[float]) -> list[float]:
    return [round(value, 6) for value in values]


# --- the programs under test ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Tools:
    binslim: list[str]  # the CLI, as a user runs it
    binslim_on_path: str | None
    python: str  # the interpreter the CLI runs on
    gnu_strip: str | None
    llvm_strip: str | None
    sstrip: str | None
    upx: str | None
    gcc: str | None
    gxx: str | None

    def describe(self) -> dict[str, str]:
        versions = {
            "binslim": f"{command_text(self.binslim)} ({first_line([*self.binslim, '--version'])})",
            "python": f"{self.python} ({first_line([self.python, '--version'])})",
        }
        for name, path in (
            ("GNU strip", self.gnu_strip),
            ("llvm-strip", self.llvm_strip),
            ("sstrip", self.sstrip),
            ("upx", self.upx),
            ("g++", self.gxx),
        ):
            versions[name] = f"{path} ({first_line([path, '--version'])})" if path else "not installed"
        versions["GNU time"] = GNU_TIME if gnu_time_available() else "not installed"
        return versions


def find_tools() -> Tools:
    # The console script installed for this interpreter, as pip puts it on a user's PATH. A pyenv shim
    # found first on PATH is a bash wrapper that adds tens of milliseconds no other install has.
    beside = Path(sys.executable).with_name("binslim")
    on_path = shutil.which("binslim")
    if beside.is_file() and os.access(beside, os.X_OK):
        cli = [str(beside)]
    elif on_path:
        cli = [on_path]
    else:
        cli = [sys.executable, "-m", "binslim"]
    return Tools(
        binslim=cli,
        binslim_on_path=on_path,
        python=script_interpreter(cli[0]) or sys.executable,
        gnu_strip=shutil.which("strip"),
        llvm_strip=shutil.which("llvm-strip"),
        sstrip=shutil.which("sstrip"),
        upx=shutil.which("upx"),
        gcc=shutil.which("gcc"),
        gxx=shutil.which("g++"),
    )


def script_interpreter(path: str) -> str | None:
    """The Python named on a console script's #! line, when there is one."""
    try:
        with open(path, "rb") as script:
            line = script.readline(512).decode(errors="replace")
    except OSError:
        return None
    if not line.startswith("#!"):
        return None
    words = line[2:].split()
    if words and "python" in os.path.basename(words[0]) and os.path.isfile(words[0]):
        return words[0]
    return None


def elf_kind(path: Path) -> str:
    """ "exec", "shared" or "object" from the ELF header."""
    with path.open("rb") as stream:
        ident = stream.read(18)
    if len(ident) < 18 or ident[:4] != b"\x7fELF":
        raise BenchError(f"{path}: not an ELF file")
    order = "<" if ident[5] == 1 else ">"
    (e_type,) = struct.unpack(order + "H", ident[16:18])
    return {1: "object", 2: "exec", 3: "shared"}.get(e_type, "exec")


# --- inputs: fixtures, the big binary, the tree -------------------------------------------------------


@dataclass(frozen=True)
class Input:
    name: str
    path: Path
    kind: str  # "exec", "shared" or "object"
    origin: str  # "fixture", "generated" or "command line"
    run_args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)


def load_fixtures() -> dict[str, Input]:
    sys.path.insert(0, str(REPO_ROOT))
    try:
        from testdata import build as fixture_build
    finally:
        sys.path.remove(str(REPO_ROOT))
    try:
        fixtures = fixture_build.build_all(FIXTURES_DIR)
    except fixture_build.FixtureBuildError as exc:
        raise BenchError(f"the fixture corpus did not build: {exc}") from exc
    return {
        name: Input(
            name, Path(fixture.path), fixture.kind, "fixture", tuple(fixture.run_args), dict(fixture.env)
        )
        for name, fixture in fixtures.items()
    }


# Each unit instantiates a few class and function templates over std::map, std::unordered_map,
# std::vector, std::function, std::shared_ptr and std::ostringstream, as real C++ does. At -g -O0 each
# unit then brings about 1.2 MB of DWARF and symbols describing the standard library, which the linker
# concatenates rather than merges; loaded code stays around 5 MB, as in a real C++ debug build.
BIG_UNIT_SOURCE = r"""// Generated by benchmarks/bench.py: unit @UNIT@ of the big debug binary.
#include <algorithm>
#include <functional>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <unordered_map>
#include <vector>

namespace unit@UNIT@ {
template <int N> struct Item {
    int id;
    std::string name;
    std::vector<double> values;
};

template <int N> std::string describe(const std::map<std::string, Item<N>>& items) {
    std::ostringstream out;
    for (const auto& [key, item] : items) out << key << '=' << item.id << ':' << item.values.size() << ';';
    return out.str();
}

template <int N> std::size_t work(int seed) {
    std::map<std::string, Item<N>> items;
    std::unordered_map<int, std::shared_ptr<Item<N>>> by_id;
    std::vector<std::function<int(int)>> steps;
    for (int i = 0; i < 4; ++i) {
        Item<N> item{seed + i, "item" + std::to_string(i) + "-@UNIT@", std::vector<double>(i, 1.5)};
        by_id[i] = std::make_shared<Item<N>>(item);
        items.emplace(item.name, item);
        steps.push_back([i](int x) { return x * i + N; });
    }
    int total = 0;
    for (auto& step : steps) total = step(total);
    return describe(items).size() + total + by_id.size();
}
}  // namespace unit@UNIT@

std::size_t unit@UNIT@_entry(int seed) {
    return unit@UNIT@::work<@N0@>(seed) + unit@UNIT@::work<@N1@>(seed) + unit@UNIT@::work<@N2@>(seed)
        + unit@UNIT@::work<@N3@>(seed);
}
"""

BIG_MAIN_SOURCE = r"""// Generated by benchmarks/bench.py: main of the big debug binary.
#include <cstddef>
#include <cstdio>
#include <cstring>

@DECLARATIONS@
int main(int argc, char** argv) {
    if (argc > 1 && std::strcmp(argv[1], "--version") == 0) {
        std::puts("big-cxx-debug 1.0.0");
        return 0;
    }
    std::size_t total = 0;
@CALLS@
    std::printf("%zu\n", total);
    return 0;
}
"""

BIG_FLAGS = ("-std=c++17", "-g", "-O0")


def big_binary(tools: Tools, units_count: int = BIG_UNITS) -> Input:
    """Build (or reuse) build/bench/big-cxx[-N]/big-cxx-debug: a C++ debug build, about 1.2 MB per unit
    (58 MB with the default 48 units)."""
    if tools.gxx is None:
        raise BenchError("g++ not found: install Debian's g++ (bash scripts/install.sh --test)")
    out_dir = BENCH_DIR / ("big-cxx" if units_count == BIG_UNITS else f"big-cxx-{units_count}")
    binary = out_dir / "big-cxx-debug"
    stamp = out_dir / "key"
    key = hashlib.sha256(
        "\0".join(
            [
                BIG_UNIT_SOURCE,
                BIG_MAIN_SOURCE,
                str(units_count),
                *BIG_FLAGS,
                tools.gxx,
                first_line([tools.gxx, "--version"]),
                first_line(["ld", "--version"]),
            ]
        ).encode()
    ).hexdigest()
    if binary.is_file() and stamp.is_file() and stamp.read_text().strip() == key:
        return Input(binary.name, binary, "exec", "generated", ("--version",))

    say(
        f"building {binary.relative_to(REPO_ROOT)}: {units_count} C++ units at {' '.join(BIG_FLAGS)}"
        f" on {os.cpu_count()} cores (about 30 s per 2 cores), cached afterwards"
    )
    started = time.perf_counter()
    work_dir = out_dir / f"work-{os.getpid()}"
    shutil.rmtree(work_dir, ignore_errors=True)
    work_dir.mkdir(parents=True)
    try:
        units = []
        for unit in range(units_count):
            source = BIG_UNIT_SOURCE.replace("@UNIT@", str(unit))
            for slot in range(4):
                source = source.replace(f"@N{slot}@", str(unit * 4 + slot))
            path = work_dir / f"unit{unit:03d}.cpp"
            path.write_text(source)
            units.append(path)
        main_source = BIG_MAIN_SOURCE.replace(
            "@DECLARATIONS@", "".join(f"std::size_t unit{u}_entry(int seed);\n" for u in range(units_count))
        ).replace("@CALLS@", "".join(f"    total += unit{u}_entry(argc);\n" for u in range(units_count)))
        main_path = work_dir / "main.cpp"
        main_path.write_text(main_source)
        units.append(main_path)

        gxx = tools.gxx

        def compile_unit(source: Path) -> Path:
            obj = source.with_suffix(".o")
            run([gxx, *BIG_FLAGS, "-c", source.name, "-o", obj.name], timeout=COMPILE_TIMEOUT, cwd=work_dir)
            return obj

        with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
            objects = list(pool.map(compile_unit, units))
        linked = work_dir / binary.name
        run([gxx, "-o", linked.name, *[obj.name for obj in objects]], timeout=COMPILE_TIMEOUT, cwd=work_dir)
        completed = run([linked, "--version"], timeout=RUN_TIMEOUT, capture=True)
        if b"big-cxx-debug 1.0.0" not in completed.stdout:
            raise BenchError(f"{linked} --version printed {completed.stdout[:80]!r}")
        os.replace(linked, binary)
        stamp.write_text(key + "\n")
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    say(
        f"built {binary.relative_to(REPO_ROOT)} ({fmt_units(binary.stat().st_size)})"
        f" in {time.perf_counter() - started:.0f} s"
    )
    return Input(binary.name, binary, "exec", "generated", ("--version",))


TREE_PROGRAM_SOURCE = r"""/* Generated by benchmarks/bench.py: small program @INDEX@ of the tree benchmark. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct record {
    int id;
    double weight;
    const char *label;
};

static const struct record records[] = {
    {@INDEX@, 1.5, "tree program @INDEX@: first"},
    {@INDEX@ + 1, 2.5, "tree program @INDEX@: second"},
    {@INDEX@ + 2, 3.5, "tree program @INDEX@: third"},
};

static double total_weight(const struct record *items, size_t count) {
    double total = 0;
    for (size_t i = 0; i < count; i++) total += items[i].weight * items[i].id;
    return total;
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "--version") == 0) {
        puts("tree-program-@INDEX@ 1.0.0");
        return 0;
    }
    for (int i = 1; i < argc; i++) printf("%s: %s\n", records[i % 3].label, argv[i]);
    printf("%.1f\n", total_weight(records, sizeof records / sizeof records[0]));
    return EXIT_SUCCESS;
}
"""


def tree_template(tools: Tools) -> Path:
    """build/bench/tree/: TREE_FILES unstripped copies of TREE_PROGRAMS small -g programs, in sub-folders."""
    if tools.gcc is None:
        raise BenchError("gcc not found: install Debian's gcc (bash scripts/install.sh --test)")
    tree = BENCH_DIR / "tree"
    stamp = BENCH_DIR / "tree.key"  # outside the tree, so it is not one of the files stripped
    key = hashlib.sha256(
        "\0".join(
            [
                TREE_PROGRAM_SOURCE,
                str(TREE_FILES),
                str(TREE_PROGRAMS),
                str(TREE_FOLDERS),
                tools.gcc,
                first_line([tools.gcc, "--version"]),
            ]
        ).encode()
    ).hexdigest()
    if tree.is_dir() and stamp.is_file() and stamp.read_text().strip() == key:
        return tree
    say(f"building {tree.relative_to(REPO_ROOT)}: {TREE_FILES} copies of {TREE_PROGRAMS} small -g programs")
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    work_dir = BENCH_DIR / f"tree-work-{os.getpid()}"
    shutil.rmtree(work_dir, ignore_errors=True)
    (work_dir / "tree").mkdir(parents=True)
    gcc = tools.gcc
    try:

        def compile_program(index: int) -> Path:
            source = work_dir / f"program{index}.c"
            source.write_text(TREE_PROGRAM_SOURCE.replace("@INDEX@", str(index)))
            program = work_dir / f"program{index}"
            run([gcc, "-g", "-O1", source.name, "-o", program.name], timeout=COMPILE_TIMEOUT, cwd=work_dir)
            return program

        with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
            programs = list(pool.map(compile_program, range(TREE_PROGRAMS)))
        for number in range(TREE_FILES):
            folder = work_dir / "tree" / f"dir{number % TREE_FOLDERS:02d}"
            folder.mkdir(exist_ok=True)
            shutil.copy2(programs[number % TREE_PROGRAMS], folder / f"prog{number:03d}")
        shutil.rmtree(tree, ignore_errors=True)
        os.replace(work_dir / "tree", tree)
        stamp.write_text(key + "\n")
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    return tree


def tree_files(tree: Path) -> list[str]:
    """The files of a tree, relative to it, in a stable order."""
    return sorted(str(path.relative_to(tree)) for path in tree.rglob("*") if path.is_file())


def tree_size(tree: Path) -> int:
    return sum(path.stat().st_size for path in tree.rglob("*") if path.is_file())


# --- 1. strip -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Contender:
    key: str
    label: str
    command: Callable[[str, str], list[str]]  # (input, output) -> argv
    in_place: bool = False  # rewrites its argument: the output starts as an untimed copy of the input


@dataclass
class ToolRun:
    seconds: list[float] = field(default_factory=list)
    size: int | None = None
    peak_rss_kib: int | None = None
    error: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "median_seconds": median(self.seconds),
            "seconds": seconds_list(self.seconds),
            "peak_rss_kib": self.peak_rss_kib,
            "error": self.error or None,
        }


@dataclass
class StripFigures:
    input: Input
    input_size: int
    option: str  # the strip option the other tools got
    tools: dict[str, ToolRun]
    in_process: ToolRun
    overlay: int = 0  # bytes after the ELF image that binslim keeps and strip tools drop

    @property
    def reference(self) -> str | None:
        """The tool binslim's size is held to: GNU strip, or llvm-strip where GNU strip cannot read it."""
        for key in ("gnu", "llvm"):
            run_ = self.tools.get(key)
            if run_ is not None and run_.size is not None:
                return key
        return None

    def wall_ratio(self, key: str = "gnu") -> float | None:
        ours, theirs = self.tools.get("binslim"), self.tools.get(key)
        if ours is None or theirs is None or ours.error or theirs.error:
            return None
        return paired_ratio(ours.seconds, theirs.seconds)

    def size_ratio(self, key: str = "gnu") -> float | None:
        ours, theirs = self.tools.get("binslim"), self.tools.get(key)
        if ours is None or theirs is None or ours.size is None or not theirs.size:
            return None
        return ours.size / theirs.size

    @property
    def unstripped(self) -> bool:
        reference = self.reference
        return reference is not None and (self.tools[reference].size or 0) < self.input_size

    def to_dict(self) -> dict[str, Any]:
        gnu_time = self.tools.get("gnu")
        return {
            "name": self.input.name,
            "path": str(self.input.path),
            "kind": self.input.kind,
            "origin": self.input.origin,
            "input_size": self.input_size,
            "strip_option": self.option,
            "tools": {key: run_.to_dict() for key, run_ in self.tools.items()},
            "in_process": self.in_process.to_dict(),
            "size_ratio_vs_gnu": self.size_ratio("gnu"),
            "wall_ratio_vs_gnu": self.wall_ratio("gnu"),
            "in_process_ratio_vs_gnu": (
                paired_ratio(self.in_process.seconds, gnu_time.seconds)
                if gnu_time is not None and not gnu_time.error and not self.in_process.error
                else None
            ),
            "reference": self.reference,
            "overlay": self.overlay,
        }


def strip_contenders(tools: Tools, kind: str) -> tuple[str, list[Contender]]:
    # binslim removes only debug sections from relocatable objects, so they still link; the others are held
    # to the same job there.
    option = "--strip-debug" if kind == "object" else "--strip-all"
    cli = tools.binslim
    contenders = [Contender("binslim", "binslim", lambda i, o: [*cli, i, "-o", o, "--no-verify"])]
    gnu, llvm, sstrip = tools.gnu_strip, tools.llvm_strip, tools.sstrip
    if gnu:
        contenders.append(Contender("gnu", "GNU strip", lambda i, o: [gnu, option, i, "-o", o]))
    if llvm:
        contenders.append(Contender("llvm", "llvm-strip", lambda i, o: [llvm, option, i, "-o", o]))
    if sstrip and kind != "object":
        contenders.append(Contender("sstrip", "sstrip", lambda i, o: [sstrip, o], in_place=True))
    return option, contenders


def bench_strip(item: Input, tools: Tools, rounds: int, work: Path) -> StripFigures:
    import binslim

    option, contenders = strip_contenders(tools, item.kind)
    source = str(item.path)
    outputs = {c.key: work / f"{item.name}.{c.key}" for c in contenders}
    figures = StripFigures(
        item, item.path.stat().st_size, option, {c.key: ToolRun() for c in contenders}, ToolRun()
    )

    def prepare(contender: Contender) -> list[str]:
        output = outputs[contender.key]
        remove(output)
        if contender.in_place:
            shutil.copy2(source, output)
        return contender.command(source, str(output))

    # The first run of each tool warms the page cache and measures its peak RSS; it is not timed.
    live = []
    for contender in contenders:
        try:
            figures.tools[contender.key].peak_rss_kib = peak_rss_kib(
                prepare(contender), timeout=STRIP_TIMEOUT
            )
            live.append(contender)
        except BenchError as exc:
            figures.tools[contender.key].error = str(exc)
    for round_index in range(rounds):
        for contender in rotated(list(live), round_index):
            try:
                figures.tools[contender.key].seconds.append(timed(prepare(contender), timeout=STRIP_TIMEOUT))
            except BenchError as exc:
                figures.tools[contender.key].error = str(exc)
                live.remove(contender)
    for contender in live:
        figures.tools[contender.key].size = outputs[contender.key].stat().st_size

    in_process_output = work / f"{item.name}.in-process"
    try:
        for _ in range(rounds):
            remove(in_process_output)
            started = time.perf_counter()
            result = binslim.strip(source, in_process_output)
            figures.in_process.seconds.append(time.perf_counter() - started)
            figures.overlay = result.overlay
        figures.in_process.size = in_process_output.stat().st_size
    except Exception as exc:  # a binslim bug is a figure to report, not a reason to stop
        figures.in_process.error = f"{type(exc).__name__}: {exc}"
    for output in [*outputs.values(), in_process_output]:
        remove(output)
    return figures


def print_strip_tables(all_figures: Sequence[StripFigures], tools: Tools, rounds: int) -> None:
    keys = [key for key in ("binslim", "gnu", "llvm", "sstrip") if any(key in f.tools for f in all_figures)]
    labels = {"binslim": "binslim", "gnu": "GNU strip", "llvm": "llvm-strip", "sstrip": "sstrip"}

    def cell(figures: StripFigures, key: str, value: Callable[[ToolRun], str]) -> str:
        run_ = figures.tools.get(key)
        if run_ is None:
            return "-"
        return "failed" if run_.error else value(run_)

    def name(figures: StripFigures) -> str:
        return figures.input.name + (" (-debug)" if figures.option == "--strip-debug" else "")

    say(
        "Output size, bytes. (-debug): an object file, so every tool removes debug sections only;"
        " the others get --strip-all."
    )
    header = ["file", "kind", "input", *[labels[k] for k in keys], "binslim/GNU"]
    rows = []
    for figures in all_figures:
        ratio = figures.size_ratio("gnu")
        ratio_text = fmt_ratio(ratio) if ratio is None else f"{ratio:.4f}x"
        if ratio is None and figures.reference == "llvm":
            llvm_ratio = figures.size_ratio("llvm")
            ratio_text = "-" if llvm_ratio is None else f"{llvm_ratio:.4f}x llvm"
        rows.append(
            [
                name(figures),
                figures.input.kind,
                fmt_bytes(figures.input_size),
                *[cell(figures, k, lambda r: fmt_bytes(r.size)) for k in keys],
                ratio_text,
            ]
        )
    say(render_table(header, rows, left=2))
    for figures in all_figures:
        if figures.overlay:
            say(
                f"{figures.input.name}: binslim keeps its {figures.overlay:,}-byte overlay (data after the"
                " ELF image); the strip tools drop it."
            )

    say(
        f"\nWall time, median ms over {rounds} alternated rounds (binslim = its CLI in a subprocess;"
        " in-proc = binslim.strip() in this process); ratios are medians of per-round ratios."
    )
    header = ["file", "input", *[labels[k] for k in keys], "in-proc", "CLI/GNU", "in-proc/GNU"]
    rows = []
    for figures in all_figures:
        gnu = figures.tools.get("gnu")
        in_process_ratio = None
        if gnu is not None and not gnu.error and not figures.in_process.error:
            in_process_ratio = paired_ratio(figures.in_process.seconds, gnu.seconds)
        rows.append(
            [
                name(figures),
                fmt_bytes(figures.input_size),
                *[cell(figures, k, lambda r: fmt_ms(median(r.seconds))) for k in keys],
                "failed" if figures.in_process.error else fmt_ms(median(figures.in_process.seconds)),
                fmt_ratio(figures.wall_ratio("gnu")),
                fmt_ratio(in_process_ratio),
            ]
        )
    say(render_table(header, rows))

    if gnu_time_available():
        say("\nPeak RSS, KiB (GNU time %M of the tool's own process; binslim's includes its Python).")
        header = ["file", "input", *[labels[k] for k in keys]]
        rows = [
            [
                name(f),
                fmt_bytes(f.input_size),
                *[cell(f, k, lambda r: fmt_bytes(r.peak_rss_kib)) for k in keys],
            ]
            for f in all_figures
        ]
        say(render_table(header, rows))
    else:
        say("\n" + GNU_TIME_MISSING)

    failures = [
        (f.input.name, labels[key], run_.error)
        for f in all_figures
        for key, run_ in f.tools.items()
        if run_.error
    ]
    failures += [
        (f.input.name, "binslim.strip()", f.in_process.error) for f in all_figures if f.in_process.error
    ]
    if failures:
        say("\nFailed runs:")
        for file_name, label, error in failures:
            say(f"  {file_name}: {label}: {error.splitlines()[-1].strip()}")


def use_bytecode_cache() -> str:
    """Let every Python child cache bytecode under build/bench/pycache; a note when that changes anything.

    An installed package ships compiled bytecode; an editable install under PYTHONDONTWRITEBYTECODE=1 (as
    Docker images and CI often set) compiles every module of binslim on every run instead, about 35 ms that
    no user of an installed binslim pays. The floor section shows that cost separately.
    """
    note = ""
    if os.environ.pop("PYTHONDONTWRITEBYTECODE", None):
        note = "PYTHONDONTWRITEBYTECODE was set: unset for the children, which cache bytecode in build/bench"
    os.environ["PYTHONPYCACHEPREFIX"] = str(BENCH_DIR / "pycache")
    return note


def bench_cli_floor(tools: Tools, rounds: int) -> dict[str, Any]:
    """What any binslim run costs before it opens a file: interpreter start, imports, argument parsing."""
    no_bytecode = {
        **os.environ,
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONPYCACHEPREFIX": str(BENCH_DIR / "pycache-none"),  # stays empty: nothing may write there
    }
    commands: dict[str, tuple[list[str], Mapping[str, str] | None]] = {
        "python -c pass": ([tools.python, "-c", "pass"], None),
        "python -I -S -c pass (no site)": ([tools.python, "-I", "-S", "-c", "pass"], None),
        "python -c 'import binslim.cli'": ([tools.python, "-c", "import binslim.cli"], None),
        "binslim --version": ([*tools.binslim, "--version"], None),
        "binslim --version, no bytecode cache": ([*tools.binslim, "--version"], no_bytecode),
    }
    if tools.binslim_on_path and tools.binslim_on_path != tools.binslim[0]:
        commands["binslim --version, first on PATH"] = ([tools.binslim_on_path, "--version"], None)
    samples: dict[str, list[float]] = {label: [] for label in commands}
    for argv, env in commands.values():
        run(argv, timeout=RUN_TIMEOUT, env=env)
    runs = max(rounds, 5)
    for round_index in range(runs):
        for label in rotated(list(commands), round_index):
            argv, env = commands[label]
            samples[label].append(timed(argv, timeout=RUN_TIMEOUT, env=env))
    say(f"Startup floor of the CLI (median of {runs} alternated runs):")
    for label, values in samples.items():
        say(f"  {label:<40} {fmt_ms(median(values)):>7} ms   ({commands[label][0][0]})")
    return {
        label: {"argv": commands[label][0], "median_seconds": median(values), "seconds": seconds_list(values)}
        for label, values in samples.items()
    }


def profile_in_process(item: Input, work: Path, top: int = 25) -> str:
    import binslim

    output = work / f"{item.name}.profile"
    profiler = cProfile.Profile()
    profiler.enable()
    binslim.strip(str(item.path), output)
    profiler.disable()
    remove(output)
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(top)
    return text.getvalue()


# --- 2. UPX -------------------------------------------------------------------------------------------


def bench_upx(item: Input, tools: Tools, rounds: int, methods: Sequence[str], work: Path) -> dict[str, Any]:
    """binslim --upx against strip --strip-unneeded then upx, for each UPX method."""
    return {method: bench_upx_method(item, tools, rounds, method, work) for method in methods}


def bench_upx_method(item: Input, tools: Tools, rounds: int, method: str, work: Path) -> dict[str, Any]:
    assert tools.upx is not None and tools.gnu_strip is not None
    upx, gnu = tools.upx, tools.gnu_strip
    source = str(item.path)
    upx_flags = [] if method == "default" else [f"--{method}"]
    binslim_flags = [] if method == "default" else ["--upx-method", method]
    ours = work / f"upx-{method}.binslim"
    stripped = work / f"upx-{method}.stripped"
    theirs = work / f"upx-{method}.pipeline"
    times: dict[str, list[float]] = {"binslim": [], "strip": [], "upx": [], "pipeline": []}

    def run_binslim() -> None:
        remove(ours)
        argv = [*tools.binslim, source, "-o", ours, "--upx", *binslim_flags, "--no-verify"]
        times["binslim"].append(timed(argv, timeout=UPX_TIMEOUT))

    def run_pipeline() -> None:
        remove(stripped)
        remove(theirs)  # upx will not write over a file
        strip_seconds = timed([gnu, "--strip-unneeded", source, "-o", stripped], timeout=STRIP_TIMEOUT)
        upx_seconds = timed([upx, *upx_flags, stripped, "-o", theirs], timeout=UPX_TIMEOUT)
        times["strip"].append(strip_seconds)
        times["upx"].append(upx_seconds)
        times["pipeline"].append(strip_seconds + upx_seconds)

    try:
        for round_index in range(rounds):
            for step in rotated([run_binslim, run_pipeline], round_index):
                step()
        env = {**os.environ, **item.env}
        for packed in (ours, theirs):
            run([packed, *item.run_args], timeout=RUN_TIMEOUT, env=env)  # both must still work
        ours_size, theirs_size, stripped_size = (
            ours.stat().st_size,
            theirs.stat().st_size,
            stripped.stat().st_size,
        )
    finally:
        for path in (ours, stripped, theirs):
            remove(path)
    return {
        "binslim_size": ours_size,
        "pipeline_stripped_size": stripped_size,
        "pipeline_size": theirs_size,
        "binslim_packed": ours_size < stripped_size,
        "median_seconds": {step: median(values) for step, values in times.items()},
        "seconds": {step: seconds_list(values) for step, values in times.items()},
        "ratio": paired_ratio(times["binslim"], times["pipeline"]),
        "binslim_not_larger": ours_size <= theirs_size,
    }


def print_upx(item: Input, results: Mapping[str, Any], rounds: int) -> None:
    say(
        f"{item.name} ({fmt_units(item.path.stat().st_size)}), {rounds} alternated round(s) per method;"
        " both outputs run before they count"
    )
    for method, figures in results.items():
        label = "upx (default: NRV2E)" if method == "default" else f"upx --{method}"
        median_ms = figures["median_seconds"]
        verdict = "yes" if figures["binslim_not_larger"] else "NO"
        say(f"\n  method: {label}")
        say(
            f"    binslim --upx{'' if method == 'default' else ' --upx-method ' + method} --no-verify:"
            f" {fmt_units(figures['binslim_size'])}, {fmt_ms(median_ms['binslim'])} ms"
        )
        say(
            f"    strip --strip-unneeded + {label}: {fmt_units(figures['pipeline_size'])},"
            f" {fmt_ms(median_ms['pipeline'])} ms (strip {fmt_ms(median_ms['strip'])} ms"
            f" + upx {fmt_ms(median_ms['upx'])} ms; stripped {figures['pipeline_stripped_size']:,} B)"
        )
        difference = figures["binslim_size"] - figures["pipeline_size"]
        say(
            f"    binslim <= pipeline: {verdict} ({difference:+,} B); time binslim/pipeline:"
            f" {fmt_ratio(figures['ratio'])}"
        )
        if not figures["binslim_packed"]:
            say("    note: binslim's output is not smaller than the stripped file: it did not pack")


# --- 3. trees -----------------------------------------------------------------------------------------


def binslim_has_recursive(tools: Tools) -> bool:
    try:
        completed = run([*tools.binslim, "--help"], timeout=RUN_TIMEOUT, capture=True)
    except BenchError:
        return False
    return re.search(r"(^|[\s,])(-r|--recursive)\b", completed.stdout.decode(errors="replace")) is not None


def bench_tree(tree: Path, tools: Tools, rounds: int, work: Path) -> dict[str, Any]:
    """One `strip` over every file, `binslim -r DIR` and `binslim FILE...`, each on a fresh copy."""
    assert tools.gnu_strip is not None
    files = tree_files(tree)
    has_recursive = binslim_has_recursive(tools)
    copy = work / "tree"
    commands: dict[str, list[str]] = {
        "strip FILE...": [tools.gnu_strip, "--strip-all", *files],
        "binslim FILE...": [*tools.binslim, "--no-verify", *files],
    }
    if has_recursive:
        commands["binslim -r DIR"] = [*tools.binslim, "-r", ".", "--no-verify"]
    samples: dict[str, list[float]] = {label: [] for label in commands}
    sizes: dict[str, int] = {}

    def once(label: str, record: bool) -> None:
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(tree, copy, symlinks=True)
        seconds = timed(commands[label], timeout=STRIP_TIMEOUT * 4, cwd=copy)
        sizes[label] = tree_size(copy)
        if record:
            samples[label].append(seconds)

    for label in commands:  # warm-up
        once(label, False)
    for round_index in range(rounds):
        for label in rotated(list(commands), round_index):
            once(label, True)
    shutil.rmtree(copy, ignore_errors=True)
    strip_label = "strip FILE..."
    return {
        "files": len(files),
        "input_size": tree_size(tree),
        "recursive_available": has_recursive,
        "runs": {
            label: {
                "argv": command_text(commands[label][:4]) + (" ..." if len(commands[label]) > 4 else ""),
                "output_size": sizes.get(label),
                "median_seconds": median(values),
                "seconds": seconds_list(values),
                "ratio_vs_strip": None
                if label == strip_label
                else paired_ratio(values, samples[strip_label]),
            }
            for label, values in samples.items()
        },
    }


def print_tree(results: Mapping[str, Any], rounds: int) -> None:
    say(
        f"{results['files']} files, {fmt_bytes(results['input_size'])} B in all; each run on a fresh copy;"
        f" median of {rounds} alternated rounds"
    )
    header = ["command", "output B", "median ms", "per file ms", "vs strip"]
    rows = []
    for label, figures in results["runs"].items():
        per_file = figures["median_seconds"] / results["files"] if figures["median_seconds"] else None
        rows.append(
            [
                label,
                fmt_bytes(figures["output_size"]),
                fmt_ms(figures["median_seconds"]),
                "-" if per_file is None else f"{per_file * 1000:.2f}",
                fmt_ratio(figures["ratio_vs_strip"]) if figures["ratio_vs_strip"] else "1.00x",
            ]
        )
    if not results["recursive_available"]:
        rows.append(["binslim -r DIR", "not available yet", "-", "-", "-"])
    say(render_table(header, rows))
    if not results["recursive_available"]:
        say(
            "binslim -r is not available yet (binslim --help mentions neither -r nor --recursive);"
            " `binslim FILE...` is shown as a stand-in."
        )


# --- 4. startup -----------------------------------------------------------------------------------------


def bench_startup(item: Input, tools: Tools, runs: int, work: Path) -> dict[str, Any]:
    """Time a binary and its binslim --upx version here, and read what binslim's verifier measured."""
    env = {**os.environ, **item.env}
    packed = work / f"{item.name}.upx"
    remove(packed)
    argv = [
        *tools.binslim,
        str(item.path),
        "-o",
        packed,
        "--upx",
        "--json",
        "--verify-args",
        shlex.join(item.run_args),
    ]
    reported: dict[str, Any] | None = None
    note = ""
    completed = run(argv, timeout=UPX_TIMEOUT, capture=True, env=env)
    try:
        document = json.loads(completed.stdout)
        verify = document["results"][0].get("verify")
    except (ValueError, LookupError, AttributeError) as exc:
        raise BenchError(f"binslim --json printed no report: {exc}") from exc
    if not verify:
        note = "binslim --json reports no verification (no verifier yet?)"
    elif not verify.get("startup_ms"):
        note = f"binslim --json reports no verify.startup_ms ({verify.get('reason') or 'not measured'})"
    else:
        reported = verify["startup_ms"]

    commands = {"original": [str(item.path), *item.run_args], "packed": [str(packed), *item.run_args]}
    samples: dict[str, list[float]] = {label: [] for label in commands}
    for command in commands.values():
        run(command, timeout=RUN_TIMEOUT, env=env)  # warm-up
    for round_index in range(runs):
        for label in rotated(list(commands), round_index):
            samples[label].append(timed(commands[label], timeout=RUN_TIMEOUT, env=env))
    measured = {label: median(values) for label, values in samples.items()}
    result = {
        "binary": str(item.path),
        "args": list(item.run_args),
        "packed_size": packed.stat().st_size,
        "runs": runs,
        "measured_ms": {
            label: round(value * 1000, 3) for label, value in measured.items() if value is not None
        },
        "measured_range_ms": {
            label: [round(min(v) * 1000, 3), round(max(v) * 1000, 3)] for label, v in samples.items()
        },
        "reported_ms": reported,
        "note": note,
    }
    remove(packed)
    return result


def print_startup(item: Input, results: Mapping[str, Any]) -> None:
    say(
        f"{item.name} {' '.join(item.run_args)}: original {fmt_bytes(item.path.stat().st_size)} B,"
        f" binslim --upx {fmt_bytes(results['packed_size'])} B; {results['runs']} alternated runs each here"
    )
    measured = results["measured_ms"]
    reported = results["reported_ms"] or {}
    ranges = results["measured_range_ms"]
    header = ["binary", "measured here ms", "range ms", "binslim --json verify.startup_ms"]
    rows = []
    for label in ("original", "packed"):
        json_key = "original" if label == "original" else "final"
        low, high = ranges[label]
        rows.append(
            [
                label,
                f"{measured[label]:.1f}",
                f"{low:.1f}-{high:.1f}",
                f"{reported[json_key]:.1f}" if json_key in reported else "-",
            ]
        )
    added_here = measured["packed"] - measured["original"]
    rows.append(
        [
            "added by UPX",
            f"{added_here:+.1f}",
            "",
            f"{reported['added']:+.1f}" if "added" in reported else "-",
        ]
    )
    say(render_table(header, rows))
    if results["note"]:
        say(results["note"])


# --- targets and the report ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    issue: str
    description: str
    status: str  # "PASS", "FAIL" or "n/a"
    detail: str

    def to_dict(self) -> dict[str, str]:
        return {"issue": self.issue, "target": self.description, "status": self.status, "detail": self.detail}


def strip_targets(all_figures: Sequence[StripFigures], quick: bool) -> list[Target]:
    targets = []
    candidates = [
        f for f in all_figures if f.unstripped and f.input.kind != "object" and f.wall_ratio() is not None
    ]
    description = "binslim CLI wall time <= 1.0x GNU strip on the largest unstripped binary"
    if candidates:
        largest = max(candidates, key=lambda f: f.input_size)
        ratio = largest.wall_ratio()
        assert ratio is not None
        detail = (
            f"{largest.input.name} ({largest.input_size / 1e6:.1f} MB): {ratio:.2f}x"
            f" ({fmt_ms(median(largest.tools['binslim'].seconds))} ms vs"
            f" {fmt_ms(median(largest.tools['gnu'].seconds))} ms; in-process binslim.strip()"
            f" {fmt_ms(median(largest.in_process.seconds))} ms)"
        )
        if largest.input_size < BIG_MIN_BYTES:
            detail += "; under 50 MB" + (" (--quick skips the big binary)" if quick else "")
        targets.append(Target("2", description, "PASS" if ratio <= 1.0 else "FAIL", detail))
    else:
        targets.append(Target("2", description, "n/a", "no unstripped binary that GNU strip reads"))

    description = f"binslim peak RSS < {RSS_LIMIT_KIB // 1024} MiB on every input"
    measured = [f for f in all_figures if f.tools["binslim"].peak_rss_kib is not None]
    if measured:
        worst = max(measured, key=lambda f: f.tools["binslim"].peak_rss_kib or 0)
        peak = worst.tools["binslim"].peak_rss_kib or 0
        largest = max(all_figures, key=lambda f: f.input_size)
        detail = (
            f"highest {peak:,} KiB = {peak / 1024:.1f} MiB on {worst.input.name}; on the largest input"
            f" ({largest.input.name}, {largest.input_size / 1e6:.1f} MB):"
            f" {largest.tools['binslim'].peak_rss_kib or 0:,} KiB"
        )
        targets.append(Target("2", description, "PASS" if peak < RSS_LIMIT_KIB else "FAIL", detail))
    else:
        targets.append(Target("2", description, "n/a", GNU_TIME_MISSING))

    description = (
        "binslim output size <= GNU strip on every input (llvm-strip where GNU strip cannot read it)"
    )
    compared = [(f, f.reference) for f in all_figures if f.reference and f.tools["binslim"].size is not None]
    # An overlay (data appended after the ELF image, as self-extracting archives have) is kept on purpose;
    # strip tools drop it, so it is left out of the comparison.
    larger = [
        (f, ref)
        for f, ref in compared
        if (f.tools["binslim"].size or 0) - f.overlay > (f.tools[ref].size or 0)
    ]
    with_overlay = [f for f, _ in compared if f.overlay]
    failed = [f for f in all_figures if f.tools["binslim"].error]
    detail = f"{len(compared) - len(larger)}/{len(compared)} not larger"
    if larger:
        detail += "; larger: " + ", ".join(
            f"{f.input.name} ({(f.tools['binslim'].size or 0) - (f.tools[ref].size or 0):+,} B vs {ref})"
            for f, ref in larger
        )
    if with_overlay:
        detail += "; compared without the overlay binslim keeps: " + ", ".join(
            f"{f.input.name} ({f.overlay:,} B)" for f in with_overlay
        )
    if failed:
        detail += "; binslim failed on: " + ", ".join(f.input.name for f in failed)
    targets.append(
        Target("2", description, "PASS" if compared and not larger and not failed else "FAIL", detail)
    )
    return targets


def upx_targets(results: Mapping[str, Any]) -> list[Target]:
    targets = []
    for method, figures in results.items():
        label = "upx" if method == "default" else f"upx --{method}"
        difference = figures["binslim_size"] - figures["pipeline_size"]
        targets.append(
            Target(
                "3",
                f"binslim --upx{'' if method == 'default' else ' --upx-method ' + method} size <= "
                f"strip --strip-unneeded + {label}",
                "PASS" if figures["binslim_not_larger"] else "FAIL",
                f"{figures['binslim_size']:,} B vs {figures['pipeline_size']:,} B ({difference:+,} B)",
            )
        )
    return targets


def tree_target(results: Mapping[str, Any] | None) -> Target:
    description = f"binslim -r DIR <= 1.0x one strip over the same {TREE_FILES} files"
    if results is None:
        return Target("5", description, "n/a", "not measured")
    recursive = results["runs"].get("binslim -r DIR")
    if recursive is None:
        stand_in = results["runs"]["binslim FILE..."]
        return Target(
            "5",
            description,
            "n/a",
            f"binslim -r not available yet; binslim FILE... is {fmt_ratio(stand_in['ratio_vs_strip'])}",
        )
    ratio = recursive["ratio_vs_strip"]
    status = "PASS" if ratio is not None and ratio <= 1.0 else "FAIL"
    return Target(
        "5",
        description,
        status,
        f"{fmt_ratio(ratio)} ({fmt_ms(recursive['median_seconds'])} ms vs"
        f" {fmt_ms(results['runs']['strip FILE...']['median_seconds'])} ms)",
    )


def print_targets(targets: Sequence[Target]) -> None:
    for target in targets:
        say(f"  [{target.status:<4}] issue {target.issue}: {target.description}")
        say(f"         {target.detail}")


def write_json_atomically(path: Path, document: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            json.dump(document, stream, indent=2)
            stream.write("\n")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)  # mkstemp makes it private; a report is not
        os.replace(temporary, path)
    except BaseException:
        remove(Path(temporary))
        raise


@contextlib.contextmanager
def work_dir() -> Iterator[Path]:
    # Beside the inputs (same file system), so copy_file_range and renames behave as for a user.
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix="work-", dir=BENCH_DIR))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# --- main -----------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark binslim against GNU strip, llvm-strip, sstrip and strip + upx.",
        epilog="See benchmarks/README.md.",
    )
    parser.add_argument("binaries", nargs="*", type=Path, metavar="BINARY", help="extra binaries to strip")
    parser.add_argument(
        "--quick", action="store_true", help=f"{QUICK_ROUNDS} rounds; skip the big binary and UPX --lzma"
    )
    parser.add_argument(
        "--rounds", type=int, help=f"alternated rounds per measurement (default {DEFAULT_ROUNDS})"
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write every figure here as JSON")
    parser.add_argument(
        "--big-units",
        type=int,
        default=BIG_UNITS,
        help=f"C++ units of the generated big binary (default {BIG_UNITS}: about 58 MB; 480: about 580 MB)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="cProfile binslim.strip() on the largest input and print where the time goes",
    )
    options = parser.parse_args(argv)
    if options.rounds is not None and options.rounds < 1:
        parser.error("--rounds must be at least 1")
    return options


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    started = time.perf_counter()
    rounds = options.rounds or (QUICK_ROUNDS if options.quick else DEFAULT_ROUNDS)
    upx_rounds = min(rounds, QUICK_UPX_ROUNDS if options.quick else UPX_ROUNDS)
    startup_runs = QUICK_STARTUP_RUNS if options.quick else STARTUP_RUNS
    tools = find_tools()
    bytecode_note = use_bytecode_cache()
    document: dict[str, Any] = {
        "schema": SCHEMA,
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "quick": options.quick,
        "rounds": rounds,
    }
    try:
        heading("environment")
        environment = {
            "host": f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
            **tools.describe(),
            "load average at start": " ".join(f"{load:.2f}" for load in os.getloadavg()),
        }
        for label, value in environment.items():
            say(f"  {label:<22} {value}")
        if tools.binslim_on_path and tools.binslim_on_path != tools.binslim[0]:
            say(
                f"  note: {tools.binslim_on_path} comes first on PATH; timed instead: {tools.binslim[0]}"
                " (the script pip installed for this Python), measured both below"
            )
        if bytecode_note:
            say(f"  note: {bytecode_note}")
            environment["bytecode"] = bytecode_note
        document["environment"] = environment
        if tools.gnu_strip is None:
            raise BenchError("GNU strip not found: install Debian's binutils")

        heading("inputs")
        inputs = list(load_fixtures().values())
        say(f"{len(inputs)} fixtures from {FIXTURES_DIR.relative_to(REPO_ROOT)} (testdata/build.py)")
        if not options.quick:
            inputs.append(big_binary(tools, options.big_units))
            say(
                f"big binary: {inputs[-1].path.relative_to(REPO_ROOT)}"
                f" ({fmt_units(inputs[-1].path.stat().st_size)})"
            )
        for path in options.binaries:
            if not path.is_file():
                raise BenchError(f"{path}: no such file")
            inputs.append(Input(path.name, path.resolve(), elf_kind(path), "command line"))
        tree = tree_template(tools)
        fixtures = {item.name: item for item in inputs if item.origin == "fixture"}

        with work_dir() as work:
            heading(f"1. strip (issue 2): {len(inputs)} inputs, {rounds} rounds")
            document["cli_floor"] = bench_cli_floor(tools, rounds)
            say()
            all_figures = []
            for item in sorted(inputs, key=lambda i: i.path.stat().st_size):
                all_figures.append(bench_strip(item, tools, rounds, work))
            print_strip_tables(all_figures, tools, rounds)
            document["strip"] = [figures.to_dict() for figures in all_figures]
            targets = strip_targets(all_figures, options.quick)

            if options.profile:
                largest = max(inputs, key=lambda i: i.path.stat().st_size)
                heading(f"profile: binslim.strip() on {largest.name}")
                say(profile_in_process(largest, work))

            heading("2. UPX (issue 3)")
            upx_item = fixtures.get(UPX_FIXTURE)
            if tools.upx is None:
                say("upx not found: install Debian's upx-ucl (bash scripts/install.sh); UPX part skipped")
            elif upx_item is None:
                say(f"the {UPX_FIXTURE} fixture is missing; UPX part skipped")
            else:
                methods = ["default"] if options.quick else ["default", "lzma"]
                upx_results = bench_upx(upx_item, tools, upx_rounds, methods, work)
                print_upx(upx_item, upx_results, upx_rounds)
                document["upx"] = upx_results
                targets += upx_targets(upx_results)

            heading(f"3. trees (issue 5): {TREE_FILES} small unstripped binaries")
            tree_results = bench_tree(tree, tools, rounds, work)
            print_tree(tree_results, rounds)
            document["tree"] = tree_results
            targets.append(tree_target(tree_results))

            heading("4. startup sanity (issue 4)")
            if upx_item is not None and tools.upx is not None:
                try:
                    startup = bench_startup(upx_item, tools, startup_runs, work)
                    print_startup(upx_item, startup)
                    document["startup"] = startup
                except BenchError as exc:
                    say(f"startup not measured: {exc}")
                    document["startup"] = {"error": str(exc)}
            else:
                say("skipped: needs upx and the go-cmd fixture")

        heading("targets")
        print_targets(targets)
        document["targets"] = [target.to_dict() for target in targets]
    except BenchError as exc:
        print(f"bench.py: error: {exc}", file=sys.stderr)
        return 1
    finally:
        elapsed = time.perf_counter() - started
        document["seconds"] = round(elapsed, 1)
        document["load_average_at_end"] = " ".join(f"{load:.2f}" for load in os.getloadavg())
        say(f"\nload average at end: {document['load_average_at_end']}; whole run {elapsed:.0f} s")
        if options.json is not None:
            write_json_atomically(options.json, document)
            say(f"figures written to {options.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
