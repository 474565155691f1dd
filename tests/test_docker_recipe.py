"""The Docker recipes of examples/, on a real Docker engine (tests/docker_engine.py), exactly as the README
shows them.

The README's own ``docker build`` and ``docker run`` commands run in a copy of this checkout's tracked files
(what a fresh clone holds), with ``--network host`` added to the build (the registries are reachable only
through the host here) and ``--network none`` to the run (the engine has no bridge). The Dockerfile's story
is also checked without an engine, and its binslim step runs in a fresh virtual environment from a wheel.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from testdata.build import Fixture
from tests.docker_engine import DockerEngine
from tests.helpers import require_tool, run_fixture

REPO_ROOT = Path(__file__).resolve().parent.parent
README = REPO_ROOT / "README.md"
DOCKERFILE = REPO_ROOT / "examples" / "Dockerfile"
SCRIPT = REPO_ROOT / "examples" / "slim-app.sh"
INSTALL_TIMEOUT = 900
BUILD_TIMEOUT = 1800


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)  # (INSTRUCTION, arguments)

    def lines(self, instruction: str) -> list[str]:
        return [args for kind, args in self.instructions if kind == instruction]


def parse_dockerfile(path: Path) -> list[Stage]:
    """Stages with their instructions; continuation lines joined, comments dropped."""
    stages: list[Stage] = []
    logical = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not logical and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            logical += line[:-1] + " "
            continue
        logical += line
        kind, _, args = logical.partition(" ")
        logical = ""
        kind = kind.upper()
        if kind == "FROM":
            words = args.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
        else:
            stages[-1].instructions.append((kind, args.strip()))
    return stages


def slim_step(stages: list[Stage]) -> tuple[Stage, list[str]]:
    """The builder stage and the arguments its RUN line gives slim-app.sh."""
    for stage in stages:
        for run in stage.lines("RUN"):
            words = shlex.split(run)
            for index, word in enumerate(words):
                if os.path.basename(word) == SCRIPT.name:
                    return stage, words[index + 1 :]
    raise AssertionError(f"no RUN line of {DOCKERFILE} calls {SCRIPT.name}")


def readme_section(title: str) -> str:
    text = README.read_text()
    start = text.index(f"\n## {title}")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def readme_docker_commands(section: str) -> list[list[str]]:
    """The ``docker ...`` lines of the section's shell blocks, comments dropped."""
    blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
    assert blocks, "the README's Docker section shows its commands in sh blocks"
    commands = []
    for block in blocks:
        for line in block.splitlines():
            words = shlex.split(line, comments=True)
            if words and words[0] == "docker":
                commands.append(words)
    return commands


def readme_recipe(dockerfile: str) -> tuple[list[str], list[str]]:
    """The README's ``docker build -f DOCKERFILE`` command and the ``docker run`` of the image it tags."""
    commands = readme_docker_commands(readme_section("Docker"))
    build = next(words for words in commands if words[:2] == ["docker", "build"] and dockerfile in words)
    assert build[build.index("-f") + 1] == dockerfile
    tag = build[build.index("-t") + 1]
    run = next(words for words in commands if words[:2] == ["docker", "run"] and tag in words)
    return build, run


def test_dockerfile_tells_the_story() -> None:
    stages = parse_dockerfile(DOCKERFILE)
    builder, args = slim_step(stages)
    final = stages[-1]
    assert len(stages) == 2 and builder is stages[0] and builder.name == "builder"
    assert builder.base == "golang:1.23-bookworm"
    # The Go build writes what binslim reads; binslim writes what the final stage copies, and nothing else.
    go_build = next(shlex.split(run) for run in builder.lines("RUN") if " go build " in f" {run} ")
    source, output, *options = args
    assert go_build[go_build.index("-o") + 1] == source
    assert "--upx" in options
    assert final.base == "scratch"
    copied = [shlex.split(c) for c in final.lines("COPY")]
    assert copied == [["--from=builder", output, output]]
    assert final.lines("RUN") == [], "nothing may be stripped or deleted in the final stage"
    # binslim comes from the build context by default; a build argument can name a published release.
    assert "BINSLIM_PIP_SPEC=/binslim-src" in builder.lines("ARG")
    assert [["binslim/", "/binslim-src/binslim/"]] == [
        shlex.split(c) for c in builder.lines("COPY") if c.startswith("binslim/")
    ]
    text = DOCKERFILE.read_text()
    assert re.search(r"builder stage.*\n(#.*\n)*#.*layer", text), (
        "the note on why binslim runs in the builder"
    )
    assert "--build-arg BINSLIM_PIP_SPEC=binslim==" in text
    assert not re.search(r"https?://", text), "no mirror address: the backports line comes from the image"
    script = SCRIPT.read_text()
    assert re.search(r"pip install .*\n.*BINSLIM_PIP_SPEC:-/binslim-src", script)
    assert re.search(r'binslim" "\$input" -o "\$output" "\$@"', script)


def test_recipe_runs_in_a_fresh_venv(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    require_tool("upx")
    _, args = slim_step(parse_dockerfile(DOCKERFILE))
    source, output, *options = args
    options = [option for option in options if option != "$BINSLIM_ARGS"]
    program = fixtures["hello-go"]  # testdata/go/hello, the program the Dockerfile builds
    root = tmp_path / "root"  # the builder's file system
    built = root / source.lstrip("/")
    built.parent.mkdir(parents=True)
    shutil.copy2(program.path, built)
    # Compared with this copy, not the fixture: a shared build cache may rebuild the fixture meanwhile.
    built_bytes = built.read_bytes()
    slimmed = root / output.lstrip("/")
    env = {key: value for key, value in os.environ.items() if not key.startswith(("BINSLIM_", "VIRTUAL_ENV"))}
    env.update(PIP_NO_INPUT="1")
    # conftest's PYTHONPATH names this checkout: pip would take binslim as installed already.
    env.pop("PYTHONPATH", None)
    # The README's way outside this repository: a wheel built from a checkout (here a copy of one, so the
    # build leaves nothing in this tree), then installed by its path through BINSLIM_PIP_SPEC.
    checkout = tmp_path / "checkout"
    shutil.copytree(REPO_ROOT / "binslim", checkout / "binslim", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO_ROOT / name, checkout / name)
    wheel = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(tmp_path / "dist"), str(checkout)],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT,
        check=False,
    )
    assert wheel.returncode == 0, wheel.stdout + wheel.stderr
    (wheel_path,) = (tmp_path / "dist").glob("binslim-*-py3-none-any.whl")
    env.update(BINSLIM_VENV=str(tmp_path / "venv"), BINSLIM_PIP_SPEC=str(wheel_path))
    env.pop("TERM", None)
    # As RUN does it: /bin/sh -c, no terminal, nothing on stdin.
    done = subprocess.run(
        ["/bin/sh", "-c", shlex.join(["sh", str(SCRIPT), str(built), str(slimmed), *options])],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "\x1b" not in done.stdout + done.stderr, "no colours without a terminal"
    assert (tmp_path / "venv" / "bin" / "binslim").exists(), "binslim came from the fresh venv"
    assert built.read_bytes() == built_bytes, "the input is left as it was"
    assert slimmed.stat().st_size < built.stat().st_size * 0.5
    assert b"UPX!" in slimmed.read_bytes()[:4096]
    assert run_fixture(program, path=slimmed) == run_fixture(program, path=built)
    assert "same behaviour: yes" in done.stdout, "the recipe verifies by default"


def test_script_refuses_missing_arguments() -> None:
    done = subprocess.run(["sh", str(SCRIPT)], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2 and "usage: slim-app.sh INPUT OUTPUT" in done.stderr


# --- on a real engine ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clean_clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This checkout's tracked files, as a fresh clone has them (with their working-tree contents)."""
    clone = tmp_path_factory.mktemp("clone")
    listed = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "ls-files", "-z"], capture_output=True, timeout=60, check=True
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = REPO_ROOT / name
        if not os.path.lexists(source):
            continue  # deleted in the working tree, not yet committed
        target = clone / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target, follow_symlinks=False)
    return clone


def build_command(words: list[str], *extra: str) -> list[str]:
    assert words[:2] == ["docker", "build"]
    return [*words[:2], "--network", "host", *extra, *words[2:]]


def test_readme_recipe_builds_and_runs(docker_engine: DockerEngine, clean_clone: Path) -> None:
    build, run = readme_recipe("examples/Dockerfile")
    tag = build[build.index("-t") + 1]
    built = docker_engine.docker(
        *build_command(build)[1:], cwd=clean_clone, timeout=BUILD_TIMEOUT, check=False
    )
    output = built.stdout + built.stderr
    assert built.returncode == 0, output[-6000:]
    # binslim's report, with its verification, is in the build output.
    assert re.search(r"/go/bin/app -> /app: stripped and packed", output), output[-4000:]
    assert "same behaviour: yes" in output

    assert run[:2] == ["docker", "run"] and tag in run
    ran = docker_engine.docker(*run[1:2], "--network", "none", *run[2:], check=False)
    assert (ran.returncode, ran.stdout, ran.stderr) == (0, "hello-go 1.0.0\n", "")

    # The image is the packed program and nothing else: its size is that file's, a fraction of the original's.
    image_size = docker_engine.image_size(tag)
    final = re.search(r"final\s+([\d,]+) B", output)
    original = re.search(r"original\s+([\d,]+) B", output)
    assert final and original
    assert image_size == int(final.group(1).replace(",", ""))
    assert image_size < int(original.group(1).replace(",", "")) * 0.5
    assert image_size < 1_000_000


def test_failed_verification_fails_the_build(docker_engine: DockerEngine, clean_clone: Path) -> None:
    build, _ = readme_recipe("examples/Dockerfile")
    build[build.index("-t") + 1] = "hello-slim-unverified"
    # md5sum as the verification script prints each file's checksum: the two sides differ, for real.
    extra = ("--build-arg", "BINSLIM_ARGS=--verify-cmd /usr/bin/md5sum")
    built = docker_engine.docker(
        *build_command(build, *extra)[1:], cwd=clean_clone, timeout=BUILD_TIMEOUT, check=False
    )
    output = built.stdout + built.stderr
    assert built.returncode != 0, output[-4000:]
    assert "the result does not behave like the original" in output
    assert "returned a non-zero code: 3" in output, output[-4000:]
    assert docker_engine.docker("image", "inspect", "hello-slim-unverified", check=False).returncode != 0


def test_readme_cxx_recipe_builds_and_runs(docker_engine: DockerEngine, clean_clone: Path) -> None:
    build, run = readme_recipe("examples/cxx.Dockerfile")
    tag = build[build.index("-t") + 1]
    built = docker_engine.docker(
        *build_command(build)[1:], cwd=clean_clone, timeout=BUILD_TIMEOUT, check=False
    )
    output = built.stdout + built.stderr
    assert built.returncode == 0, output[-6000:]
    # binslim bundle's report, with its verification inside the root (a chroot: no namespaces in a build).
    assert "/rootfs: root for hello-cxx (folder)" in output, output[-4000:]
    assert re.search(
        r"/usr/local/bin/hello-cxx +[\d,]+ B -> [\d,]+ B, stripped +\(program hello-cxx\)", output
    )
    assert re.search(r"libstdc\+\+\.so\.6\.0\.\d+ .*stripped", output)
    assert re.search(r"verify hello-cxx \(chroot\): same", output)

    ran = docker_engine.docker(*run[1:2], "--network", "none", *run[2:], check=False)
    assert (ran.returncode, ran.stdout, ran.stderr) == (0, "hello-cxx 1.0.0\n", "")

    # The image is the root and nothing else: its files' bytes plus its symlinks' targets, in one layer.
    total = re.search(r"total ([\d,]+) B in \d+ files", output)
    assert total
    links = re.findall(r"^  (/\S+) -> (\S+)  \(", output, re.M)
    assert ("/lib64", "usr/lib64") in links
    expected = int(total.group(1).replace(",", "")) + sum(len(target) for _, target in links)
    assert docker_engine.image_size(tag) == expected
    layers = docker_engine.docker("history", "--format", "{{.Size}}", tag).stdout.split()
    assert len([size for size in layers if size != "0B"]) == 1
    shell = docker_engine.docker(
        "run", "--rm", "--network", "none", "--entrypoint", "/bin/sh", tag, check=False
    )
    assert shell.returncode != 0, "no shell in the image"
