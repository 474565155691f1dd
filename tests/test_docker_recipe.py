"""examples/Dockerfile without Docker: its binslim RUN line, run through the same script in a fresh venv.

No Docker engine runs here, so the test reads the Dockerfile, checks the story it tells (a Go build in a
builder stage, binslim in that stage, only the result copied into the final stage), and then runs the
script the Dockerfile's RUN line calls, with that line's arguments mapped to temporary paths.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from testdata.build import Fixture
from tests.helpers import require_tool, run_fixture

REPO_ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO_ROOT / "examples" / "Dockerfile"
SCRIPT = REPO_ROOT / "examples" / "slim-app.sh"
INSTALL_TIMEOUT = 900


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


def test_dockerfile_tells_the_story() -> None:
    stages = parse_dockerfile(DOCKERFILE)
    builder, args = slim_step(stages)
    final = stages[-1]
    assert len(stages) == 2 and builder is stages[0] and builder.name == "builder"
    assert builder.base.startswith("golang:")
    # The Go build writes what binslim reads; binslim writes what the final stage copies, and nothing else.
    go_build = next(shlex.split(run) for run in builder.lines("RUN") if " go build " in f" {run} ")
    source, output, *options = args
    assert go_build[go_build.index("-o") + 1] == source
    copied = [shlex.split(c) for c in final.lines("COPY")]
    assert copied == [["--from=builder", output, output]]
    assert final.lines("RUN") == [], "nothing may be stripped or deleted in the final stage"
    # The script is copied in from examples/, so the RUN line runs exactly this file.
    script_copy = [shlex.split(c) for c in builder.lines("COPY") if SCRIPT.name in c]
    assert script_copy and script_copy[0][0] == "examples/slim-app.sh"
    text = DOCKERFILE.read_text()
    assert re.search(r"builder stage.*\n(#.*\n)*#.*layer", text), (
        "the note on why binslim runs in the builder"
    )
    script = SCRIPT.read_text()
    assert re.search(r"pip install .*BINSLIM_PIP_SPEC:-binslim", script)
    assert re.search(r'binslim" "\$input" -o "\$output" --upx', script)


def test_recipe_runs_in_a_fresh_venv(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    require_tool("upx")
    _, args = slim_step(parse_dockerfile(DOCKERFILE))
    source, output, *options = args
    program = fixtures["hello-go"]  # testdata/go/hello, the program the Dockerfile builds
    root = tmp_path / "root"  # the builder's file system
    built = root / source.lstrip("/")
    built.parent.mkdir(parents=True)
    shutil.copy2(program.path, built)
    slimmed = root / output.lstrip("/")
    env = {key: value for key, value in os.environ.items() if not key.startswith(("BINSLIM_", "VIRTUAL_ENV"))}
    env.update(BINSLIM_VENV=str(tmp_path / "venv"), BINSLIM_PIP_SPEC=str(REPO_ROOT), PIP_NO_INPUT="1")
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
    assert Path(program.path).read_bytes() == built.read_bytes()
    assert slimmed.stat().st_size < built.stat().st_size * 0.5
    assert b"UPX!" in slimmed.read_bytes()[:4096]
    assert run_fixture(program, path=slimmed) == run_fixture(program)
    assert "same behaviour: yes" in done.stdout, "the recipe verifies by default"


def test_script_refuses_missing_arguments() -> None:
    done = subprocess.run(["sh", str(SCRIPT)], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2 and "usage: slim-app.sh INPUT OUTPUT" in done.stderr
