#!/usr/bin/env python3
"""Sweep real ELF files: is binslim's output never bigger than GNU strip's, and does every output still load?

    python3 benchmarks/sweep.py FOLDER... [--venv DIR] [--make-venv DIR] [--dlopen] [--jobs N] [--json FILE]

For every ELF file under the folders (symlinks not followed, each inode once) it makes three copies in a
scratch folder, under the file's own name: the original, binslim's output (``binslim.strip``, the
default level; objects get debug stripping, as binslim always gives them) and GNU strip's
(``--strip-all``, objects ``--strip-debug``). The inputs are never modified. Then it checks that each
copy still loads:

- a dynamically linked program or library: ``ld.so --list COPY`` maps it and its dependencies (nothing of it
  runs), with ``LD_LIBRARY_PATH`` set to the original's folder and its RUNPATH/RPATH folders ($ORIGIN
  being the original's folder), so dependencies resolve as for the original;
- with ``--dlopen``, a shared library is also dlopen()ed (ctypes, in a child process), which runs its
  constructors; for Python extension modules and the libraries wheels bundle;
- a static program is run with ``--version`` (stdin closed, a timeout) and must exit as the original does.

A copy's check counts only when the original's copy passes the same check. ``--make-venv DIR`` first creates a
virtual environment there and pip-installs popular wheels (numpy, scipy, pillow, lxml, cryptography, pyyaml,
psutil, orjson, pydantic-core), and ``--venv DIR`` sweeps a virtual environment's site-packages.

It prints the tally (files, smaller, equal, larger than GNU strip, each larger case with the sections binslim
kept that GNU strip dropped, outputs that no longer load) and can write every per-file record as JSON. The
exit status is 0 when the sweep ran, 1 when it could not run (no GNU strip, say).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

WHEELS = ("numpy", "scipy", "pillow", "lxml", "cryptography", "pyyaml", "psutil", "orjson", "pydantic-core")
STRIP_TIMEOUT = 300.0
LOAD_TIMEOUT = 30.0
LD_SO = "/lib64/ld-linux-x86-64.so.2"
SIDES = ("original", "ours", "gnu")


def elf_files(folders: list[Path]) -> list[Path]:
    seen: set[tuple[int, int]] = set()
    found = []
    for folder in folders:
        for root, dirs, files in os.walk(folder):
            dirs.sort()
            for name in sorted(files):
                path = Path(root) / name
                try:
                    st = path.lstat()
                    if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) in seen:
                        continue
                    with open(path, "rb") as handle:
                        if handle.read(4) != b"\x7fELF":
                            continue
                except OSError:
                    continue
                seen.add((st.st_dev, st.st_ino))
                found.append(path)
    return found


def facts(path: Path) -> dict[str, Any]:
    """Type, machine, interpreter, dynamic section and search path of an ELF file (pyelftools)."""
    from elftools.elf.elffile import ELFFile

    with open(path, "rb") as handle:
        elf = ELFFile(handle)
        dynamic = elf.get_section_by_name(".dynamic")
        search: list[str] = []
        if dynamic is not None:
            for tag in dynamic.iter_tags():
                if tag.entry.d_tag in ("DT_RUNPATH", "DT_RPATH"):
                    value = tag.runpath if tag.entry.d_tag == "DT_RUNPATH" else tag.rpath
                    search += [p.replace("$ORIGIN", str(path.parent)) for p in value.split(":") if p]
        return {
            "type": elf["e_type"],
            "machine": elf["e_machine"],
            "interp": any(s["p_type"] == "PT_INTERP" for s in elf.iter_segments()),
            "dynamic": any(s["p_type"] == "PT_DYNAMIC" for s in elf.iter_segments()),
            "search": search,
        }


def sections(path: Path) -> set[str]:
    from elftools.elf.elffile import ELFFile

    with open(path, "rb") as handle:
        return {s.name for s in ELFFile(handle).iter_sections() if s.name}


def run(
    argv: list[str], *, timeout: float, env: dict[str, str] | None = None, cwd: str | None = None
) -> tuple[int, str]:
    try:
        done = subprocess.run(
            argv,
            capture_output=True,
            timeout=timeout,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return -1, "timed out"
    text = (done.stdout + done.stderr).decode(errors="replace")
    return done.returncode, text


def load_check(copy: Path, info: dict[str, Any], original: Path, dlopen: bool) -> tuple[bool, str]:
    """Whether ``copy`` loads (see the module docstring); the reason when it does not."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C",
        "LD_LIBRARY_PATH": ":".join([str(original.parent), *info["search"]]),
    }
    if info["dynamic"]:
        code, text = run([LD_SO, "--list", str(copy)], timeout=LOAD_TIMEOUT, env=env)
        if code != 0:
            return False, text.strip().splitlines()[-1] if text.strip() else f"exit {code}"
        if dlopen and not info["interp"]:
            script = "import ctypes, sys; ctypes.CDLL(sys.argv[1])"
            code, text = run([sys.executable, "-c", script, str(copy)], timeout=LOAD_TIMEOUT, env=env)
            if code != 0:
                return False, text.strip().splitlines()[-1] if text.strip() else f"exit {code}"
        return True, ""
    code, text = run([str(copy), "--version"], timeout=LOAD_TIMEOUT, env=env, cwd=str(copy.parent))
    return code == 0, f"exit {code}"


def sweep_one(path: Path, scratch: Path, dlopen: bool) -> dict[str, Any]:
    from binslim import strip
    from binslim.errors import BinslimError

    record: dict[str, Any] = {"path": str(path), "size": path.stat().st_size}
    work = Path(tempfile.mkdtemp(dir=scratch))
    try:
        copies = {side: work / side / path.name for side in SIDES}
        for copy in copies.values():
            copy.parent.mkdir()
        shutil.copyfile(path, copies["original"])
        try:
            info = facts(path)
        except Exception as exc:  # pyelftools rejects it: binslim and GNU strip still get their chance
            info = {"type": "?", "machine": "?", "interp": False, "dynamic": False, "search": []}
            record["facts_error"] = f"{type(exc).__name__}: {exc}"
        record["type"] = info["type"]
        relocatable = info["type"] == "ET_REL"
        try:
            result = strip(path, copies["ours"])
            record["ours"] = copies["ours"].stat().st_size
            record["overlay"] = result.overlay
            record["unused_segments"] = sum(r.size for r in result.removed if r.kind == "unused_segments")
        except BinslimError as exc:
            record["ours"] = None
            record["ours_error"] = str(exc)
        code, text = run(
            ["strip", "--strip-debug" if relocatable else "--strip-all", "-o", str(copies["gnu"]), str(path)],
            timeout=STRIP_TIMEOUT,
        )
        if code == 0 and copies["gnu"].exists():
            record["gnu"] = copies["gnu"].stat().st_size
        else:
            record["gnu"] = None
            record["gnu_error"] = text.strip().splitlines()[-1] if text.strip() else f"exit {code}"
        if record["ours"] is not None and record["gnu"] is not None and record["ours"] > record["gnu"]:
            record["kept_beyond_gnu"] = sorted(sections(copies["ours"]) - sections(copies["gnu"]))
        loadable = info["machine"] == "EM_X86_64" and info["type"] in ("ET_EXEC", "ET_DYN")
        if loadable:
            for side in SIDES:
                if side != "original" and record[side] is None:
                    continue
                os.chmod(copies[side], 0o755)
                ok, why = load_check(copies[side], info, path, dlopen)
                record[f"{side}_loads"] = ok
                if not ok:
                    record[f"{side}_load_error"] = why
                if side == "original" and not ok:
                    break  # no baseline: the outputs' checks would mean nothing
        return record
    finally:
        shutil.rmtree(work, ignore_errors=True)


def make_venv(folder: Path) -> None:
    if not (folder / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True, timeout=600)
    subprocess.run(
        [
            str(folder / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            *WHEELS,
        ],
        check=True,
        timeout=3600,
    )


def site_packages(venv: Path) -> list[Path]:
    return sorted(venv.glob("lib/python3*/site-packages"))


def tally(records: list[dict[str, Any]]) -> dict[str, Any]:
    both = [r for r in records if r.get("ours") is not None and r.get("gnu") is not None]
    larger = [r for r in both if r["ours"] > r["gnu"]]
    with_baseline = [r for r in records if r.get("original_loads")]
    return {
        "files": len(records),
        "bytes": sum(r["size"] for r in records),
        "compared": len(both),
        "smaller": sum(1 for r in both if r["ours"] < r["gnu"]),
        "equal": sum(1 for r in both if r["ours"] == r["gnu"]),
        "larger": len(larger),
        "bytes_ours": sum(r["ours"] for r in both),
        "bytes_gnu": sum(r["gnu"] for r in both),
        "ours_refused": [(r["path"], r["ours_error"]) for r in records if r.get("ours") is None],
        "gnu_refused": [(r["path"], r["gnu_error"]) for r in records if r.get("gnu") is None],
        "load_checked": len(with_baseline),
        "original_does_not_load": sum(1 for r in records if r.get("original_loads") is False),
        "ours_broken": [
            (r["path"], r.get("ours_load_error")) for r in with_baseline if r.get("ours_loads") is False
        ],
        "gnu_broken": [
            (r["path"], r.get("gnu_load_error")) for r in with_baseline if r.get("gnu_loads") is False
        ],
        "larger_cases": [
            {
                "path": r["path"],
                "ours": r["ours"],
                "gnu": r["gnu"],
                "overlay": r.get("overlay", 0),
                "kept_beyond_gnu": r.get("kept_beyond_gnu", []),
            }
            for r in larger
        ],
        "unused_segment_bytes": sum(r.get("unused_segments", 0) for r in records),
    }


def print_tally(label: str, summary: dict[str, Any]) -> None:
    print(f"== {label}")
    print(
        f"files {summary['files']:,} ({summary['bytes']:,} B);"
        f" compared with GNU strip {summary['compared']:,}:"
        f" smaller {summary['smaller']:,}, equal {summary['equal']:,}, larger {summary['larger']:,};"
        f" total binslim {summary['bytes_ours']:,} B, GNU {summary['bytes_gnu']:,} B"
    )
    print(f"unused PT_LOAD bytes dropped: {summary['unused_segment_bytes']:,} B")
    print(
        f"load-checked {summary['load_checked']:,} (originals that do not load by themselves:"
        f" {summary['original_does_not_load']:,});"
        f" binslim outputs that no longer load: {len(summary['ours_broken'])};"
        f" GNU strip outputs that no longer load: {len(summary['gnu_broken'])}"
    )
    for title, rows in (
        ("binslim refused", summary["ours_refused"]),
        ("GNU strip refused", summary["gnu_refused"]),
        ("binslim output does not load", summary["ours_broken"]),
        ("GNU strip output does not load", summary["gnu_broken"]),
    ):
        for path, why in rows:
            print(f"  {title}: {path}: {why}")
    for case in summary["larger_cases"]:
        print(
            f"  larger: {case['path']}: {case['ours']:,} B vs GNU {case['gnu']:,} B"
            f" (+{case['ours'] - case['gnu']:,}); overlay {case['overlay']:,} B;"
            f" kept beyond GNU: {', '.join(case['kept_beyond_gnu']) or '-'}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="*", type=Path)
    parser.add_argument("--venv", type=Path, help="also sweep this virtual environment's site-packages")
    parser.add_argument(
        "--make-venv", type=Path, help="create DIR and pip-install popular wheels into it first"
    )
    parser.add_argument("--dlopen", action="store_true", help="also dlopen() every shared library")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--json", type=Path, help="write every record and the tallies here")
    args = parser.parse_args(argv)
    if shutil.which("strip") is None:
        print("sweep.py: GNU strip not found (Debian's binutils)", file=sys.stderr)
        return 1
    if args.make_venv is not None:
        make_venv(args.make_venv)
        args.venv = args.venv or args.make_venv
    groups: list[tuple[str, list[Path]]] = [(str(folder), [folder]) for folder in args.folders]
    if args.venv is not None:
        groups.append((f"venv {args.venv}", site_packages(args.venv)))
    if not groups:
        parser.error("nothing to sweep: give folders or --venv")
    document: dict[str, Any] = {"schema": 1, "groups": {}}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="binslim-sweep-") as scratch:
        for label, folders in groups:
            files = elf_files(folders)
            print(f"{label}: {len(files)} ELF files", file=sys.stderr, flush=True)
            with concurrent.futures.ProcessPoolExecutor(max_workers=args.jobs) as pool:
                futures = [pool.submit(sweep_one, path, Path(scratch), args.dlopen) for path in files]
                records = [future.result() for future in futures]
            summary = tally(records)
            print_tally(label, summary)
            document["groups"][label] = {"tally": summary, "records": records}
    print(f"{time.monotonic() - started:.0f} s", file=sys.stderr)
    if args.json is not None:
        tmp = args.json.with_name(args.json.name + ".tmp")
        tmp.write_text(json.dumps(document, indent=1) + "\n")
        os.replace(tmp, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
