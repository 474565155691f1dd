"""binslim.elf.kind: the one place that says what kind of ELF a file is and whether this host runs it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from binslim.elf.kind import host_arch, read_kind
from binslim.errors import MalformedELFError, NotELFError
from testdata.build import Fixture

HOST_IS_X86_64 = os.uname().machine == "x86_64"


@pytest.mark.parametrize(
    ("name", "description", "interpreter"),
    [
        ("hello-c-pie", "PIE executable", True),
        ("hello-c-nopie", "executable", True),
        ("hello-c-static", "static executable", False),
        ("hello-c-static-pie", "static-pie executable", False),
        ("libgreet", "shared library", False),
        ("greet-obj", "relocatable object", False),
    ],
)
def test_kinds_of_the_fixtures(
    fixtures: dict[str, Fixture], name: str, description: str, interpreter: bool
) -> None:
    kind = read_kind(fixtures[name].path)
    assert kind.description == description
    assert (kind.interpreter is not None) == interpreter
    assert kind.is_shared_library == (description == "shared library")
    assert kind.is_object == (description == "relocatable object")
    assert kind.is_executable == description.endswith("executable")
    assert kind.is_pie == (description in ("PIE executable", "static-pie executable"))
    assert not kind.upx_packed


def test_interpreter_is_the_loader_path_readelf_shows(fixtures: dict[str, Fixture]) -> None:
    path = fixtures["hello-c-pie"].path
    readelf = subprocess.run(["readelf", "-lW", path], capture_output=True, text=True, timeout=60, check=True)
    shown = readelf.stdout.split("[Requesting program interpreter: ", 1)[1].split("]", 1)[0]
    assert read_kind(path).interpreter == shown


@pytest.mark.skipif(not HOST_IS_X86_64, reason="the fixtures' foreign builds are foreign to an x86_64 host")
@pytest.mark.parametrize(
    ("name", "machine", "qemu"),
    [
        ("hello-go-arm64", "aarch64", "qemu-aarch64"),
        ("hello-go-arm", "arm", "qemu-arm"),
        ("hello-go-s390x", "s390x", "qemu-s390x"),
        ("hello-go-ppc64", "ppc64", "qemu-ppc64"),
        ("hello-go-mips", "mips", "qemu-mips"),
        ("hello-go-riscv64", "riscv", "qemu-riscv64"),
        ("hello-go-386", "i386", "qemu-i386"),
        ("hello-c-pie", "x86_64", "qemu-x86_64"),
    ],
)
def test_machine_and_emulator(fixtures: dict[str, Fixture], name: str, machine: str, qemu: str) -> None:
    kind = read_kind(fixtures[name].path)
    assert kind.machine_name == machine
    assert kind.qemu == qemu
    assert kind.native == (name == "hello-c-pie")


def test_host_arch_matches_the_running_interpreter() -> None:
    import sys

    host = host_arch()
    assert host is not None
    assert read_kind(sys.executable).native
    assert host.little_endian == (sys.byteorder == "little")


def test_not_elf_and_truncated(tmp_path: Path, fixtures: dict[str, Fixture]) -> None:
    script = tmp_path / "script"
    script.write_text("#!/bin/sh\n")
    with pytest.raises(NotELFError):
        read_kind(script)
    truncated = tmp_path / "truncated"
    truncated.write_bytes(Path(fixtures["hello-c-pie"].path).read_bytes()[:40])
    with pytest.raises(MalformedELFError):
        read_kind(truncated)
