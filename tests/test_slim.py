"""The whole job through the library, as a build system calls it, and the verification gate."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import jsonschema
import pytest

import binslim
from binslim.report import REPORT_SCHEMA, dumps, to_json_document
from testdata.build import Fixture
from tests.helpers import require_tool, stage_fixture
from tests.helpers import run_binslim as binslim_cli

TIMEOUT = 300

# Prints its own file size: stripping changes its behaviour, which verification must catch.
SELF_SIZE_PROGRAM = r"""
#include <stdio.h>
#include <sys/stat.h>
int main(int argc, char **argv) {
    struct stat st;
    if (stat("/proc/self/exe", &st) != 0) return 2;
    printf("my size is %lld\n", (long long)st.st_size);
    return 0;
}
"""


@pytest.fixture
def self_size_program(tmp_path: Path) -> Path:
    source = tmp_path / "selfsize.c"
    source.write_text(SELF_SIZE_PROGRAM)
    program = tmp_path / "selfsize"
    subprocess.run([require_tool("gcc"), "-g", "-o", str(program), str(source)], check=True, timeout=TIMEOUT)
    return program


def test_public_api_is_explicit() -> None:
    for name in (
        "slim",
        "strip",
        "compress",
        "verify",
        "SlimResult",
        "StripResult",
        "UpxResult",
        "VerifyResult",
        "BinslimError",
        "VerificationError",
    ):
        assert name in binslim.__all__
        assert getattr(binslim, name) is not None
    assert issubclass(binslim.VerificationError, binslim.BinslimError)
    assert Path(binslim.__file__).with_name("py.typed").exists()


def test_build_system_usage(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    """What a build system does: call slim(), write the JSON report, read it back."""
    program = stage_fixture(fixtures, "hello-c-pie", tmp_path / "in")
    result = binslim.slim(program, tmp_path / "out", verify=True, verify_args=("--version",), verify_runs=3)
    assert isinstance(result, binslim.SlimResult)
    with pytest.raises(AttributeError):
        result.status = "changed"  # type: ignore[misc]  # frozen
    entry = result.to_dict()
    document = to_json_document([result])
    jsonschema.validate(document, REPORT_SCHEMA)
    assert document["results"] == [entry]
    assert entry["status"] == "ok" and entry["verify"]["ran"] and entry["verify"]["same_behaviour"] is True
    assert entry["size"]["final"] == (tmp_path / "out").stat().st_size
    assert entry["verify"]["startup_ms"]["original"] > 0
    assert entry["verify"]["peak_rss_kib"]["final"] > 0
    assert json.loads(dumps([result])) == document


def test_cli_json_matches_the_schema(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    program = stage_fixture(fixtures, "hello-go", tmp_path / "in")
    done = binslim_cli(program, "-o", str(tmp_path / "out"), "--json", "--verify-runs", "3")
    assert done.returncode == 0, done.stderr
    jsonschema.validate(json.loads(done.stdout), REPORT_SCHEMA)
    failed = binslim_cli(str(tmp_path / "missing"), "--json")
    assert failed.returncode == 1
    document = json.loads(failed.stdout)
    jsonschema.validate(document, REPORT_SCHEMA)
    assert document["results"][0]["status"] == "failed"


def test_changed_behaviour_fails_with_exit_3_and_installs_nothing(
    self_size_program: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    done = binslim_cli(str(self_size_program), "-o", str(out), "--verify-args", "")
    assert done.returncode == 3, done.stdout + done.stderr
    assert "my size is" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not out.exists()
    before = self_size_program.read_bytes()
    in_place = binslim_cli(str(self_size_program), "--verify-args", "")
    assert in_place.returncode == 3
    assert self_size_program.read_bytes() == before, "the in-place input is left exactly as it was"
    assert sorted(p.name for p in self_size_program.parent.iterdir()) == ["selfsize", "selfsize.c"]


def test_changed_behaviour_through_the_library(self_size_program: Path, tmp_path: Path) -> None:
    with pytest.raises(binslim.VerificationError) as caught:
        binslim.slim(self_size_program, tmp_path / "out", verify_args=())
    assert caught.value.exit_code == 3
    assert not (tmp_path / "out").exists()


def test_no_verify_installs_it_anyway(self_size_program: Path, tmp_path: Path) -> None:
    result = binslim.slim(self_size_program, tmp_path / "out", verify=False)
    assert result.verify is None and (tmp_path / "out").exists()


def test_verified_packed_binary_reports_startup(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    require_tool("upx")
    program = stage_fixture(fixtures, "hello-go", tmp_path / "in")
    result = binslim.slim(program, tmp_path / "out", upx=True, verify_runs=3)
    assert result.packed_size is not None and result.verify is not None
    assert result.verify.same_behaviour is True
    assert result.verify.original is not None and result.verify.final is not None
    text = binslim_cli(program, "-o", str(tmp_path / "out2"), "--upx", "--verify-runs", "3").stdout
    assert "same behaviour: yes" in text and "startup" in text and "peak RSS" in text
    assert re.search(r"added [+-]\d+\.\d ms \(-?\d+\.\d to -?\d+\.\d\)", text), text


def test_auto_method_keeps_the_smallest_within_budget(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    require_tool("upx")
    program = stage_fixture(fixtures, "hello-go", tmp_path / "in")
    generous = binslim.slim(
        program, tmp_path / "generous", upx_method="auto", max_startup_ms=10_000, verify_runs=3
    )
    assert generous.upx is not None and generous.packed_size is not None
    lzma = binslim.slim(program, tmp_path / "lzma", upx_method="lzma", verify=False)
    nrv = binslim.slim(program, tmp_path / "nrv", upx_method="nrv", verify=False)
    assert generous.final_size == min(lzma.final_size, nrv.final_size)
    impossible = binslim.slim(
        program, tmp_path / "impossible", upx_method="auto", max_startup_ms=-1000, verify_runs=3
    )
    assert impossible.packed_size is None and "budget" in impossible.upx_reason
    assert impossible.final_size == impossible.stripped_size


def test_foreign_binary_verifies_under_qemu(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    fixture = fixtures["hello-go-arm64"]
    require_tool(fixture.qemu or "qemu-aarch64")
    program = stage_fixture(fixtures, "hello-go-arm64", tmp_path / "in")
    result = binslim.slim(program, tmp_path / "out", verify_runs=2)
    assert result.verify is not None and result.verify.ran and result.verify.same_behaviour is True


def test_json_message_carries_the_warnings(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    program = stage_fixture(fixtures, "hello-go", tmp_path / "in")
    done = binslim_cli(
        program, "-o", str(tmp_path / "out"), "--strip-section-headers", "--json", "--no-verify"
    )
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    jsonschema.validate(document, REPORT_SCHEMA)
    message = document["results"][0]["message"]
    assert "gdb, objdump, patchelf, libbacktrace" in message and "Go build information" in message
    obj = binslim.slim(fixtures["greet-obj"].path, tmp_path / "greet.o", verify=False)
    assert "only debug sections removed" in obj.to_dict()["message"]


def test_text_report_escapes_names_from_the_input() -> None:
    from binslim.report import format_result

    result = binslim.SlimResult(
        input="/tmp/a\x1b[31m",
        output="/tmp/b",
        status="ok",
        message="stripped",
        original_size=10,
        stripped_size=5,
        packed_size=None,
        final_size=5,
        kept_notes=((".note.\x1b]0;owned\x07", 4),),
    )
    text = format_result(result)
    assert "\x1b" not in text and "\x07" not in text
    assert "\\x1b" in text and ".note.\\x1b]0;owned\\x07 4 B" in text


def test_auto_method_verifies_with_the_verify_cmd(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    """The measurement that picks the UPX method is also the packed file's verification: it must run the
    caller's --verify-cmd, not only the default arguments."""
    require_tool("upx")
    program = stage_fixture(fixtures, "hello-go", tmp_path / "in")
    seen = tmp_path / "seen"
    script = tmp_path / "check.sh"
    script.write_text(f'#!/bin/sh\necho "$1" >> {seen}\nexec "$1" --exit 3\n')
    script.chmod(0o755)
    result = binslim.slim(
        program,
        tmp_path / "out",
        upx_method="auto",
        max_startup_ms=10_000,
        verify_cmd=str(script),
        verify_runs=2,
    )
    assert result.packed_size is not None and result.verify is not None and result.verify.same_behaviour
    assert seen.read_text().count("\n") >= 2, "the script ran for the original and the packed candidate"


def test_slim_writes_into_an_existing_folder_only(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    source = Path(stage_fixture(fixtures, "hello-c-pie", tmp_path))
    before = source.read_bytes()
    missing = tmp_path / "dist" / "bin"
    with pytest.raises(binslim.BinslimError, match="no such file or directory"):
        binslim.slim(source, missing / "app", verify=False)
    assert not missing.parent.exists(), "the output folder is not created"
    assert source.read_bytes() == before
    assert sorted(path.name for path in tmp_path.iterdir()) == [source.name], "no temporary file left"


def test_startup_budget_is_judged_by_the_upper_bound_and_never_met_unmeasured() -> None:
    from binslim.slim import _over_budget
    from binslim.verification.measure import AddedStartup, Timing
    from binslim.verifier import VerifyResult

    timing = Timing(median_ms=1.0, min_ms=1.0, max_ms=1.0, peak_rss_kib=1)

    def measured(startup: AddedStartup | None) -> VerifyResult:
        return VerifyResult(True, (), True, "same", original=timing, final=timing, startup=startup)

    assert _over_budget("nrv", measured(AddedStartup(8.0, 6.0, 9.9, 9)), 10.0) == ""
    # The mean fits, the interval's upper end does not.
    assert _over_budget("lzma", measured(AddedStartup(8.0, 5.0, 11.0, 9)), 10.0) == (
        "lzma adds +8.0 ms (5.0 to 11.0) startup, over the 10 ms budget"
    )
    assert _over_budget(None, measured(AddedStartup(1.0, None, None, 1)), 10.0) == (
        "UPX's default method: startup not measured, so the 10 ms budget cannot be met (one timed pair gives"
        " no interval (use --verify-runs 2 or more))"
    )
    not_run = VerifyResult(False, (), None, "no qemu-aarch64 on PATH (install Debian's qemu-user)")
    assert _over_budget("nrv", not_run, 10.0) == (
        "nrv: startup not measured, so the 10 ms budget cannot be met (not run: no qemu-aarch64 on PATH"
        " (install Debian's qemu-user))"
    )
