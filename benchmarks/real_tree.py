#!/usr/bin/env python3
"""A real tree: strip every shared library of an installed package, then run that package's own tests.

    python3 benchmarks/real_tree.py [--venv DIR] [--tests ARGS] [--json FILE]

Creates a throwaway virtual environment (or reuses --venv), pip-installs numpy, pytest and hypothesis into it,
runs ``binslim -r`` over numpy's folders in site-packages (numpy/ and numpy.libs/, with verification on:
libraries get the static checks), and then runs a part of numpy's own test suite against the stripped
copy, in a fresh process. It prints the bytes before and after (and what GNU strip --strip-all makes of the
same files, for comparison), the test result, and the times. Needs PyPI (or a pip index set in PIP_*
variables); takes a few minutes.

numpy's wheels are built stripped of debug info but keep their symbol tables (.symtab, .strtab) and .comment,
so the saving is modest; the point is that nothing breaks.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("numpy", "pytest", "hypothesis")
# The core array, linalg, fft and random tests, without the ones numpy marks slow: a few minutes on 2 cores.
DEFAULT_TESTS = "--pyargs numpy._core numpy.linalg numpy.fft numpy.random -m 'not slow' -q"


def run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    print("+", " ".join(argv), file=sys.stderr, flush=True)
    return subprocess.run(argv, text=True, check=False, **kwargs)


def elf_files(folders: list[Path]) -> list[Path]:
    found = []
    for folder in folders:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and not path.is_symlink():
                with open(path, "rb") as handle:
                    if handle.read(4) == b"\x7fELF":
                        found.append(path)
    return found


def gnu_strip_size(files: list[Path]) -> int | None:
    """What ``strip --strip-all`` leaves of the same files, stripped as copies."""
    strip = shutil.which("strip")
    if strip is None:
        return None
    with tempfile.TemporaryDirectory(prefix="real-tree-strip-") as scratch:
        copies = []
        for index, path in enumerate(files):
            copy = Path(scratch) / f"{index}-{path.name}"
            shutil.copyfile(path, copy)
            copies.append(copy)
        run([strip, "--strip-all", *map(str, copies)])
        return sum(copy.stat().st_size for copy in copies)


def numpy_version(python: Path) -> str:
    done = run([str(python), "-c", "import numpy; print(numpy.__version__)"], capture_output=True)
    return done.stdout.strip()


def run_tests(python: Path, args: str) -> dict[str, Any]:
    """numpy's tests in a fresh process, from / so the installed (stripped) numpy is the one imported."""
    started = time.perf_counter()
    command = f"cd / && {python} -m pytest -p no:cacheprovider {args}"
    tests = run(["/bin/sh", "-c", command], capture_output=True)
    tail = tests.stdout.strip().splitlines()[-1:] or tests.stderr.strip().splitlines()[-1:]
    return {"returncode": tests.returncode, "last_line": tail[0] if tail else "",
            "seconds": round(time.perf_counter() - started, 1), "args": args}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--venv", type=Path, help="use (and keep) this virtual environment")
    parser.add_argument("--tests", default=DEFAULT_TESTS, help="pytest arguments for numpy's tests")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--skip-tests", action="store_true", help="strip only")
    parser.add_argument("--no-baseline", action="store_true", help="skip the test run before stripping")
    options = parser.parse_args()

    temporary = None
    venv = options.venv
    if venv is None:
        temporary = tempfile.mkdtemp(prefix="binslim-real-tree-")
        venv = Path(temporary) / "venv"
    try:
        python = venv / "bin" / "python"
        if not python.exists():
            if run([sys.executable, "-m", "venv", str(venv)]).returncode != 0:
                return 1
        if run([str(python), "-m", "pip", "install", "--quiet", *PACKAGES]).returncode != 0:
            return 1
        site = Path(run([str(python), "-c", "import numpy, os; print(os.path.dirname(os.path.dirname("
                         "numpy.__file__)))"], capture_output=True).stdout.strip())  # fmt: skip
        folders = [folder for folder in (site / "numpy", site / "numpy.libs") if folder.is_dir()]
        files = elf_files(folders)
        before = sum(path.stat().st_size for path in files)
        gnu = gnu_strip_size(files)
        baseline: dict[str, Any] = {"skipped": True}
        if not options.skip_tests and not options.no_baseline:
            baseline = run_tests(python, options.tests)

        started = time.perf_counter()
        done = run([sys.executable, "-m", "binslim", "-r", *map(str, folders), "--json"], capture_output=True,
                   cwd=REPO_ROOT)  # fmt: skip
        strip_seconds = time.perf_counter() - started
        if done.returncode != 0:
            print(done.stderr, file=sys.stderr)
            return 1
        summary = json.loads(done.stdout)["summary"]
        after = sum(path.stat().st_size for path in files)
        assert after == summary["bytes"]["after"] and before == summary["bytes"]["before"]

        test_result: dict[str, Any] = {"skipped": True}
        if not options.skip_tests:
            test_result = run_tests(python, options.tests)

        figures = {
            "package": "numpy " + numpy_version(python),
            "elf_files": len(files),
            "bytes_before": before,
            "bytes_after": after,
            "saved": before - after,
            "saved_percent": round(100 * (before - after) / before, 2) if before else 0.0,
            "gnu_strip_all_bytes": gnu,
            "binslim_seconds": round(strip_seconds, 2),
            "summary": summary,
            "tests_before_stripping": baseline,
            "tests": test_result,
        }
        print(json.dumps(figures, indent=2))
        if options.json is not None:
            options.json.write_text(json.dumps(figures, indent=2) + "\n")
        return 0 if test_result.get("returncode", 0) == 0 else 1
    finally:
        if temporary is not None:
            shutil.rmtree(temporary, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
