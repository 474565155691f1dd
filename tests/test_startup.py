"""Start-up: what a command imports. Every module here is imported in a fresh interpreter, as a user's
``binslim`` call would; the times themselves are measured by benchmarks/startup.py, not here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from testdata.build import Fixture
from tests.helpers import REPO_ROOT

TIMEOUT = 120
MARK = "--- modules ---\n"

# Imported only by the commands that need them.
STAGES = (
    "binslim.upx",
    "binslim.verifier",
    "binslim.runner",
    "binslim.inspect",
    "binslim.tree",
    "binslim.debuginfo",
    "binslim.goinfo",
    "binslim.sstrip",
    "binslim.report_schema",
    "binslim.progress",
)
THIRD_PARTY = ("elftools", "lief", "jsonschema", "click")
# Standard modules a plain strip has no use for: dataclasses (and the inspect/ast it pulls in), subprocess,
# json (only --json), multiprocessing (never: -r forks its workers itself), tempfile (only dry runs and UPX).
HEAVY_STDLIB = ("dataclasses", "subprocess", "json", "multiprocessing", "concurrent.futures", "ctypes")


def loaded_after(code: str) -> set[str]:
    """Modules loaded by ``code`` that a bare interpreter (with the same site) does not load."""
    probe = "import sys\n{}\nsys.__stderr__.write(MARK + chr(10).join(sys.modules))"

    def modules(source: str) -> set[str]:
        done = subprocess.run(
            [sys.executable, "-c", f"MARK = {MARK!r}\n" + probe.format(source)],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            cwd=REPO_ROOT,
        )
        assert MARK in done.stderr, done.stderr
        return set(done.stderr.split(MARK, 1)[1].splitlines())

    return modules(code) - modules("")


def test_importing_the_cli_loads_no_stage() -> None:
    loaded = loaded_after("import binslim.cli")
    for name in (*STAGES, *THIRD_PARTY, *HEAVY_STDLIB, "binslim.slim", "binslim.strip", "binslim.report"):
        assert name not in loaded, f"import binslim.cli loads {name}"


def test_importing_binslim_loads_only_the_errors() -> None:
    loaded = loaded_after("import binslim")
    assert {m for m in loaded if m.startswith("binslim")} == {"binslim", "binslim._version", "binslim.errors"}


def test_a_plain_strip_loads_no_other_stage(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    out = tmp_path / "out"
    run = (
        "import sys\nfrom binslim.cli import main\n"
        f"try:\n    main([{fixtures['hello-c-pie'].path!r}, '-o', {str(out)!r}, '--no-verify'])\n"
        "except SystemExit as exc:\n    assert exc.code == 0, exc.code"
    )
    loaded = loaded_after(run)
    assert out.exists()
    assert "binslim.strip" in loaded
    for name in (*STAGES, *THIRD_PARTY, *HEAVY_STDLIB):
        assert name not in loaded, f"binslim IN -o OUT --no-verify loads {name}"


def test_a_tree_with_forked_workers_loads_no_verification_stage(
    fixtures: dict[str, Fixture], tmp_path: Path
) -> None:
    """``-r --no-verify`` with workers (forced by -j 2) loads neither the verifier nor the runner, and none of
    the heavy standard modules: each worker is forked from this process and inherits what it loaded."""
    root = tmp_path / "tree"
    root.mkdir()
    source = Path(fixtures["hello-c-pie"].path)
    for index in range(4):
        (root / f"prog{index}").write_bytes(source.read_bytes())
    run = (
        "import sys\nfrom binslim import tree\nfrom binslim.cli import main\n"
        "forked = []\nreal_fork = tree._ForkedRun._fork\n"
        "def counted_fork(self, child):\n    forked.append(child)\n    real_fork(self, child)\n"
        "tree._ForkedRun._fork = counted_fork\n"
        f"try:\n    main(['-r', {str(root)!r}, '--no-verify', '-j', '2'])\n"
        "except SystemExit as exc:\n    assert exc.code == 0, exc.code\n"
        "assert forked == [1], forked"
    )
    loaded = loaded_after(run)
    assert all((root / f"prog{index}").stat().st_size < source.stat().st_size for index in range(4))
    assert "binslim.tree" in loaded and "binslim.children" in loaded
    for name in ("binslim.verifier", "binslim.runner", "binslim.upx", *THIRD_PARTY, *HEAVY_STDLIB):
        assert name not in loaded, f"binslim -r --no-verify -j 2 loads {name}"


def test_version_is_printed_without_loading_the_library() -> None:
    loaded = loaded_after(
        "from binslim.cli import main\ntry:\n    main(['--version'])\nexcept SystemExit as exc:\n"
        "    assert exc.code == 0"
    )
    assert not {m for m in loaded if m.startswith("binslim.")} - {
        "binslim._version",
        "binslim.cli",
        "binslim.cliargs",
        "binslim.envvars",
        "binslim.errors",
        "binslim.interrupts",
    }
