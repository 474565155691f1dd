"""binslim bundle against ``lddtree --copy-to-tree`` (Debian's pax-utils) on real programs.

For each program: the root's size (exact bytes of its regular files) and whether the program, run inside
that root with /proc mounted (as a container engine runs it), does what it does on the host: same exit code,
stdout and stderr. Needs root (chroot), gcc, jq, sqlite3 and lddtree: ``bash scripts/install.sh --test``.

Beside lddtree's root and binslim's, a like-for-like root: lddtree's completed with what it missed (each file
binslim's report lists that lddtree's root lacks, copied unstripped from the host as lddtree copies, and the
files binslim generated, taken from binslim's root). binslim's size is given against both.

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
    for name in ("getpw", "iconv", "threadexit"):
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
        Case("threadexit (pthread_exit)", built["threadexit"], ()),
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


# Merged /usr: each of these folders is the same folder as its /usr twin, so a file is "there" under either.
MERGED_USR = ("/bin/", "/sbin/", "/lib/", "/lib32/", "/lib64/", "/libx32/")


def merged_usr_key(path: str) -> str:
    """One spelling for the two names merged /usr gives a file (``/usr/lib/x`` and ``/lib/x``)."""
    path = os.path.normpath(path)
    if path.startswith("/usr/") and path[4:].startswith(MERGED_USR):
        return path[4:]
    return path


def resolve_in_report(path: str, links: dict[str, str]) -> str:
    """Where ``path`` ends after following the report's symlinks (merged-/usr keys both ways)."""
    for _ in range(40):
        key = merged_usr_key(path)
        target = links.get(key)
        if target is None:
            return key
        path = target if target.startswith("/") else os.path.join(os.path.dirname(key), target)
    raise RuntimeError(f"symlink loop at {path} in binslim's report")


def names_in_root(root: Path) -> set[str]:
    """The merged-/usr key of each regular file in ``root`` (the folder links of a root are followed)."""
    names = set()
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                names.add(merged_usr_key("/" + os.path.relpath(path, root)))
    return names


def complete_lddtree_root(
    lddtree_root: Path, binslim_root: Path, report: dict[str, object], out: Path
) -> list[str]:
    """``out``: a copy of lddtree's root plus each file binslim's report lists that lddtree's root lacks,
    under any of the names the report gives it (its path and the symlinks to it, either side of merged
    /usr). Host files are copied unstripped, as lddtree copies them; generated files come from binslim's
    root; the report's symlinks to an added file come too (they are not regular files: 0 bytes). Returns
    the paths added."""
    entries = report["files"]
    assert isinstance(entries, list)
    links = {
        merged_usr_key(entry["path"]): entry["link_target"] for entry in entries if entry["kind"] == "symlink"
    }
    aliases: dict[str, list[str]] = {}
    for entry in entries:
        if entry["kind"] == "symlink":
            aliases.setdefault(resolve_in_report(entry["path"], links), []).append(entry["path"])
    present = names_in_root(lddtree_root)
    shutil.copytree(lddtree_root, out, symlinks=True)
    added = []
    for entry in entries:
        if entry["kind"] != "file":
            continue
        key = merged_usr_key(entry["path"])
        names = [entry["path"], *aliases.get(key, [])]
        if any(merged_usr_key(name) in present for name in names):
            continue
        source = entry["source"] if entry["source"] else str(binslim_root / entry["path"].lstrip("/"))
        destination = out / entry["path"].lstrip("/")
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, destination)
        added.append(entry["path"])
        for alias in names[1:]:
            link = out / alias.lstrip("/")
            if not os.path.lexists(link):
                link.parent.mkdir(parents=True, exist_ok=True)
                os.symlink(os.path.relpath(entry["path"], os.path.dirname(alias)), link)
    return added


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
        if label == "binslim" and isinstance(row.get("lddtree"), dict) and "bytes" in row["lddtree"]:
            completed_root = work / f"lddtree-completed-{len(os.listdir(work))}"
            added = complete_lddtree_root(lddtree_root, root, report, completed_root)
            inside = in_root(completed_root, case)
            row["lddtree + missed"] = {
                "bytes": tree_bytes(completed_root),
                "runs": same(host, inside),
                **why(host, inside),
                "added": added,
            }
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


def ratio(ours: object, theirs: object) -> str:
    """binslim's size against another root's, in percent; "-" when either has no size."""
    if not (isinstance(ours, dict) and isinstance(theirs, dict) and "bytes" in ours and "bytes" in theirs):
        return "-"
    return f"{(int(ours['bytes']) - int(theirs['bytes'])) / int(theirs['bytes']) * 100:+.2f}%"


def table(rows: list[dict[str, object]]) -> str:
    lines = [
        "| program | lddtree root (B) | runs | lddtree + what it missed (B) | runs | binslim root (B) | runs"
        " | vs lddtree | vs lddtree + missed | binslim --upx (B) | runs |",
        "| --- | ---: | :---: | ---: | :---: | ---: | :---: | ---: | ---: | ---: | :---: |",
    ]
    for row in rows:
        lt, completed = row.get("lddtree"), row.get("lddtree + missed")
        bs, upx = row.get("binslim"), row.get("binslim --upx")
        flags = bs.get("flags") if isinstance(bs, dict) else None
        name = f"{row['program']}" + (f" (`{' '.join(flags)}`)" if flags else "")
        cells = [
            name,
            *cell(lt),
            *cell(completed),
            *cell(bs),
            ratio(bs, lt),
            ratio(bs, completed),
            *cell(upx),
        ]
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
    for row in rows:
        completed = row.get("lddtree + missed")
        if isinstance(completed, dict):
            print(
                f"\n{row['program']}: lddtree's root + {', '.join(completed['added']) or 'nothing'}", end=""
            )
    print()
    if options.json:
        temp = options.json + ".tmp"
        with open(temp, "w", encoding="utf-8") as handle:
            json.dump({"schema": 1, "rows": rows}, handle, indent=2)
        os.replace(temp, options.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
