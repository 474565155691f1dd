"""binslim inspect: every byte counted once, kinds checked against pyelftools, savings against real strip
runs, symbols from LIEF (and without it), the UPX verdict, text and --json output."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
from elftools.elf.elffile import ELFFile

from binslim import strip
from binslim.inspect import KINDS, inspect
from binslim.runner import Completed, run
from testdata.build import Fixture, fixture_names, overlay_payload
from tests.helpers import require_tool
from tests.helpers import run_binslim as binslim

TIMEOUT = 120
ALL = fixture_names()
DEBUG_PREFIXES = (".debug", ".zdebug", ".gnu.debuglto_")


def file_sections(path: str | Path) -> list[dict[str, Any]]:
    with open(path, "rb") as handle:
        return [
            {"name": s.name, "type": s["sh_type"], "size": s["sh_size"], "flags": s["sh_flags"]}
            for s in ELFFile(handle).iter_sections()
        ]


@pytest.mark.parametrize("name", ALL)
def test_bytes_by_kind_add_up_to_the_file_size(fixtures: dict[str, Fixture], name: str) -> None:
    path = fixtures[name].path
    report = inspect(path, symbols=False, upx=False).to_dict()
    assert list(report["bytes_by_kind"]) == list(KINDS)
    assert sum(report["bytes_by_kind"].values()) == report["size"] == Path(path).stat().st_size
    assert all(count >= 0 for count in report["bytes_by_kind"].values())
    # Independent reader: the debug kind is exactly the unloaded debug sections' bytes (Rust loads
    # .debug_gdb_scripts: that one is read-only data).
    sections = file_sections(path)
    debug = sum(
        s["size"]
        for s in sections
        if s["name"].startswith(DEBUG_PREFIXES) and s["type"] != "SHT_NOBITS" and not s["flags"] & 0x2
    )  # SHF_ALLOC
    assert report["bytes_by_kind"]["debug"] == debug
    symbols = sum(s["size"] for s in sections if s["type"] == "SHT_SYMTAB")
    assert report["bytes_by_kind"]["symbols"] >= symbols
    code = sum(s["size"] for s in sections if s["flags"] & 0x4 and s["type"] != "SHT_NOBITS")  # SHF_EXECINSTR
    assert report["bytes_by_kind"]["code"] == code


@pytest.mark.parametrize("level", ["all", "sections"])
def test_stripped_and_headerless_files_add_up_too(
    fixtures: dict[str, Fixture], level: str, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    strip(fixtures["hello-c-overlay"].path, out, level=level)
    report = inspect(out, upx=False)
    assert sum(report.bytes_by_kind.values()) == out.stat().st_size
    assert report.bytes_by_kind["overlay"] == len(overlay_payload())
    assert report.bytes_by_kind["debug"] == 0
    if level == "sections":
        assert report.symbols.table == "" and report.symbols.reason == "no symbol table"
        assert report.bytes_by_kind["code"] > 0 and report.bytes_by_kind["headers"] > 0


def test_overlay_is_counted(fixtures: dict[str, Fixture]) -> None:
    with_overlay = inspect(fixtures["hello-c-overlay"].path, symbols=False, upx=False).bytes_by_kind
    without = inspect(fixtures["hello-c-pie"].path, symbols=False, upx=False).bytes_by_kind
    assert with_overlay["overlay"] == len(overlay_payload()) and without["overlay"] == 0
    assert {k: v for k, v in with_overlay.items() if k != "overlay"} == {
        k: v for k, v in without.items() if k != "overlay"
    }


@pytest.mark.parametrize(
    "name", ["hello-c-pie", "hello-cxx", "hello-go", "hello-go-mips", "libgreet", "greet-obj"]
)
def test_savings_are_what_strip_gives(fixtures: dict[str, Fixture], name: str, tmp_path: Path) -> None:
    report = inspect(fixtures[name].path, symbols=False, upx=False)
    for saving in report.savings:
        if saving.size is None:
            assert name in ("libgreet", "greet-obj") and saving.level == "sections", saving
            assert "section headers" in saving.refused
            continue
        out = tmp_path / saving.level
        strip(fixtures[name].path, out, level=saving.level)
        assert saving.size == out.stat().st_size, saving
    assert [s.option for s in report.savings] == ["--strip-debug", "--strip-all", "--strip-section-headers"]


def test_largest_sections_and_symbols(fixtures: dict[str, Fixture]) -> None:
    report = inspect(fixtures["hello-cxx"].path, top=5, upx=False)
    sizes = [s.size for s in report.largest_sections]
    assert sizes == sorted(sizes, reverse=True) and len(sizes) == 5
    assert report.largest_sections[0].name.startswith(".debug")
    symbols = report.symbols
    assert symbols.table == ".symtab" and symbols.count >= len(symbols.largest) == 5
    assert "LIEF" in symbols.demangled_by and not symbols.reason
    assert symbols.largest[0].name == "main" and symbols.largest[0].type == "func"
    assert symbols.largest[0].section == ".text"
    assert any(s.name.startswith("std::") for s in symbols.largest), symbols.largest


def test_rust_v0_names_are_demangled(fixtures: dict[str, Fixture]) -> None:
    require_tool("c++filt", "binutils")
    report = inspect(fixtures["hello-rust"].path, top=5, upx=False)
    assert "c++filt" in report.symbols.demangled_by
    assert not any(s.name.startswith("_R") for s in report.symbols.largest)


def test_symbols_without_lief(fixtures: dict[str, Fixture]) -> None:
    """When LIEF fails (here: its child crashes), our own reader ranks the same symbols."""

    def lief_crashes(argv: list[str], **kwargs: Any) -> Completed:
        if argv[0] == sys.executable:
            return Completed(tuple(argv), -11, b"", b"Segmentation fault", 0.1, False, 0)
        return run(argv, **kwargs)

    with_lief = inspect(fixtures["hello-go"].path, top=8, upx=False)
    without = inspect(fixtures["hello-go"].path, top=8, upx=False, runner=lief_crashes)
    assert "LIEF exited with -11" in without.symbols.reason and "LIEF" not in without.symbols.demangled_by
    assert without.symbols.count == with_lief.symbols.count
    # Go names are not mangled, so both readers give the same list.
    ranked = [(s.name, s.size) for s in with_lief.symbols.largest]
    assert [(s.name, s.size) for s in without.symbols.largest] == ranked


def test_upx_verdict(fixtures: dict[str, Fixture]) -> None:
    native = inspect(fixtures["hello-c-pie"].path, symbols=False).upx
    assert native.would_pack and not native.reason
    foreign = inspect(fixtures["hello-go-mips"].path, symbols=False).upx
    assert not foreign.would_pack and "mips" in foreign.reason
    library = inspect(fixtures["libgreet"].path, symbols=False).upx
    assert not library.would_pack and "shared library" in library.reason
    if shutil.which("upx") is not None:
        assert native.available and native.version


def test_cli_text(fixtures: dict[str, Fixture]) -> None:
    done = binslim("inspect", fixtures["hello-rust"].path)
    assert done.returncode == 0, done.stderr
    for heading in (
        "bytes by kind:",
        "largest sections:",
        "largest symbols (.symtab",
        "savings:",
        "--strip-section-headers",
        "--upx",
    ):
        assert heading in done.stdout
    total = Path(fixtures["hello-rust"].path).stat().st_size
    (total_line,) = [line for line in done.stdout.splitlines() if line.strip().startswith("total")]
    assert f"{total:,} B" in total_line and "100.0%" in total_line


def test_cli_json(fixtures: dict[str, Fixture]) -> None:
    done = binslim("inspect", fixtures["hello-go-arm"].path, "--json", "--top", "3")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["schema"] == 1 and report["machine"] == "arm" and report["class"] == "ELF32"
    assert sum(report["bytes_by_kind"].values()) == report["size"]
    assert len(report["largest_sections"]) == 3 and len(report["symbols"]["largest"]) == 3
    assert {s["level"] for s in report["savings"]} == {"debug", "all", "sections"}
    assert all(s["saved"] == report["size"] - s["size"] for s in report["savings"])
    assert set(report["upx"]) == {"would_pack", "reason", "available", "version"}


def test_cli_errors_and_the_slim_command_still_works(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    done = binslim("inspect", str(text))
    assert done.returncode == 1 and done.stderr.strip() == f"error: {text}: not an ELF file"
    # A file named "inspect" is still slimmed, given as a path.
    named = tmp_path / "inspect"
    shutil.copy2(fixtures["hello-c-pie"].path, named)
    slimmed = binslim("./inspect", "-o", "out", "--no-verify", cwd=tmp_path)
    assert slimmed.returncode == 0, slimmed.stderr
    assert (tmp_path / "out").stat().st_size < named.stat().st_size
    assert "inspect FILE" in binslim("--help").stdout


def test_a_fifo_is_refused_at_once(tmp_path: Path) -> None:
    """Nothing writes into the FIFO: the reader's open used to block forever. Also ElfFile itself, for
    callers that checked the path before it was swapped for a FIFO (binslim -r after its walk)."""
    import os
    import subprocess

    from binslim.elf.reader import ElfFile
    from binslim.errors import NotELFError
    from tests.helpers import run_binslim

    fifo = tmp_path / "prog"
    os.mkfifo(fifo)
    try:
        done = run_binslim("inspect", str(fifo), timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("binslim inspect blocked on a FIFO")
    assert (done.returncode, done.stdout, done.stderr) == (1, "", f"error: {fifo}: not a regular file\n")
    with pytest.raises(NotELFError, match=f"^{fifo}: not a regular file$"):
        ElfFile(str(fifo))
