"""The UPX stage inside the whole pipeline, through the CLI and the library, with the real UPX."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from binslim import slim
from binslim.errors import ToolNotFoundError
from testdata.build import Fixture
from tests.helpers import require_tool, run_fixture, stage_fixture
from tests.helpers import run_binslim as binslim

TIMEOUT = 600
UPX_MISSING = "upx not found: install Debian's upx-ucl (bookworm-backports), set BINSLIM_UPX, or drop --upx"


def same_behaviour(fixtures: dict[str, Fixture], name: str, candidate: Path, tmp_path: Path) -> None:
    fixture = fixtures[name]
    for number, args in enumerate((fixture.run_args, fixture.fail_args)):
        original_dir, candidate_dir = tmp_path / f"o{number}", tmp_path / f"c{number}"
        original = stage_fixture(fixtures, name, original_dir)
        staged = stage_fixture(fixtures, name, candidate_dir)
        shutil.copy2(candidate, staged)
        assert run_fixture(fixture, path=staged, args=args, cwd=candidate_dir) == run_fixture(
            fixture, path=original, args=args, cwd=original_dir
        )


@pytest.mark.parametrize(
    "name", ["go-cmd", "hello-c-static", "hello-c-static-pie", "hello-c-musl", "hello-cxx", "hello-rust"]
)
def test_packed_output_behaves_like_the_original(
    fixtures: dict[str, Fixture], name: str, tmp_path: Path
) -> None:
    require_tool("upx")
    out = tmp_path / "packed"
    done = binslim(fixtures[name].path, "-o", str(out), "--upx", "--no-verify", "--json")
    assert done.returncode == 0, done.stderr
    entry = json.loads(done.stdout)["results"][0]
    size = entry["size"]
    assert size["packed"] is not None, entry
    assert size["original"] > size["stripped"] > size["packed"] == size["final"] == out.stat().st_size
    assert entry["upx"]["version"] and entry["upx"]["seconds"] > 0
    same_behaviour(fixtures, name, out, tmp_path)


def test_report_shows_three_sizes_and_method(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    require_tool("upx")
    done = binslim(
        fixtures["hello-go"].path, "-o", str(tmp_path / "out"), "--upx", "--upx-method", "lzma", "--no-verify"
    )
    assert done.returncode == 0, done.stderr
    for label in ("original", "stripped", "packed", "final"):
        assert f"  {label}" in done.stdout
    assert "MB" in done.stdout and "MiB" in done.stdout
    assert "method lzma" in done.stdout


def test_cmd_go_no_bigger_than_the_story_pipeline(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    """The story: strip --strip-unneeded, then plain upx. binslim must not lose to it."""
    upx = require_tool("upx")
    source = fixtures["go-cmd"].path
    ours = tmp_path / "ours"
    assert binslim(source, "-o", str(ours), "--upx", "--no-verify").returncode == 0
    stripped, packed = tmp_path / "stripped", tmp_path / "packed"
    subprocess.run(
        [require_tool("strip"), "--strip-unneeded", "-o", str(stripped), source], check=True, timeout=TIMEOUT
    )
    subprocess.run(
        [upx, "-q", "-o", str(packed), str(stripped)], check=True, capture_output=True, timeout=TIMEOUT
    )
    assert ours.stat().st_size <= packed.stat().st_size


def test_shared_library_is_stripped_not_packed(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    require_tool("upx")
    result = slim(fixtures["libgreet"].path, tmp_path / "libgreet.so", upx=True, verify=False)
    assert result.status == "ok" and result.packed_size is None
    assert "shared librar" in result.upx_reason
    assert result.final_size == result.stripped_size < result.original_size


def test_object_file_is_not_packed(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    require_tool("upx")
    result = slim(fixtures["greet-obj"].path, tmp_path / "greet.o", upx=True, verify=False)
    assert result.packed_size is None and result.upx_reason


def test_foreign_architecture_is_not_packed_by_default(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    require_tool("upx")
    result = slim(fixtures["hello-go-arm64"].path, tmp_path / "out", upx=True, verify=False)
    assert result.packed_size is None and "built for aarch64" in result.upx_reason


def test_upx_required_turns_a_refusal_into_exit_1(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    require_tool("upx")
    out = tmp_path / "out"
    done = binslim(fixtures["libgreet"].path, "-o", str(out), "--upx", "--upx-required", "--no-verify")
    assert done.returncode == 1 and done.stderr.startswith("error: ") and "Traceback" not in done.stderr
    assert not out.exists()


def test_already_packed_input_is_left_as_it_was(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    require_tool("upx")
    packed = tmp_path / "packed"
    assert binslim(fixtures["hello-c-static"].path, "-o", str(packed), "--upx", "--no-verify").returncode == 0
    before = packed.read_bytes()
    done = binslim(str(packed), "--upx", "--no-verify", "--json")
    assert done.returncode == 0, done.stderr
    entry = json.loads(done.stdout)["results"][0]
    assert entry["status"] == "skipped" and "already packed" in entry["message"]
    assert packed.read_bytes() == before
    copy = tmp_path / "copy"
    assert binslim(str(packed), "-o", str(copy), "--no-verify").returncode == 0
    assert copy.read_bytes() == before


def test_too_small_for_upx_is_a_reason_not_an_error(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    require_tool("upx")
    # A valid ELF header and one PT_LOAD, 120 bytes in all: far below what UPX will consider.
    header = bytearray(Path(fixtures["hello-c-static"].path).read_bytes()[:64])
    struct.pack_into("<QQ", header, 0x20, 64, 0)  # e_phoff, e_shoff
    struct.pack_into("<HHHHHH", header, 0x34, 64, 56, 1, 64, 0, 0)
    load = struct.pack("<IIQQQQQQ", 1, 5, 0, 0x400000, 0x400000, 120, 120, 0x1000)
    tiny = tmp_path / "tiny"
    tiny.write_bytes(bytes(header) + load)
    tiny.chmod(0o755)
    done = binslim(str(tiny), "-o", str(tmp_path / "out"), "--upx", "--no-verify", "--json")
    assert done.returncode == 0, done.stderr
    entry = json.loads(done.stdout)["results"][0]
    assert entry["size"]["packed"] is None and entry["upx"] is None
    assert (tmp_path / "out").read_bytes() == tiny.read_bytes()
    strict = binslim(str(tiny), "-o", str(tmp_path / "strict"), "--upx", "--upx-required", "--no-verify")
    assert strict.returncode == 1 and "too small" in strict.stderr
    assert not (tmp_path / "strict").exists()


def test_missing_upx_is_a_clear_error(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "BINSLIM_UPX"}
    env["PATH"] = str(tmp_path / "empty-path")
    out = tmp_path / "out"
    done = binslim(fixtures["hello-c-pie"].path, "-o", str(out), "--upx", "--no-verify", env=env)
    assert done.returncode == 1
    assert done.stderr.strip() == f"error: {UPX_MISSING}" or UPX_MISSING in done.stderr.strip()
    assert len(done.stderr.strip().splitlines()) == 1
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == []


def test_missing_upx_through_the_library(
    fixtures: dict[str, Fixture], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BINSLIM_UPX", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    with pytest.raises(ToolNotFoundError, match="install Debian's upx-ucl"):
        slim(fixtures["hello-c-pie"].path, tmp_path / "out", upx=True, verify=False)
    assert not (tmp_path / "out").exists()
