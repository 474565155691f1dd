"""binslim bundle against ``lddtree --copy-to-tree`` (Debian's pax-utils) on real programs.

For each program: the root's size (exact bytes of its regular files) and whether the program, run inside
that root with /proc mounted (as a container engine runs it), does what it does on the host: same exit code,
stdout and stderr. Needs root (chroot), gcc, jq, sqlite3 and lddtree: ``bash scripts/install.sh --test``.

    python3 benchmarks/bundle_vs_lddtree.py            # the table in Markdown
    python3 benchmarks/bundle_vs_lddtree.py --json F   # also every figure as JSON

Exit status 0 when it ran, 1 when it could not (a tool missing, not root).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

TIMEOUT = 300
ENV = {"PATH": "/usr/bin:/bin", "LANG": "C"}


@dataclass
class Case:
    name: str
    program: str
    args: tuple[str, ...]
    stdin: bytes = b""
    bundle_flags: tuple[str, ...] = ()  # what a user adds after reading binslim's note


def cases(work: Path) -> list[Case]:
    built = {}
    for name in ("getpw", "iconv"):
        out = work / name
        subprocess.run(
            ["gcc", "-O1", "-o", str(out), str(REPO_ROOT / "testdata" / "c" / f"{name}.c")],
            check=True,
            timeout=TIMEOUT,
        )
        built[name] = str(out)
    found = [
        Case("jq", "/usr/bin/jq", ("-c", "[.[] | . * 2]"), b"[1, 2, 3]"),
        Case("sqlite3", "/usr/bin/sqlite3", (":memory:",), b"select 6 * 7, sqlite_version() is not null;"),
        Case("getpw (getpwnam)", built["getpw"], ()),
        Case("iconv (gconv)", built["iconv"], (), bundle_flags=("--gconv", "ISO-8859-15")),
    ]
    for extra in (
        Case("curl", "/usr/bin/curl", ("--version",)),
        Case("python3", os.path.realpath("/usr/bin/python3"), ("-S", "-c", "print(sum(range(10)))")),
        Case("git", "/usr/bin/git", ("--version",)),
    ):
        if os.path.exists(extra.program):
            found.append(extra)
    return found


def run(argv: list[str], stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(argv, input=stdin, capture_output=True, timeout=TIMEOUT, env=ENV, check=False)


def in_root(root: Path, case: Case) -> subprocess.CompletedProcess[bytes]:
    """Run the case in ``root`` with /proc and /dev, as a container engine (and binslim's check) runs it."""
    from binslim.bundler import in_root_command

    made = [path for path in (root / "proc", root / "dev") if not path.exists()]
    for path in made:
        path.mkdir()
    try:
        command = in_root_command(str(root), case.program) or []
        return run(["unshare", "--mount", "--pid", "--fork", *command, *case.args], case.stdin)
    finally:
        for path in made:
            path.rmdir()


def tree_bytes(root: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                total += os.lstat(path).st_size
    return total


def same(a: subprocess.CompletedProcess[bytes], b: subprocess.CompletedProcess[bytes]) -> bool:
    return (a.returncode, a.stdout, a.stderr) == (b.returncode, b.stdout, b.stderr)


def measure(case: Case, work: Path) -> dict[str, object]:
    host = run([case.program, *case.args], case.stdin)
    row: dict[str, object] = {"program": case.name, "path": case.program}
    lddtree_root = work / f"lddtree-{len(os.listdir(work))}"
    done = run(["lddtree", "--copy-to-tree", str(lddtree_root), case.program])
    if done.returncode != 0:
        row["lddtree"] = {"error": done.stderr.decode(errors="replace").strip()}
    else:
        inside = in_root(lddtree_root, case)
        row["lddtree"] = {"bytes": tree_bytes(lddtree_root), "runs": same(host, inside), **why(host, inside)}
    for label, flags in (("binslim", ()), ("binslim --upx", ("--upx",))):
        root = work / f"binslim-{len(os.listdir(work))}"
        argv = [sys.executable, "-m", "binslim", "bundle", case.program, "-o", str(root), "--json"]
        # binslim's own verification has no stdin: those cases are checked by the run below only.
        argv += ["--no-verify"] if case.stdin else [f"--verify-args={shlex.join(case.args)}"]
        done = subprocess.run(
            [*argv, *case.bundle_flags, *flags],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
            check=False,
        )
        if done.returncode != 0:
            row[label] = {"error": done.stderr.strip()}
            continue
        report = json.loads(done.stdout)
        inside = in_root(root, case)
        row[label] = {
            "bytes": tree_bytes(root),
            "report_bytes": report["total_bytes"],
            "runs": same(host, inside),
            **why(host, inside),
            "flags": list(case.bundle_flags + flags),
        }
    return row


def why(
    host: subprocess.CompletedProcess[bytes], inside: subprocess.CompletedProcess[bytes]
) -> dict[str, str]:
    """What the run in the root printed on stderr, when it differs from the host's run."""
    if same(host, inside):
        return {}
    return {
        "root_stderr": inside.stderr.decode(errors="replace").strip()[:300],
        "exit": str(inside.returncode),
    }


def cell(entry: object) -> tuple[str, str]:
    if not isinstance(entry, dict):
        return ("-", "-")
    if "error" in entry:
        refused = "does not behave inside the root" in str(entry["error"])
        return ("refused (exit 3), nothing written", "-") if refused else ("error", "-")
    return (f"{entry['bytes']:,}", "yes" if entry["runs"] else "**no**")


def table(rows: list[dict[str, object]]) -> str:
    lines = [
        "| program | lddtree root (B) | runs | binslim root (B) | runs | vs lddtree"
        " | binslim --upx (B) | runs |",
        "| --- | ---: | :---: | ---: | :---: | ---: | ---: | :---: |",
    ]
    for row in rows:
        lt, bs, upx = row.get("lddtree"), row.get("binslim"), row.get("binslim --upx")
        ratio = "-"
        if isinstance(lt, dict) and isinstance(bs, dict) and "bytes" in lt and "bytes" in bs:
            ratio = f"{(int(bs['bytes']) - int(lt['bytes'])) / int(lt['bytes']) * 100:+.2f}%"
        flags = bs.get("flags") if isinstance(bs, dict) else None
        name = f"{row['program']}" + (f" (`{' '.join(flags)}`)" if flags else "")
        cells = [name, *cell(lt), *cell(bs), ratio, *cell(upx)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", metavar="FILE", help="also write every figure here")
    options = parser.parse_args(argv)
    missing = [tool for tool in ("lddtree", "unshare", "gcc") if shutil.which(tool) is None]
    if missing or os.geteuid() != 0:
        print(f"bundle_vs_lddtree: needs root and {', '.join(missing) or 'nothing else'}", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="binslim-bench-bundle-") as scratch:
        work = Path(scratch)
        (work / "src").mkdir()
        rows = [measure(case, work) for case in cases(work / "src")]
    print(table(rows))
    if options.json:
        temp = options.json + ".tmp"
        with open(temp, "w", encoding="utf-8") as handle:
            json.dump({"schema": 1, "rows": rows}, handle, indent=2)
        os.replace(temp, options.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
