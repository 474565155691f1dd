"""Every option from the environment: BINSLIM_<OPTION>, the command line winning, and BINSLIM_UPX."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

from binslim.cli import INSPECT, SLIM
from binslim.cliargs import CONST, Option
from binslim.envvars import name_for, switch
from testdata.build import Fixture
from tests.helpers import clean_env, require_tool, run_binslim

TIMEOUT = 600
README = Path(__file__).resolve().parent.parent / "README.md"


def binslim(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return run_binslim(*args, env=clean_env(**env), timeout=TIMEOUT)


def report(done: subprocess.CompletedProcess[str]) -> dict[str, object]:
    assert done.returncode == 0, done.stderr
    entry: dict[str, object] = json.loads(done.stdout)["results"][0]
    return entry


def env_names(options: Sequence[Option]) -> list[str]:
    names = []
    for option in options:
        assert option.env or option.how == CONST or option.long_name == "--upx", option.long_name
        names.append(name_for(option.long_name))
    return names


def test_every_option_has_a_documented_variable() -> None:
    names = env_names(SLIM.options)
    assert len(names) == len(set(names))
    expected = {"BINSLIM_VERIFY", "BINSLIM_UPX", "BINSLIM_UPX_LEVEL", "BINSLIM_JOBS", "BINSLIM_RECURSIVE",
                "BINSLIM_DRY_RUN", "BINSLIM_JSON", "BINSLIM_STRIP_DEBUG", "BINSLIM_KEEP_SECTION"}  # fmt: skip
    assert expected <= set(names)
    readme = README.read_text()
    for args, command in ((("--help",), SLIM), (("inspect", "--help"), INSPECT)):
        help_text = binslim(*args).stdout
        for name in env_names(command.options):
            assert name in help_text, f"{name} missing from binslim {' '.join(args)}"
            assert f"`{name}`" in readme, f"{name} missing from README.md"


@pytest.mark.parametrize(
    ("word", "value"),
    [("1", True), ("TRUE", True), ("yes", True), ("on", True), ("0", False), ("False", False),
     ("no", False), ("off", False), ("", None), ("/usr/bin/upx", None), ("upx-ucl", None)],
)  # fmt: skip
def test_switch_words(word: str, value: bool | None) -> None:
    assert switch(word) is value


def test_verify_and_json_from_the_environment(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    source = fixtures["hello-c-pie"].path
    quiet = report(binslim(source, "-o", str(tmp_path / "a"), BINSLIM_VERIFY="0", BINSLIM_JSON="1"))
    assert quiet["verify"] is None
    loud = report(
        binslim(source, "-o", str(tmp_path / "b"), "--verify", BINSLIM_VERIFY="0", BINSLIM_JSON="yes")
    )
    assert loud["verify"] is not None, "the command line wins"
    done = binslim(source, "-o", str(tmp_path / "c"), BINSLIM_VERIFY="maybe")
    assert done.returncode == 2 and "maybe" in done.stderr


def test_strip_level_and_sections_from_the_environment(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    source = fixtures["hello-c-pie"].path
    entry = report(
        binslim(source, "-o", str(tmp_path / "d"), "--json", "--no-verify", BINSLIM_STRIP_DEBUG="1")
    )
    kinds = {r["kind"] for r in entry["removed"]}  # type: ignore[attr-defined]
    assert "debug" in kinds and "symbols" not in kinds
    entry = report(binslim(source, "-o", str(tmp_path / "e"), "--json", "--no-verify",
                           BINSLIM_KEEP_SECTION=".comment .symtab .strtab"))  # fmt: skip
    names = {r["name"] for r in entry["removed"]}  # type: ignore[attr-defined]
    assert not names & {".comment", ".symtab", ".strtab"} and ".debug_info" in names
    done = binslim(source, "-o", str(tmp_path / "f"), BINSLIM_STRIP_DEBUG="1", BINSLIM_STRIP_ALL="1")
    assert done.returncode == 2


def test_tree_options_from_the_environment(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    shutil.copy2(fixtures["hello-c-pie"].path, tmp_path / "prog")
    before = (tmp_path / "prog").read_bytes()
    dry = binslim(str(tmp_path), BINSLIM_RECURSIVE="1", BINSLIM_DRY_RUN="on", BINSLIM_JOBS="2")
    assert dry.returncode == 0, dry.stderr
    assert "would save" in dry.stdout and (tmp_path / "prog").read_bytes() == before
    assert binslim(str(tmp_path), "-r", BINSLIM_JOBS="none").returncode == 2


def test_binslim_upx_is_a_switch_or_the_program(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    upx = require_tool("upx")
    source = fixtures["hello-c-pie"].path
    packed = report(binslim(source, "-o", str(tmp_path / "a"), "--json", "--no-verify", BINSLIM_UPX="1"))
    assert packed["upx"] is not None
    plain = report(binslim(source, "-o", str(tmp_path / "b"), "--json", "--no-verify", BINSLIM_UPX="off"))
    assert plain["upx"] is None
    # A path names the program and does not switch packing on; --upx then uses it.
    by_path = report(binslim(source, "-o", str(tmp_path / "c"), "--json", "--no-verify", BINSLIM_UPX=upx))
    assert by_path["upx"] is None
    chosen = report(
        binslim(source, "-o", str(tmp_path / "d"), "--json", "--no-verify", "--upx", BINSLIM_UPX=upx)
    )
    assert chosen["upx"] is not None
    missing = binslim(source, "-o", str(tmp_path / "e"), "--upx", BINSLIM_UPX=str(tmp_path / "no-upx"))
    assert missing.returncode == 1 and re.search(
        r"BINSLIM_UPX=\S*no-upx is not an executable", missing.stderr
    )
