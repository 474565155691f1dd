#!/usr/bin/env python3
"""Start-up, big-file and many-file targets of issue 12, measured against the interpreter and GNU strip.

    python3 benchmarks/speed.py [--rounds N] [--big FILE] [--json FILE]

1. start-up: ``python3 -c pass`` against ``binslim --version`` and ``binslim SMALL -o OUT --no-verify`` on a
   ~20 KB program, each through ``python -m binslim`` and through a console script (what pip installs);
   target: each within 40 ms of ``python3 -c pass`` (median of alternated runs);
2. big file: ``strip --strip-all BIG -o OUT`` against ``binslim BIG -o OUT --no-verify`` (BIG: /usr/bin/node
   when installed, else the largest fixture); target: median of per-round wall ratios <= 1.0; and
   binslim's peak RSS on it (GNU time) beside its RSS on the small program: target < 32 MiB, flat in size;
3. many files: ``strip --strip-all FILE...`` (one call over 300 small programs) against ``binslim -r DIR
   --no-verify`` on fresh copies of the same tree; target: ratio <= 1.0. Beside them, the floor: Python
   doing only the file system work of an atomic rewrite of each file (FLOOR_SCRIPT), in one process and in
   as many as binslim -r starts here.

Every figure is wall-clock on whatever else the machine is doing; the load average is printed at the start
and the end. benchmarks/README.md says more. Helpers (running, timing, RSS, the 300-file tree) come from
bench.py beside this file.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench  # noqa: E402  (beside this file)
from bench import (  # noqa: E402
    BenchError,
    Tools,
    fmt_ratio,
    heading,
    median,
    paired_ratio,
    peak_rss_kib,
    render_table,
    rotated,
    say,
    timed,
    tree_files,
    tree_template,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
STARTUP_BUDGET_MS = 40.0
RSS_LIMIT_KIB = 32 * 1024
DEFAULT_ROUNDS = 15
TIMEOUT = 300.0
SMALL_FIXTURE = "hello-c-pie"


def console_script(folder: Path) -> list[str]:
    """A console script for this checkout, as pip writes one (``from binslim.cli import main``); this
    checkout comes first on its path, whatever copy pip installed."""
    script = folder / "binslim"
    script.write_text(
        f"#!{sys.executable}\n"
        "import re\nimport sys\n"
        f"sys.path.insert(0, {str(REPO_ROOT)!r})\n"
        "from binslim.cli import main\n"
        "if __name__ == '__main__':\n"
        "    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])\n"
        "    sys.exit(main())\n"
    )
    script.chmod(0o755)
    return [str(script)]


def alternate(
    commands: dict[str, list[str]],
    rounds: int,
    *,
    before: Any = None,
    cpu: dict[str, list[float]] | None = None,
) -> dict[str, list[float]]:
    """Each command once per round, in a rotated order; one untimed warm-up run each first. Wall seconds
    by label; ``cpu`` (when given) gets each run's user + system CPU seconds, which other load on the
    machine moves less than wall time."""
    samples: dict[str, list[float]] = {label: [] for label in commands}
    for round_index in range(-1, rounds):
        for label in rotated(list(commands), max(round_index, 0)):
            if before is not None:
                before(label)
            used = resource.getrusage(resource.RUSAGE_CHILDREN)
            seconds = timed(commands[label], timeout=TIMEOUT, cwd=REPO_ROOT)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            if round_index >= 0:
                samples[label].append(seconds)
                if cpu is not None:
                    spent = after.ru_utime + after.ru_stime - used.ru_utime - used.ru_stime
                    cpu.setdefault(label, []).append(spent)
    return samples


def bench_startup(work: Path, rounds: int, small: Path) -> dict[str, Any]:
    python = sys.executable
    script = console_script(work)
    out = work / "small.out"
    module = [python, "-m", "binslim"]
    commands = {
        "python3 -c pass": [python, "-c", "pass"],
        "python -m binslim --version": [*module, "--version"],
        "binslim --version (console script)": [*script, "--version"],
        "python -m binslim SMALL -o OUT --no-verify": [*module, str(small), "-o", str(out), "--no-verify"],
        "binslim SMALL -o OUT --no-verify (console script)": [
            *script,
            str(small),
            "-o",
            str(out),
            "--no-verify",
        ],
    }
    cpu: dict[str, list[float]] = {}
    samples = alternate(commands, rounds, cpu=cpu)
    floor, cpu_floor = samples["python3 -c pass"], cpu["python3 -c pass"]
    rows = {}
    for label, values in samples.items():
        added = [a - b for a, b in zip(values, floor)]
        added_cpu = [a - b for a, b in zip(cpu[label], cpu_floor)]
        first = label == "python3 -c pass"
        rows[label] = {
            "median_ms": 1000 * (median(values) or 0),
            "added_ms": None if first else 1000 * statistics.median(added),
            "cpu_ms": 1000 * (median(cpu[label]) or 0),
            "added_cpu_ms": None if first else 1000 * statistics.median(added_cpu),
        }
    return {"small_input": str(small), "small_size": small.stat().st_size, "rows": rows}


def bench_big(work: Path, rounds: int, big: Path, small: Path, tools: Tools) -> dict[str, Any]:
    assert tools.gnu_strip is not None
    gnu_out, ours_out = work / "big.gnu", work / "big.binslim"
    commands = {
        "strip --strip-all BIG -o OUT": [tools.gnu_strip, "--strip-all", str(big), "-o", str(gnu_out)],
        "binslim BIG -o OUT --no-verify": [
            sys.executable,
            "-m",
            "binslim",
            str(big),
            "-o",
            str(ours_out),
            "--no-verify",
        ],
    }

    def fresh(label: str) -> None:  # every run writes a new file, as a build does
        for path in (gnu_out, ours_out):
            bench.remove(path)

    samples = alternate(commands, rounds, before=fresh)
    labels = list(commands)
    rss = {
        "big": peak_rss_kib(commands[labels[1]], timeout=TIMEOUT, cwd=REPO_ROOT),
        "small": peak_rss_kib(
            [sys.executable, "-m", "binslim", str(small), "-o", str(work / "rss.small"), "--no-verify"],
            timeout=TIMEOUT,
            cwd=REPO_ROOT,
        ),
        "gnu_strip_big": peak_rss_kib(commands[labels[0]], timeout=TIMEOUT, cwd=REPO_ROOT),
    }
    return {
        "input": str(big),
        "input_size": big.stat().st_size,
        "median_ms": {label: 1000 * (median(values) or 0) for label, values in samples.items()},
        "ratio": paired_ratio(samples[labels[1]], samples[labels[0]]),
        "peak_rss_kib": rss,
        "output_sizes": {"gnu": gnu_out.stat().st_size, "binslim": ours_out.stat().st_size},
    }


# The floor for the many-file target: Python processes that do, for each file, only the file system work of
# an atomic rewrite as binslim does it (read it whole, write a new unnamed file beside it, give it the mode,
# link it and rename it over the old name), with no ELF work at all. argv: the number of processes (this one
# and forked children, each taking every n-th file), then the files.
FLOOR_SCRIPT = r"""
import os, sys
processes, files = int(sys.argv[1]), sys.argv[2:]
children = []
for number in range(1, processes):
    pid = os.fork()
    if pid == 0:
        break
    children.append(pid)
else:
    number = 0
temp = ".floor-%d.tmp" % number
for path in files[number::processes]:
    folder, name = os.path.split(path)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    mode = os.fstat(fd).st_mode
    data = os.read(fd, 1 << 20)
    os.close(fd)
    out = os.open(folder, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600)
    os.write(out, data[: len(data) * 3 // 4])
    os.fchmod(out, mode & 0o7777)
    folder_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    os.link(f"/proc/self/fd/{out}", temp, dst_dir_fd=folder_fd)
    os.rename(temp, name, src_dir_fd=folder_fd, dst_dir_fd=folder_fd)
    os.close(folder_fd)
    os.close(out)
if number:
    os._exit(0)
for pid in children:
    os.waitpid(pid, 0)
"""


def mount_of(path: Path) -> str:
    """The file system that holds ``path``, as /proc/self/mounts names it: "SOURCE TYPE OPTIONS"."""
    best, found = "", "unknown"
    real = os.path.realpath(path)
    with open("/proc/self/mounts", encoding="utf-8", errors="replace") as mounts:
        for line in mounts:
            fields = line.split()
            if len(fields) < 4:
                continue
            point = fields[1].replace("\\040", " ")
            inside = real == point or real.startswith(point.rstrip("/") + "/")
            if inside and len(point) >= len(best):
                best, found = point, f"{fields[0]} {fields[2]} {fields[3]}"
    return found


def bench_many(work: Path, rounds: int, tools: Tools) -> dict[str, Any]:
    from binslim.tree import default_jobs

    assert tools.gnu_strip is not None
    tree = tree_template(tools)
    files = tree_files(tree)
    copy = work / "tree"
    # As many processes as binslim -r starts on this machine for a tree this big (see tree._default_workers).
    processes = default_jobs()
    floor_one = "floor: python3, file system work only, 1 process"
    floor_all = f"floor: python3, file system work only, {processes} processes"
    commands = {
        "strip --strip-all FILE...": [tools.gnu_strip, "--strip-all", *files],
        "binslim -r DIR --no-verify": [sys.executable, "-m", "binslim", "-r", ".", "--no-verify"],
        floor_one: [sys.executable, "-c", FLOOR_SCRIPT, "1", *files],
    }
    if processes > 1:
        commands[floor_all] = [sys.executable, "-c", FLOOR_SCRIPT, str(processes), *files]
    samples: dict[str, list[float]] = {label: [] for label in commands}
    for round_index in range(-1, rounds):
        for label in rotated(list(commands), max(round_index, 0)):
            shutil.rmtree(copy, ignore_errors=True)
            shutil.copytree(tree, copy, symlinks=True)
            seconds = timed(commands[label], timeout=TIMEOUT, cwd=copy)
            if round_index >= 0:
                samples[label].append(seconds)
    shutil.rmtree(copy, ignore_errors=True)
    gnu = samples["strip --strip-all FILE..."]
    return {
        "files": len(files),
        "file_system": mount_of(work),
        "processes": processes,
        "median_ms": {label: 1000 * (median(values) or 0) for label, values in samples.items()},
        "ratio": paired_ratio(samples["binslim -r DIR --no-verify"], gnu),
        "floor_ratio": paired_ratio(samples[floor_one], gnu),
        "floor_all_ratio": paired_ratio(samples[floor_all], gnu) if processes > 1 else None,
    }


def bench_many_in(folder: Path, rounds: int, tools: Tools) -> dict[str, Any]:
    """bench_many with its copies in a temporary folder inside ``folder``, removed afterwards."""
    if not folder.is_dir():
        raise BenchError(f"{folder}: not a folder")
    with tempfile.TemporaryDirectory(prefix="speed-many-", dir=folder) as work:
        return bench_many(Path(work), rounds, tools)


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else "PASS" if ok else "FAIL"


def report(results: dict[str, Any]) -> list[tuple[str, str]]:
    targets = []
    heading(
        "1. start-up (median of alternated runs; added = median of per-round differences to python3 -c pass)"
    )
    startup = results["startup"]
    rows = []
    for label, row in startup["rows"].items():
        added, added_cpu = row["added_ms"], row["added_cpu_ms"]
        rows.append(
            [
                label,
                f"{row['median_ms']:.1f}",
                "-" if added is None else f"{added:+.1f}",
                f"{row['cpu_ms']:.1f}",
                "-" if added_cpu is None else f"{added_cpu:+.1f}",
            ]
        )
        if added is not None:
            targets.append(
                (
                    f"{label}: within {STARTUP_BUDGET_MS:g} ms of python3 -c pass",
                    verdict(added <= STARTUP_BUDGET_MS),
                )
            )
    say(render_table(["command", "median ms", "added ms", "CPU ms", "added CPU ms"], rows))
    say(f"(SMALL: {startup['small_input']}, {startup['small_size']:,} B)")

    big = results["big"]
    heading(f"2. one big file: {big['input']} ({big['input_size']:,} B)")
    say(render_table(["command", "median ms"], [[k, f"{v:.1f}"] for k, v in big["median_ms"].items()]))
    say(f"binslim / GNU strip, median of per-round ratios: {fmt_ratio(big['ratio'])}")
    sizes = big["output_sizes"]
    say(f"output sizes: GNU strip {sizes['gnu']:,} B, binslim {sizes['binslim']:,} B")
    rss = big["peak_rss_kib"]
    if rss["big"] is None:
        say("peak RSS not measured: /usr/bin/time is missing (Debian package `time`)")
        targets.append(("peak RSS < 32 MiB on the big file", "n/a"))
    else:
        say(
            f"peak RSS: binslim {rss['big'] / 1024:.1f} MiB on the big file, {rss['small'] / 1024:.1f} MiB on"
            f" SMALL; GNU strip {rss['gnu_strip_big'] / 1024:.1f} MiB on the big file"
        )
        targets.append(("peak RSS < 32 MiB on the big file", verdict(rss["big"] < RSS_LIMIT_KIB)))
    targets.append(
        ("big file: binslim <= 1.0x GNU strip", verdict(big["ratio"] is not None and big["ratio"] <= 1.0))
    )

    many = results["many"]
    heading(f"3. many files: {many['files']} small programs")
    say(f"(copies on: {many['file_system']})")
    say(render_table(["command", "median ms"], [[k, f"{v:.1f}"] for k, v in many["median_ms"].items()]))
    say(f"binslim -r / one strip call, median of per-round ratios: {fmt_ratio(many['ratio'])}")
    say(
        f"floor / one strip call: {fmt_ratio(many['floor_ratio'])} in one process"
        + (
            f", {fmt_ratio(many['floor_all_ratio'])} in {many['processes']}"
            " (as many as binslim -r starts here)"
            if many["floor_all_ratio"] is not None
            else ""
        )
        + ": the interpreter's start and an atomic rewrite's file system work alone, without any ELF work."
        " binslim -r cannot go below the second figure: its imports and ELF work come on top."
    )
    targets.append(
        (
            f"{many['files']} files: binslim -r <= 1.0x one strip call",
            verdict(many["ratio"] is not None and many["ratio"] <= 1.0),
        )
    )
    heading("targets")
    say(render_table(["target", "result"], [list(t) for t in targets]))
    return targets


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--rounds", type=int, default=DEFAULT_ROUNDS, help="alternated rounds per measurement"
    )
    parser.add_argument(
        "--big", type=Path, help="the big file (default: /usr/bin/node, else the largest fixture)"
    )
    parser.add_argument(
        "--many-dir",
        type=Path,
        help="where the many-file copies go, to measure another file system (default: build/bench)",
    )
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    bench.use_bytecode_cache()
    tools = bench.find_tools()
    if tools.gnu_strip is None:
        say("error: GNU strip not found (Debian's binutils)")
        return 1
    fixtures = bench.load_fixtures()
    small = Path(fixtures[SMALL_FIXTURE].path)
    big = options.big
    if big is None:
        node = Path("/usr/bin/node")
        big = (
            node
            if node.is_file()
            else max((Path(i.path) for i in fixtures.values()), key=lambda p: p.stat().st_size)
        )
    say(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; {os.cpu_count()} CPUs")
    started = time.time()
    bench.BENCH_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="speed-", dir=bench.BENCH_DIR) as folder:
        work = Path(folder)
        try:
            results = {
                "startup": bench_startup(work, options.rounds, small),
                "big": bench_big(work, max(5, options.rounds // 2), big, small, tools),
                "many": bench_many_in(options.many_dir or work, max(3, options.rounds // 3), tools),
            }
        except BenchError as exc:
            say(f"error: {exc}")
            return 1
    targets = report(results)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    say(f"\nload average at end: {load}; took {time.time() - started:.0f} s")
    if options.json is not None:
        document = {
            "schema": 1,
            "results": results,
            "targets": dict(targets),
            "load_average_end": os.getloadavg(),
        }
        bench.write_json_atomically(options.json, document)
    return 0


if __name__ == "__main__":
    sys.exit(main())
