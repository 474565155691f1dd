"""The image-size story, measured: one Go web service (testdata/go/webservice) in four images.

    python3 benchmarks/docker_story.py            the Markdown table of the README's Docker section
    python3 benchmarks/docker_story.py --json     the same figures as JSON

Builds the four targets of examples/go-service.Dockerfile on Debian's dockerd, started and stopped here with
the stand-in base images (tests/docker_engine.py; root, docker.io and debootstrap needed, as for the tests):

1. ``single``: one stage on golang:1.23-bookworm, the toolchain shipped with the program;
2. ``multistage``: multi-stage, the same binary alone in an empty image;
3. ``stripped``: multi-stage, the binary stripped by binslim in the builder stage;
4. ``packed``: multi-stage, stripped and packed with UPX by binslim.

Each image's size is ``docker image inspect``'s, in exact bytes, MB (10^6) and MiB (2^20), beside what
``docker image ls`` prints (MB, though it says "MB") and what ``ls -lh`` prints for the binary (MiB, though it
says "M"): the same bytes read as two different numbers. The added startup is what binslim measured while
verifying (median of alternated runs of ``webservice --version``). Every image is also run once
(``--get /healthz``, no network) to show that it serves.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.docker_engine import DockerEngine  # noqa: E402

DOCKERFILE = "examples/go-service.Dockerfile"
BUILD_TIMEOUT = 1800.0
TARGETS = ("single", "multistage", "stripped", "packed")
BINARY_IN = {"single": "/usr/local/bin/webservice"}  # the others hold it at /webservice
DESCRIPTION = {
    "single": "single stage on golang:1.23-bookworm",
    "multistage": "multi-stage, `FROM scratch`",
    "stripped": "+ binslim (strip)",
    "packed": "+ binslim --upx",
}


@dataclass(frozen=True)
class StoryImage:
    target: str
    image_bytes: int
    docker_image_ls: str  # the SIZE column of `docker image ls`
    binary_bytes: int
    ls_h: str  # the size column of `ls -lh` for the binary
    added_startup_ms: float | None  # measured by binslim's verification; None where binslim did not run
    build_seconds: float
    serves: str  # what `webservice --get /healthz` printed in the container


def tag_of(target: str) -> str:
    return f"binslim-story:{target}"


def build(engine: DockerEngine, target: str, context: Path) -> float:
    started = time.monotonic()
    engine.docker(
        "build", "--network", "host", "-f", DOCKERFILE, "--target", target, "-t", tag_of(target), ".",
        cwd=context,
        timeout=BUILD_TIMEOUT,
    )  # fmt: skip
    return time.monotonic() - started


def binary_of(engine: DockerEngine, target: str, scratch: Path) -> tuple[int, str]:
    """The service's binary copied out of the image: its size, and `ls -lh`'s size column for it."""
    container = engine.docker("create", tag_of(target)).stdout.strip()
    try:
        copy = scratch / target
        engine.docker("cp", f"{container}:{BINARY_IN.get(target, '/webservice')}", str(copy))
    finally:
        engine.docker("rm", "-f", container)
    listed = subprocess.run(["ls", "-lh", str(copy)], capture_output=True, text=True, timeout=30, check=True)
    return copy.stat().st_size, listed.stdout.split()[4]


def slim_reports(engine: DockerEngine) -> dict[str, dict[str, object]]:
    """binslim's JSON reports from the builder stage, by target."""
    reports = {}
    for target in ("stripped", "packed"):
        shown = engine.docker(
            "run",
            "--rm",
            "--network",
            "none",
            "--entrypoint",
            "cat",
            tag_of("slimming"),
            f"/out/{target}.json",
        ).stdout
        reports[target] = json.loads(shown)["results"][0]
    return reports


def measure(engine: DockerEngine, context: Path = REPO_ROOT) -> list[StoryImage]:
    engine.ensure_base_images()
    seconds = {target: build(engine, target, context) for target in TARGETS}
    build(engine, "slimming", context)  # cached by now: the stage the stripped and packed images copy from
    reports = slim_reports(engine)
    images = []
    with tempfile.TemporaryDirectory(prefix="docker-story-") as scratch:
        for target in TARGETS:
            binary_bytes, ls_h = binary_of(engine, target, Path(scratch))
            report = reports.get(target)
            added = None
            if report is not None:
                verify = report["verify"]
                assert isinstance(verify, dict) and verify["same_behaviour"] is True
                added = float(verify["startup_ms"]["added"])
                assert binary_bytes == report["size"]["final"]  # type: ignore[index]
            served = engine.docker("run", "--rm", "--network", "none", tag_of(target), "--get", "/healthz")
            listed = engine.docker("image", "ls", "--format", "{{.Size}}", tag_of(target)).stdout.strip()
            images.append(
                StoryImage(
                    target=target,
                    image_bytes=engine.image_size(tag_of(target)),
                    docker_image_ls=listed,
                    binary_bytes=binary_bytes,
                    ls_h=ls_h,
                    added_startup_ms=added,
                    build_seconds=round(seconds[target], 1),
                    serves=served.stdout.strip(),
                )
            )
    return images


def table(images: Sequence[StoryImage]) -> str:
    def mb(size: int) -> str:
        return f"{size / 1e6:,.1f} MB"

    def mib(size: int) -> str:
        return f"{size / 2**20:,.1f} MiB"

    lines = [
        "| image | image size (`docker image inspect`) | `docker image ls` says | binary | `ls -lh` says"
        " | added startup (binslim) |",
        "|---|---|---|---|---|---|",
    ]
    for image in images:
        added = "" if image.added_startup_ms is None else f"{image.added_startup_ms:+.1f} ms"
        lines.append(
            f"| {image.target}: {DESCRIPTION[image.target]} "
            f"| {image.image_bytes:,} B = {mb(image.image_bytes)} = {mib(image.image_bytes)} "
            f"| {image.docker_image_ls} "
            f"| {image.binary_bytes:,} B = {mb(image.binary_bytes)} = {mib(image.binary_bytes)} "
            f"| {image.ls_h} | {added} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    engine = DockerEngine.start()
    try:
        images = measure(engine)
    finally:
        engine.stop()
    if args.json:
        print(json.dumps([asdict(image) for image in images], indent=2))
    else:
        print(table(images))
    return 0


if __name__ == "__main__":
    sys.exit(main())
