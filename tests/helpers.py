"""Helpers shared by the test modules: find external tools, run fixture binaries, read ELF segments.

Fixtures come from ``testdata/build.py`` (see its docstring for the command-line contract every program
fixture follows). Tests never change a fixture in place: copy it (``stage_fixture``) and work on the copy.

Parametrize over fixtures by name without building anything at collection time::

    @pytest.mark.parametrize("name", EXEC_FIXTURE_NAMES)
    def test_something(fixtures, name): ...
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from elftools.elf.elffile import ELFFile

from testdata.build import Fixture, fixture_names, link_object, overlay_payload

__all__ = [
    "run_as",
    "clean_env",
    "run_binslim",
    "ALL_FIXTURE_NAMES",
    "CROSS_FIXTURE_NAMES",
    "EXEC_FIXTURE_NAMES",
    "FIXTURE_DIR",
    "IN_CI",
    "NATIVE_EXEC_FIXTURE_NAMES",
    "OBJECT_FIXTURE_NAMES",
    "OPTIONAL_FIXTURE_NAMES",
    "SHARED_FIXTURE_NAMES",
    "Fixture",
    "link_object",
    "overlay_payload",
    "require_tool",
    "run_fixture",
    "run_linked_object",
    "run_program",
    "run_with_library",
    "segment_bytes",
    "stage_fixture",
]

IN_CI = os.environ.get("CI") == "true"

REPO_ROOT = Path(__file__).resolve().parent.parent
FIXTURE_DIR = REPO_ROOT / "build" / "fixtures"

RUN_TIMEOUT = 120.0  # seconds; go-cmd under a loaded CI machine is the slowest native run

ALL_FIXTURE_NAMES = fixture_names()  # every fixture that is always built
EXEC_FIXTURE_NAMES = fixture_names(kind="exec")
NATIVE_EXEC_FIXTURE_NAMES = fixture_names(kind="exec", arch="amd64")
CROSS_FIXTURE_NAMES = tuple(name for name in EXEC_FIXTURE_NAMES if name not in NATIVE_EXEC_FIXTURE_NAMES)
SHARED_FIXTURE_NAMES = fixture_names(kind="shared")
OBJECT_FIXTURE_NAMES = fixture_names(kind="object")
# May be absent (e.g. hello-c-i386 without gcc-multilib): no test may depend on these.
OPTIONAL_FIXTURE_NAMES = tuple(name for name in fixture_names(optional=True) if name not in ALL_FIXTURE_NAMES)

_TOOL_PACKAGES = {
    "eu-elflint": "elfutils",
    "eu-readelf": "elfutils",
    "eu-strip": "elfutils",
    "g++": "g++",
    "gcc": "gcc",
    "gdb": "gdb",
    "llvm-objcopy": "llvm",
    "llvm-strip": "llvm",
    "musl-gcc": "musl-tools",
    "objcopy": "binutils",
    "readelf": "binutils",
    "strip": "binutils",
    "upx": "upx-ucl from bookworm-backports",
}


def load_benchmark(name: str) -> ModuleType:
    """``benchmarks/NAME.py`` as a module: the benchmarks are scripts, not a package."""
    import importlib.util

    path = REPO_ROOT / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def require_tool(name: str, package: str | None = None) -> str:
    """Return the path of ``name`` on PATH; otherwise fail in CI and skip elsewhere, naming the package."""
    found = shutil.which(name)
    if found is not None:
        return found
    if package is None:
        package = "qemu-user" if name.startswith("qemu-") else _TOOL_PACKAGES.get(name, name)
    message = f"{name} not found on PATH: install Debian's {package} (bash scripts/install.sh --test)"
    if IN_CI:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def run_program(
    program: str | os.PathLike[str],
    args: Sequence[str],
    *,
    qemu: str | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    timeout: float = RUN_TIMEOUT,
) -> tuple[int, str, str]:
    """Run a program (under ``qemu`` when given) with stdin closed; return (returncode, stdout, stderr)."""
    argv = [os.path.abspath(program), *args]
    if qemu is not None:
        argv.insert(0, require_tool(qemu))
    completed = subprocess.run(
        argv,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    return (
        completed.returncode,
        completed.stdout.decode("utf-8", "replace"),
        completed.stderr.decode("utf-8", "replace"),
    )


def run_fixture(
    fixture: Fixture,
    path: str | os.PathLike[str] | None = None,
    args: Sequence[str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = RUN_TIMEOUT,
) -> tuple[int, str, str]:
    """Run an executable fixture, or a copy of it at ``path``, with ``args`` (default: its run_args).

    Uses the fixture's qemu-user program and environment. Returns (returncode, stdout, stderr).
    """
    if fixture.kind != "exec":
        raise ValueError(
            f"{fixture.name} is a {fixture.kind} fixture: use run_with_library or run_linked_object"
        )
    return run_program(
        fixture.path if path is None else path,
        fixture.run_args if args is None else args,
        qemu=fixture.qemu,
        env={**fixture.env, **(env or {})},
        cwd=cwd,
        timeout=timeout,
    )


def stage_fixture(fixtures: Mapping[str, Fixture], name: str, dest_dir: str | os.PathLike[str]) -> str:
    """Copy fixture ``name`` and the fixtures it needs beside it into ``dest_dir``; return the copy's path."""
    fixture = fixtures[name]
    os.makedirs(dest_dir, exist_ok=True)
    for needed in fixture.needs:
        shutil.copy2(fixtures[needed].path, os.path.join(dest_dir, os.path.basename(fixtures[needed].path)))
    copy = os.path.join(dest_dir, os.path.basename(fixture.path))
    shutil.copy2(fixture.path, copy)
    return copy


def run_with_library(
    fixtures: Mapping[str, Fixture],
    library_name: str,
    library_path: str | os.PathLike[str],
    work_dir: str | os.PathLike[str],
    args: Sequence[str] | None = None,
) -> tuple[int, str, str]:
    """Run the program that loads shared-library fixture ``library_name``, with the library at
    ``library_path`` (e.g. a stripped copy) placed beside a copy of the program in ``work_dir``."""
    library = fixtures[library_name]
    if library.kind != "shared" or library.loaded_by is None:
        raise ValueError(f"{library_name} is not a shared-library fixture")
    program = stage_fixture(fixtures, library.loaded_by, work_dir)
    placed = os.path.join(work_dir, os.path.basename(library.path))
    if os.path.abspath(library_path) != os.path.abspath(placed):
        shutil.copy2(library_path, placed)
    # LD_LIBRARY_PATH outranks the program's $ORIGIN runpath; pin it so no other libgreet.so is found.
    return run_fixture(
        fixtures[library.loaded_by],
        path=program,
        args=library.run_args if args is None else args,
        env={"LD_LIBRARY_PATH": os.fspath(work_dir)},
    )


def run_linked_object(
    fixture: Fixture,
    object_path: str | os.PathLike[str],
    work_dir: str | os.PathLike[str],
    args: Sequence[str] | None = None,
) -> tuple[int, str, str]:
    """Link ``object_path`` (an object fixture or a stripped copy) with its companion main, then run it."""
    require_tool("g++" if fixture.language == "cxx" else "gcc")
    program = os.path.join(work_dir, f"{fixture.name}-linked")
    link_object(fixture, os.fspath(object_path), program)
    return run_program(
        program, fixture.run_args if args is None else args, qemu=fixture.qemu, env=fixture.env
    )


def segment_bytes(path: str | os.PathLike[str], types: Collection[str] | None = None) -> list[bytes]:
    """The file bytes of each program header, in order (``types`` such as {"PT_LOAD"} filters them).

    For "the loaded bytes did not change" checks: compare before and after.
    """
    with open(path, "rb") as stream:
        elf = ELFFile(stream)
        return [
            segment.data() for segment in elf.iter_segments() if types is None or segment["p_type"] in types
        ]


CLI_TIMEOUT = 600.0


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without binslim's own variables or a CI marker, plus ``extra``: a developer's
    BINSLIM_* settings must never leak into a test."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BINSLIM_") and k != "CI"}
    env.update(extra)
    return env


def run_binslim(
    *args: str,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = CLI_TIMEOUT,
    **kwargs: Any,
) -> subprocess.CompletedProcess[str]:
    """Run the command line as ``python -m binslim ARGS`` with stdin closed. ``env`` replaces the
    environment (default: ``clean_env()``)."""
    return subprocess.run(
        [sys.executable, "-m", "binslim", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=clean_env() if env is None else dict(env),
        stdin=subprocess.DEVNULL,
        check=False,
        **kwargs,
    )


def run_as(
    fixtures: Mapping[str, Fixture],
    name: str,
    binary: str | os.PathLike[str],
    folder: Path,
    args: Sequence[str],
) -> tuple[int, str, str]:
    """Run ``binary`` as fixture ``name`` from ``folder``, under the fixture's own file name and beside
    what it needs, so that two copies run this way see the same argv[0] and neighbours."""
    target = stage_fixture(fixtures, name, folder)
    shutil.copy2(binary, target)
    return run_fixture(fixtures[name], path=target, args=args, cwd=str(folder))
