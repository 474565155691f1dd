"""Build binslim's test fixtures from the sources beside this file.

    python3 testdata/build.py [--out DIR] [--force] [--json]

``build_all(out_dir)`` builds every fixture into ``out_dir`` (default ``build/fixtures``) and returns
``{name: Fixture}``. Each fixture is cached under a key that hashes this file, its sources, the keys of the
fixtures it is made from and the versions of the tools that build it; a cached output is reused only while
its SHA-256 still matches, so a test that damaged a fixture in place gets a fresh one on the next run.

``Fixture.arch`` uses Go's GOARCH names: amd64, 386, arm64, arm (ARMv7), s390x, ppc64 (big-endian), mips
(big-endian, 32-bit) and riscv64.

Every program built from testdata/ (the C, C++, Rust and Go hello programs, usegreet, comdat) follows one
command-line contract, so tests can compare a binary's behaviour before and after binslim touches it:

    --version   prints "<program> 1.0.0" and exits 0; C++, Rust and Go get there by throwing and catching
                an exception or panic, so broken unwind tables show up
    --exit N    prints "exiting with N" on stderr and exits with status N
    ARG...      prints a greeting and echoes each argument
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import fcntl
import hashlib
import json
import os
import platform
import shutil
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

TESTDATA = Path(__file__).resolve().parent
REPO_ROOT = TESTDATA.parent
DEFAULT_OUT_DIR = REPO_ROOT / "build" / "fixtures"
MANIFEST = "manifest.json"
MANIFEST_SCHEMA = 1

# The Debian package that provides Go (bookworm-backports); its go is not on PATH.
DEBIAN_GO = Path("/usr/lib/go-1.23/bin/go")

COMPILE_TIMEOUT = 300.0
GO_BUILD_TIMEOUT = 900.0
PROBE_TIMEOUT = 60.0
VERSION_TIMEOUT = 30.0

OVERLAY_BYTES = 12 * 1024
VERSION_ARGS = ("--version",)
EXIT_ARGS = ("--exit", "3")
EXIT_RETURNCODE = 3

_PACKAGE_HINTS = {
    "gcc": "gcc",
    "g++": "g++",
    "musl-gcc": "musl-tools",
    "rustc": "rustc (or rustup)",
    "go": "golang-1.23-go from bookworm-backports",
    "patchelf": "patchelf",
}


@dataclass(frozen=True)
class Fixture:
    """One built test binary and how to run it.

    For ``kind == "object"``, ``run_args``, ``expected_stdout`` and ``fail_args`` describe the program that
    ``link_object`` makes from it. For ``kind == "shared"`` they describe the ``loaded_by`` program.
    """

    name: str
    path: str  # absolute
    language: str  # "c", "cxx", "rust" or "go"
    kind: str  # "exec", "shared" or "object"
    arch: str  # GOARCH name
    qemu: str | None  # the qemu-user program that runs it on this host; None runs it natively
    run_args: tuple[str, ...]  # arguments that make it print expected_stdout and exit 0
    env: dict[str, str] = field(default_factory=dict, hash=False)  # extra environment to run it with
    static: bool = False
    expected_stdout: str = ""  # text that the output of run_args contains
    fail_args: tuple[str, ...] = ()  # arguments that make it exit with fail_returncode
    fail_returncode: int = 0
    link_main: str | None = None  # objects: the companion main object that link_object links it with
    loaded_by: str | None = None  # shared libraries: the exec fixture that loads it from its own folder
    needs: tuple[str, ...] = ()  # executables: fixtures that must sit in the same folder when it runs
    optional: bool = False  # may be absent when the host lacks its toolchain (see build_all)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class FixtureBuildError(RuntimeError):
    """A required fixture could not be built."""


class _Absent(Exception):
    """An optional fixture cannot be built on this host; the message says why."""


@dataclass(frozen=True)
class _Recipe:
    name: str
    outputs: tuple[str, ...]  # files it writes into out_dir; the first is the fixture's path
    sources: tuple[str, ...]  # relative to testdata/
    tools: tuple[str, ...]  # keys of _Toolchains whose versions feed the cache key
    build: Callable[[_Build], dict[str, Any] | None]  # may return fields only known after building
    language: str
    kind: str
    arch: str
    run_args: tuple[str, ...] = VERSION_ARGS
    expected_stdout: str = ""
    fail_args: tuple[str, ...] = EXIT_ARGS
    fail_returncode: int = EXIT_RETURNCODE
    qemu: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    static: bool = False
    after: tuple[str, ...] = ()  # recipes whose outputs this one reads
    link_main: str | None = None  # output file name
    loaded_by: str | None = None
    needs: tuple[str, ...] = ()
    optional: bool = False

    def fixture(self, out_dir: Path, overrides: Mapping[str, Any]) -> Fixture:
        fields: dict[str, Any] = {
            "name": self.name,
            "path": str(out_dir / self.outputs[0]),
            "language": self.language,
            "kind": self.kind,
            "arch": self.arch,
            "qemu": self.qemu,
            "run_args": self.run_args,
            "env": dict(self.env),
            "static": self.static,
            "expected_stdout": self.expected_stdout,
            "fail_args": self.fail_args,
            "fail_returncode": self.fail_returncode,
            "link_main": None if self.link_main is None else str(out_dir / self.link_main),
            "loaded_by": self.loaded_by,
            "needs": self.needs,
            "optional": self.optional,
        }
        fields.update(overrides)
        return Fixture(**fields)


def _run(
    argv: Sequence[str],
    *,
    timeout: float,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a build step; raise FixtureBuildError with the command and the tail of its output on failure."""
    argv = [str(arg) for arg in argv]
    try:
        completed = subprocess.run(
            argv,
            cwd=cwd,
            env=None if env is None else dict(env),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise FixtureBuildError(f"timed out after {timeout:.0f}s: {' '.join(argv)}") from exc
    except OSError as exc:
        raise FixtureBuildError(f"cannot run {argv[0]}: {exc.strerror or exc}") from exc
    if completed.returncode != 0:
        tail = "\n".join((completed.stderr + completed.stdout).strip().splitlines()[-15:])
        raise FixtureBuildError(f"exit {completed.returncode}: {' '.join(argv)}\n{tail}")
    return completed


class _Toolchains:
    """Finds each build tool once and remembers the version text that goes into cache keys."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._paths: dict[str, str] = {}
        self._versions: dict[str, str] = {}

    def path(self, tool: str) -> str:
        with self._lock:
            if tool not in self._paths:
                found = _find_tool(tool)
                if found is None:
                    hint = _PACKAGE_HINTS.get(tool, tool)
                    raise FixtureBuildError(
                        f"{tool} not found: install Debian's {hint} (bash scripts/install.sh --test)"
                    )
                self._paths[tool] = found
            return self._paths[tool]

    def version(self, tool: str) -> str:
        path = self.path(tool)
        with self._lock:
            if tool not in self._versions:
                self._versions[tool] = _version_text(tool, path)
            return self._versions[tool]


def _find_tool(tool: str) -> str | None:
    if tool == "go":
        if DEBIAN_GO.is_file():
            return str(DEBIAN_GO)
        return shutil.which("go")
    if tool == "rustc":
        on_path = shutil.which("rustc")
        if on_path:
            return on_path
        in_home = Path.home() / ".cargo" / "bin" / "rustc"
        return str(in_home) if in_home.is_file() else None
    return shutil.which(tool)


def _first_line(argv: Sequence[str]) -> str:
    try:
        completed = subprocess.run(
            list(argv), capture_output=True, text=True, errors="replace", timeout=VERSION_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return f"{argv[0]}: unavailable"
    lines = (completed.stdout or completed.stderr).strip().splitlines()
    return lines[0] if lines else ""


def _version_text(tool: str, path: str) -> str:
    if tool == "rustc":
        return _run([path, "-vV"], timeout=VERSION_TIMEOUT).stdout
    if tool == "go":
        return _run([path, "version"], timeout=VERSION_TIMEOUT).stdout + path
    parts = [path, _first_line([path, "--version"]), _first_line(["ld", "--version"])]
    # glibc comes with the compiler's output into every dynamic and static binary.
    parts.append(_first_line(["ldd", "--version"]))
    if tool == "musl-gcc":
        libc = _run([path, "-print-file-name=libc.a"], timeout=VERSION_TIMEOUT).stdout.strip()
        stat = os.stat(libc)
        parts.append(f"{libc} {stat.st_size} {stat.st_mtime_ns}")
    return "\n".join(parts)


@dataclass
class _Build:
    """What a recipe's build function gets: a private folder for its outputs and the finished folder."""

    recipe: _Recipe
    work_dir: Path
    out_dir: Path
    toolchains: _Toolchains

    def tool(self, name: str) -> str:
        return self.toolchains.path(name)

    def dest(self, file_name: str) -> Path:
        return self.work_dir / file_name

    def built(self, file_name: str) -> Path:
        return self.out_dir / file_name

    def go_env(self, goarch: str, cgo: bool, **extra: str) -> dict[str, str]:
        go_root = self.out_dir / ".go"
        env = {key: value for key, value in os.environ.items() if not key.startswith("GO")}
        env.update(
            GOTOOLCHAIN="local",
            GOENV="off",
            GOFLAGS="-buildvcs=false",
            GOPROXY="off",
            GOPATH=str(go_root / "path"),
            GOMODCACHE=str(go_root / "path" / "pkg" / "mod"),
            GOCACHE=str(go_root / "cache"),
            GOOS="linux",
            GOARCH=goarch,
            CGO_ENABLED="1" if cgo else "0",
        )
        env.update(extra)
        return env


def _source(relative: str) -> str:
    return str(TESTDATA / relative)


def _c_program(*flags: str, compiler: str = "gcc", source: str = "c/hello.c") -> Callable[[_Build], None]:
    def build(ctx: _Build) -> None:
        _run(
            [ctx.tool(compiler), "-g", "-O1", *flags, _source(source), "-o", ctx.dest(ctx.recipe.outputs[0])],
            timeout=COMPILE_TIMEOUT,
        )

    return build


def _build_i386(ctx: _Build) -> dict[str, Any]:
    output = ctx.dest(ctx.recipe.outputs[0])
    try:
        _run(
            [ctx.tool("gcc"), "-m32", "-g", "-O1", _source("c/hello.c"), "-o", output],
            timeout=COMPILE_TIMEOUT,
        )
    except FixtureBuildError as exc:
        errors = [line for line in str(exc).splitlines() if "error" in line] or ["failed"]
        raise _Absent(f"gcc -m32 cannot build (install gcc-multilib): {errors[0].strip()}") from exc
    return {"qemu": _i386_runner(output)}


def _i386_runner(program: Path) -> str | None:
    """None when the kernel runs 32-bit x86 programs itself, else qemu-i386."""
    try:
        native = subprocess.run(
            [str(program), *VERSION_ARGS], capture_output=True, timeout=PROBE_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return "qemu-i386"
    return None if native.returncode == 0 else "qemu-i386"


def _build_overlay(ctx: _Build) -> None:
    image = ctx.built("hello-c-pie").read_bytes()
    output = ctx.dest(ctx.recipe.outputs[0])
    output.write_bytes(image + overlay_payload())
    output.chmod(0o755)


def _build_padded(ctx: _Build) -> None:
    """hello-c-pie with one more page of zeros in front of its second PT_LOAD, in the file only.

    Linkers leave such pages (Node.js's /usr/bin/node has two); GNU strip moves each segment down to the
    lowest offset congruent to its p_vaddr. Every offset from there on moves by one page, a multiple of every
    p_align, so the program loads as before.
    """
    output = ctx.dest(ctx.recipe.outputs[0])
    output.write_bytes(insert_padding_page(ctx.built("hello-c-pie").read_bytes()))
    output.chmod(0o755)


def insert_padding_page(elf_image: bytes) -> bytes:
    """A 64-bit little-endian ELF image with a page of zeros inserted in front of its second PT_LOAD."""
    image = bytearray(elf_image)
    if image[4:6] != b"\x02\x01":
        raise FixtureBuildError("insert_padding_page expects a 64-bit little-endian ELF image")
    (phoff, shoff) = struct.unpack_from("<QQ", image, 32)
    (phnum,) = struct.unpack_from("<H", image, 56)
    (shnum,) = struct.unpack_from("<H", image, 60)
    headers = [phoff + 56 * index for index in range(phnum)]
    loads = sorted(
        struct.unpack_from("<Q", image, at + 8)[0]
        for at in headers
        if struct.unpack_from("<I", image, at)[0] == 1
    )
    cut, page = loads[1], 4096
    for at in headers:
        (offset,) = struct.unpack_from("<Q", image, at + 8)
        if offset >= cut:
            struct.pack_into("<Q", image, at + 8, offset + page)
    for at in (shoff + 64 * index for index in range(1, shnum)):
        (offset,) = struct.unpack_from("<Q", image, at + 24)
        if offset >= cut:
            struct.pack_into("<Q", image, at + 24, offset + page)
    struct.pack_into("<Q", image, 40, shoff + page if shoff >= cut else shoff)
    image[cut:cut] = bytes(page)
    return bytes(image)


def _build_patchelf_library(ctx: _Build) -> None:
    """libgreet.so after several patchelf runs (as auditwheel makes them): each run that grows .dynstr
    moves it into a new PT_LOAD and leaves the previous copy behind in a segment no section covers."""
    output = ctx.dest(ctx.recipe.outputs[0])
    output.parent.mkdir(parents=True, exist_ok=True)
    (ctx.out_dir / ctx.recipe.outputs[0]).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(ctx.built("libgreet.so"), output)
    patchelf = ctx.tool("patchelf")
    for round_number in range(1, 4):
        _run([patchelf, "--add-needed", "libdl.so.2", output], timeout=COMPILE_TIMEOUT)
        rpath = f"/opt/binslim-fixture/{round_number}/" + "r" * 300
        _run([patchelf, "--set-rpath", rpath, output], timeout=COMPILE_TIMEOUT)


def overlay_payload() -> bytes:
    """The bytes appended after hello-c-pie's ELF image to make hello-c-overlay."""
    header = b"BINSLIM-OVERLAY\n"
    blocks = [hashlib.sha256(b"binslim overlay %d" % index).digest() for index in range(OVERLAY_BYTES // 32)]
    return (header + b"".join(blocks))[:OVERLAY_BYTES]


def _build_libgreet(ctx: _Build) -> None:
    _run(
        [
            ctx.tool("gcc"), "-g", "-O1", "-fPIC", "-shared", "-Wl,-soname,libgreet.so",
            _source("c/greet.c"), "-o", ctx.dest("libgreet.so"),
        ],
        timeout=COMPILE_TIMEOUT,
    )  # fmt: skip


def _build_usegreet(ctx: _Build) -> None:
    # $ORIGIN, not an absolute path: a copy beside a stripped copy of libgreet.so loads that one.
    _run(
        [
            ctx.tool("gcc"), "-g", "-O1", f"-I{TESTDATA / 'c'}", _source("c/usegreet.c"),
            f"-L{ctx.out_dir}", "-lgreet", "-Wl,-rpath,$ORIGIN", "-o", ctx.dest("usegreet"),
        ],
        timeout=COMPILE_TIMEOUT,
    )  # fmt: skip


def _object_pair(
    compiler: str, source: str, main_source: str, flags: Sequence[str]
) -> Callable[[_Build], None]:
    def build(ctx: _Build) -> None:
        object_name, main_name = ctx.recipe.outputs
        for src, name in ((source, object_name), (main_source, main_name)):
            _run(
                [ctx.tool(compiler), "-g", "-O1", *flags, "-c", _source(src), "-o", ctx.dest(name)],
                timeout=COMPILE_TIMEOUT,
            )

    return build


def _build_rust(ctx: _Build) -> None:
    _run(
        [
            ctx.tool("rustc"), "-g", "-C", "opt-level=1", "--edition", "2021", "--crate-name", "hello_rust",
            _source("rust/hello.rs"), "-o", ctx.dest(ctx.recipe.outputs[0]),
        ],
        timeout=COMPILE_TIMEOUT,
        cwd=ctx.work_dir,
    )  # fmt: skip


def _go_hello(goarch: str, **extra_env: str) -> Callable[[_Build], None]:
    def build(ctx: _Build) -> None:
        _run(
            [ctx.tool("go"), "build", "-o", ctx.dest(ctx.recipe.outputs[0]), "."],
            timeout=GO_BUILD_TIMEOUT,
            cwd=TESTDATA / "go" / "hello",
            env=ctx.go_env(goarch, cgo=False, **extra_env),
        )

    return build


def _go_command(package: str, goarch: str, cgo: bool) -> Callable[[_Build], None]:
    """Build a command from the Go distribution itself: real-world size, and no network needed."""

    def build(ctx: _Build) -> None:
        go = ctx.tool("go")
        goroot = _run(
            [go, "env", "GOROOT"], timeout=VERSION_TIMEOUT, env=ctx.go_env(goarch, cgo)
        ).stdout.strip()
        _run(
            [go, "build", "-o", ctx.dest(ctx.recipe.outputs[0]), package],
            timeout=GO_BUILD_TIMEOUT,
            cwd=Path(goroot) / "src",
            env=ctx.go_env(goarch, cgo),
        )

    return build


_GOFMT_INPUT = _source("go/hello/main.go")

# (GOARCH, qemu-user program, extra environment)
_GO_CROSS = (
    ("arm64", "qemu-aarch64", {}),
    ("arm", "qemu-arm", {"GOARM": "7"}),
    ("386", None, {}),  # qemu 7.2's i386 emulation crashes Go programs; x86_64 kernels run them natively
    ("s390x", "qemu-s390x", {}),
    ("ppc64", "qemu-ppc64", {}),
    ("mips", "qemu-mips", {"GOMIPS": "softfloat"}),
    ("riscv64", "qemu-riscv64", {}),
)


def _go_cross_hello(goarch: str, extra_env: Mapping[str, str]) -> Callable[[_Build], dict[str, Any] | None]:
    build_hello = _go_hello(goarch, **extra_env)

    def build(ctx: _Build) -> dict[str, Any] | None:
        build_hello(ctx)
        if goarch == "386":
            return {"qemu": _i386_runner(ctx.dest(ctx.recipe.outputs[0]))}
        return None

    return build


def _recipes() -> tuple[_Recipe, ...]:
    c_hello = {
        "sources": ("c/hello.c",),
        "tools": ("gcc",),
        "language": "c",
        "kind": "exec",
        "arch": "amd64",
        "expected_stdout": "hello-c 1.0.0",
    }
    go_hello = {
        "sources": ("go/hello/main.go", "go/hello/go.mod"),
        "tools": ("go",),
        "language": "go",
        "kind": "exec",
        "static": True,
        "expected_stdout": "hello-go 1.0.0",
    }
    gofmt = {
        "sources": (),
        "tools": ("go",),
        "language": "go",
        "kind": "exec",
        "static": True,
        "run_args": (_GOFMT_INPUT,),
        "expected_stdout": "package main",
        "fail_args": ("/nonexistent/binslim-fixture.go",),
        "fail_returncode": 2,
    }
    recipes = [
        _Recipe(name="hello-c-pie", outputs=("hello-c-pie",), build=_c_program("-fPIE", "-pie"), **c_hello),
        _Recipe(
            name="hello-c-nopie",
            outputs=("hello-c-nopie",),
            build=_c_program("-fno-PIE", "-no-pie"),
            **c_hello,
        ),
        _Recipe(
            name="hello-c-static",
            outputs=("hello-c-static",),
            build=_c_program("-static"),
            static=True,
            **c_hello,
        ),
        _Recipe(
            name="hello-c-static-pie",
            outputs=("hello-c-static-pie",),
            build=_c_program("-fPIE", "-static-pie"),
            static=True,
            **c_hello,
        ),
        _Recipe(
            name="hello-c-musl",
            outputs=("hello-c-musl",),
            build=_c_program("-static", compiler="musl-gcc"),
            static=True,
            **{**c_hello, "tools": ("musl-gcc",)},
        ),
        _Recipe(
            name="hello-c-overlay",
            outputs=("hello-c-overlay",),
            build=_build_overlay,
            after=("hello-c-pie",),
            **{**c_hello, "tools": ()},
        ),
        _Recipe(
            name="hello-c-padded",
            outputs=("hello-c-padded",),
            build=_build_padded,
            after=("hello-c-pie",),
            **{**c_hello, "tools": ()},
        ),
        _Recipe(
            name="hello-c-usdt",
            outputs=("hello-c-usdt",),
            build=_c_program(source="c/usdt.c"),
            **{**c_hello, "sources": ("c/usdt.c",)},
        ),
        _Recipe(
            name="hello-c-i386",
            outputs=("hello-c-i386",),
            build=_build_i386,
            optional=True,
            **{**c_hello, "arch": "386"},
        ),
        _Recipe(
            name="hello-cxx",
            outputs=("hello-cxx",),
            sources=("cxx/hello.cpp",),
            tools=("g++",),
            build=_c_program(compiler="g++", source="cxx/hello.cpp"),
            language="cxx",
            kind="exec",
            arch="amd64",
            expected_stdout="hello-cxx 1.0.0",
        ),
        _Recipe(
            name="libgreet",
            outputs=("libgreet.so",),
            sources=("c/greet.c", "c/greet.h"),
            tools=("gcc",),
            build=_build_libgreet,
            language="c",
            kind="shared",
            arch="amd64",
            expected_stdout="Hello, version! (call 1)",
            loaded_by="usegreet",
        ),
        _Recipe(
            name="libgreet-patchelf",
            outputs=("patchelf/libgreet.so",),
            sources=(),
            tools=("patchelf",),
            build=_build_patchelf_library,
            after=("libgreet",),
            language="c",
            kind="shared",
            arch="amd64",
            expected_stdout="Hello, version! (call 1)",
            loaded_by="usegreet",
        ),
        _Recipe(
            name="usegreet",
            outputs=("usegreet",),
            sources=("c/usegreet.c", "c/greet.h"),
            tools=("gcc",),
            build=_build_usegreet,
            after=("libgreet",),
            language="c",
            kind="exec",
            arch="amd64",
            expected_stdout="Hello, version! (call 1)",
            needs=("libgreet",),
        ),
        _Recipe(
            name="greet-obj",
            outputs=("greet-obj.o", "greet-obj-main.o"),
            sources=("c/greet.c", "c/greet.h", "c/usegreet.c"),
            tools=("gcc",),
            build=_object_pair("gcc", "c/greet.c", "c/usegreet.c", ()),
            language="c",
            kind="object",
            arch="amd64",
            expected_stdout="Hello, version! (call 1)",
            link_main="greet-obj-main.o",
        ),
        _Recipe(
            name="greet-fat-lto-obj",
            outputs=("greet-fat-lto-obj.o", "greet-fat-lto-obj-main.o"),
            sources=("c/greet.c", "c/greet.h", "c/usegreet.c"),
            tools=("gcc",),
            build=_object_pair("gcc", "c/greet.c", "c/usegreet.c", ("-flto", "-ffat-lto-objects")),
            language="c",
            kind="object",
            arch="amd64",
            expected_stdout="Hello, version! (call 1)",
            link_main="greet-fat-lto-obj-main.o",
        ),
        _Recipe(
            name="comdat-obj",
            outputs=("comdat-obj.o", "comdat-obj-main.o"),
            sources=("cxx/comdat.cpp", "cxx/comdat_main.cpp", "cxx/comdat.hpp"),
            tools=("g++",),
            build=_object_pair("g++", "cxx/comdat.cpp", "cxx/comdat_main.cpp", ("-O0",)),
            language="cxx",
            kind="object",
            arch="amd64",
            expected_stdout="COMDAT 1.0.0!",
            fail_args=(),
            fail_returncode=0,
            link_main="comdat-obj-main.o",
        ),
        _Recipe(
            name="hello-rust",
            outputs=("hello-rust",),
            sources=("rust/hello.rs",),
            tools=("rustc",),
            build=_build_rust,
            language="rust",
            kind="exec",
            arch="amd64",
            expected_stdout="hello-rust 1.0.0",
        ),
        _Recipe(name="hello-go", outputs=("hello-go",), build=_go_hello("amd64"), arch="amd64", **go_hello),
        _Recipe(
            name="gofmt",
            outputs=("gofmt",),
            build=_go_command("cmd/gofmt", "amd64", cgo=False),
            arch="amd64",
            **gofmt,
        ),
        _Recipe(
            name="go-cmd",
            outputs=("go-cmd",),
            sources=(),
            tools=("go", "gcc"),
            # With cgo, cmd/go links libc dynamically: a Go binary with an interpreter and dynamic section.
            build=_go_command("cmd/go", "amd64", cgo=True),
            language="go",
            kind="exec",
            arch="amd64",
            run_args=("version",),
            expected_stdout="go version go",
            fail_args=("no-such-command",),
            fail_returncode=2,
            env={"GOTOOLCHAIN": "local"},
        ),
    ]
    for goarch, qemu, extra_env in _GO_CROSS:
        recipes.append(
            _Recipe(
                name=f"hello-go-{goarch}",
                outputs=(f"hello-go-{goarch}",),
                build=_go_cross_hello(goarch, extra_env),
                arch=goarch,
                qemu=qemu,
                **go_hello,
            )
        )
    recipes.append(
        _Recipe(
            name="gofmt-arm64",
            outputs=("gofmt-arm64",),
            build=_go_command("cmd/gofmt", "arm64", cgo=False),
            arch="arm64",
            qemu="qemu-aarch64",
            **gofmt,
        )
    )
    return tuple(recipes)


RECIPES = _recipes()


def fixture_names(
    *, kind: str | None = None, language: str | None = None, arch: str | None = None, optional: bool = False
) -> tuple[str, ...]:
    """Names of the fixtures build_all makes, filtered, without building anything (for parametrize).

    Optional fixtures are left out unless ``optional=True``: they may be absent, so no test may rely on them.
    """
    return tuple(
        recipe.name
        for recipe in RECIPES
        if (kind is None or recipe.kind == kind)
        and (language is None or recipe.language == language)
        and (arch is None or recipe.arch == arch)
        and (optional or not recipe.optional)
    )


def link_object(
    fixture: Fixture, object_path: str, out_path: str, *, timeout: float = COMPILE_TIMEOUT
) -> None:
    """Link ``object_path`` (the object fixture or a stripped copy of it) with the fixture's companion main.

    The program made behaves as ``fixture.run_args`` / ``expected_stdout`` / ``fail_args`` say.
    """
    if fixture.kind != "object" or fixture.link_main is None:
        raise ValueError(f"{fixture.name} is not an object fixture")
    linker = "g++" if fixture.language == "cxx" else "gcc"
    found = shutil.which(linker)
    if found is None:
        raise FixtureBuildError(f"{linker} not found: install Debian's {_PACKAGE_HINTS[linker]}")
    _run([found, fixture.link_main, object_path, "-o", out_path], timeout=timeout)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _cache_key(recipe: _Recipe, toolchains: _Toolchains, keys: Mapping[str, str]) -> str:
    digest = hashlib.sha256()
    digest.update(Path(__file__).read_bytes())
    digest.update(recipe.name.encode())
    for relative in recipe.sources:
        digest.update(relative.encode() + b"\0" + (TESTDATA / relative).read_bytes())
    for tool in recipe.tools:
        digest.update(tool.encode() + b"\0" + toolchains.version(tool).encode())
    for dependency in recipe.after:
        if dependency not in keys:
            raise FixtureBuildError(f"{recipe.name} needs {dependency}, which cannot be built")
        digest.update(keys[dependency].encode())
    return digest.hexdigest()


def _load_manifest(out_dir: Path) -> dict[str, Any]:
    try:
        manifest = json.loads((out_dir / MANIFEST).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(manifest, dict) or manifest.get("schema") != MANIFEST_SCHEMA:
        return {}
    entries = manifest.get("fixtures")
    return entries if isinstance(entries, dict) else {}


def _write_manifest(out_dir: Path, entries: Mapping[str, Any], absent: Mapping[str, str]) -> None:
    target = out_dir / MANIFEST
    temporary = target.with_name(f".{MANIFEST}.{os.getpid()}.tmp")
    manifest = {"schema": MANIFEST_SCHEMA, "fixtures": entries, "absent": absent}
    temporary.write_text(json.dumps(manifest, indent=2, sort_keys=True))
    os.replace(temporary, target)


def _is_cached(entry: Any, key: str, out_dir: Path) -> bool:
    if not isinstance(entry, dict) or entry.get("key") != key:
        return False
    digests = entry.get("sha256")
    if not isinstance(digests, dict):
        return False
    for file_name, digest in digests.items():
        path = out_dir / file_name
        if not path.is_file() or _sha256(path) != digest:
            return False
    return True


def _build_one(recipe: _Recipe, key: str, out_dir: Path, toolchains: _Toolchains) -> dict[str, Any]:
    work_dir = out_dir / ".work" / recipe.name
    shutil.rmtree(work_dir, ignore_errors=True)
    work_dir.mkdir(parents=True)
    started = time.perf_counter()
    try:
        overrides = recipe.build(_Build(recipe, work_dir, out_dir, toolchains)) or {}
        digests = {}
        for file_name in recipe.outputs:
            built = work_dir / file_name
            if not built.is_file():
                raise FixtureBuildError(f"{recipe.name}: the build did not write {file_name}")
            digests[file_name] = _sha256(built)
            os.replace(built, out_dir / file_name)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    seconds = round(time.perf_counter() - started, 2)
    return {"key": key, "sha256": digests, "overrides": overrides, "seconds": seconds}


def build_all(
    out_dir: os.PathLike[str] | str = DEFAULT_OUT_DIR, *, force: bool = False, jobs: int | None = None
) -> dict[str, Fixture]:
    """Build (or reuse from the cache) every fixture into ``out_dir``; return the fixtures by name.

    Optional fixtures whose toolchain is missing are left out of the result (see ``absent_fixtures``).
    Raises FixtureBuildError, naming every failed fixture, when a required one cannot be built.
    """
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    # Two builds into one folder (build.py and a pytest session, say) would replace each other's files.
    with open(out / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _build_all_locked(out, force=force, jobs=jobs)


def _build_all_locked(out: Path, *, force: bool, jobs: int | None) -> dict[str, Fixture]:
    toolchains = _Toolchains()
    previous = {} if force else _load_manifest(out)
    recipes = {recipe.name: recipe for recipe in RECIPES}

    keys: dict[str, str] = {}
    failures: dict[str, str] = {}
    for recipe in RECIPES:
        try:
            keys[recipe.name] = _cache_key(recipe, toolchains, keys)
        except FixtureBuildError as exc:
            failures[recipe.name] = str(exc)

    entries: dict[str, Any] = {}
    absent: dict[str, str] = {}
    futures: dict[str, concurrent.futures.Future[dict[str, Any]]] = {}

    def build_after_dependencies(recipe: _Recipe) -> dict[str, Any]:
        for dependency in recipe.after:
            try:
                futures[dependency].result()
            except Exception as exc:
                raise FixtureBuildError(f"{recipe.name} needs {dependency}, which failed") from exc
        return _build_one(recipe, keys[recipe.name], out, toolchains)

    # Recipes come in dependency order, so a recipe's dependencies were queued before it and a worker that
    # waits on them never waits on work still behind it in the queue.
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs or os.cpu_count() or 2) as pool:
        for recipe in RECIPES:
            if recipe.name not in keys:
                continue
            entry = previous.get(recipe.name)
            if _is_cached(entry, keys[recipe.name], out):
                done: concurrent.futures.Future[dict[str, Any]] = concurrent.futures.Future()
                done.set_result(entry)
                futures[recipe.name] = done
            else:
                futures[recipe.name] = pool.submit(build_after_dependencies, recipe)
        for name, future in futures.items():
            try:
                entries[name] = future.result()
            except _Absent as exc:
                absent[name] = str(exc)
            except FixtureBuildError as exc:
                failures[name] = str(exc)

    for name, reason in list(failures.items()):
        if recipes[name].optional:
            absent[name] = failures.pop(name).splitlines()[0] if reason else "build failed"
    _write_manifest(out, entries, absent)
    shutil.rmtree(out / ".work", ignore_errors=True)
    if failures:
        details = "\n\n".join(f"{name}: {reason}" for name, reason in failures.items())
        raise FixtureBuildError(f"{len(failures)} fixture(s) failed to build:\n\n{details}")
    return {
        name: recipes[name].fixture(out, entries[name].get("overrides", {}))
        for name in (recipe.name for recipe in RECIPES)
        if name in entries
    }


def absent_fixtures(out_dir: os.PathLike[str] | str = DEFAULT_OUT_DIR) -> dict[str, str]:
    """Optional fixtures that the last build_all into ``out_dir`` left out, with the reason for each."""
    try:
        absent = json.loads((Path(out_dir) / MANIFEST).read_text()).get("absent", {})
    except (OSError, ValueError, AttributeError):
        return {}
    return {str(name): str(reason) for name, reason in absent.items()} if isinstance(absent, dict) else {}


def _table(fixtures: Mapping[str, Fixture], absent: Mapping[str, str], out_dir: Path) -> str:
    entries = _load_manifest(out_dir)
    header = ("name", "kind", "lang", "arch", "static", "runs with", "bytes", "build s", "file")
    rows = [header]
    for fixture in fixtures.values():
        rows.append(
            (
                fixture.name,
                fixture.kind,
                fixture.language,
                fixture.arch,
                "yes" if fixture.static else "no",
                fixture.qemu or "native",
                str(os.path.getsize(fixture.path)),
                f"{entries.get(fixture.name, {}).get('seconds', 0.0):.1f}",
                os.path.relpath(fixture.path),
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    numeric = {header.index("bytes"), header.index("build s")}
    lines = [
        "  ".join(
            cell.rjust(widths[i]) if i in numeric else cell.ljust(widths[i]) for i, cell in enumerate(row)
        )
        for row in rows
    ]
    lines.extend(f"absent: {name}: {reason}" for name, reason in absent.items())
    return "\n".join(line.rstrip() for line in lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build binslim's test fixtures.")
    parser.add_argument("--out", default=str(DEFAULT_OUT_DIR), help="output folder (default: %(default)s)")
    parser.add_argument("--force", action="store_true", help="rebuild everything, ignoring the cache")
    parser.add_argument("--json", action="store_true", help="print the fixtures as JSON instead of a table")
    parser.add_argument("--jobs", type=int, default=None, help="parallel builds (default: CPU count)")
    options = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        fixtures = build_all(options.out, force=options.force, jobs=options.jobs)
    except FixtureBuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    seconds = time.perf_counter() - started
    absent = absent_fixtures(options.out)
    if options.json:
        print(json.dumps({name: fixture.to_dict() for name, fixture in fixtures.items()}, indent=2))
    else:
        print(_table(fixtures, absent, Path(options.out)))
        print(f"{len(fixtures)} fixtures in {options.out} ({platform.machine()} host) in {seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
