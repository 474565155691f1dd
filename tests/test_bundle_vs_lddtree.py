"""benchmarks/bundle_vs_lddtree.py on the pthread_exit case: lddtree's root aborts in glibc for want of
libgcc_s, binslim's runs, and the like-for-like root (lddtree's plus exactly what it missed) runs and is the
one binslim's size is held against beside lddtree's own."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import IN_CI, load_benchmark, require_tool


def test_pthread_exit_case_against_lddtree(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        if IN_CI:
            pytest.fail("the benchmark runs programs under chroot, which needs root (CI runs as root)")
        pytest.skip("the benchmark runs programs under chroot, which needs root")
    require_tool("lddtree")
    require_tool("gcc")
    benchmark = load_benchmark("bundle_vs_lddtree")
    (tmp_path / "src").mkdir()
    (case,) = [c for c in benchmark.cases(tmp_path / "src") if c.name.startswith("threadexit")]
    row = benchmark.measure(case, tmp_path)

    lddtree, completed, binslim = row["lddtree"], row["lddtree + missed"], row["binslim"]
    assert lddtree["runs"] is False
    assert lddtree["root_stderr"] == "libgcc_s.so.1 must be installed for pthread_exit to work"
    assert [os.path.basename(path) for path in completed["added"]] == ["libgcc_s.so.1"]
    libgcc = os.path.realpath("/usr/lib/x86_64-linux-gnu/libgcc_s.so.1")
    assert completed["bytes"] == lddtree["bytes"] + os.path.getsize(libgcc)
    assert completed["runs"] is True and binslim["runs"] is True and row["binslim --upx"]["runs"] is True
    assert binslim["bytes"] == binslim["report_bytes"] < completed["bytes"]
    assert binslim["bytes"] > lddtree["bytes"]

    table = benchmark.table([row]).splitlines()
    assert "| vs lddtree | vs lddtree + missed |" in table[0]
    cells = [cell.strip() for cell in table[2].strip("|").split("|")]
    assert cells[1:7] == [
        f"{lddtree['bytes']:,}",
        "**no**",
        f"{completed['bytes']:,}",
        "yes",
        f"{binslim['bytes']:,}",
        "yes",
    ]
    assert cells[7].startswith("+") and cells[8].startswith("-")
