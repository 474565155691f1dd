"""benchmarks/docker_story.py on a real engine: the four images of the README's image-size story build, serve,
and are as big as the README's table says they are relative to each other."""

from __future__ import annotations

import re
from pathlib import Path

from tests.docker_engine import DockerEngine
from tests.helpers import load_benchmark

REPO_ROOT = Path(__file__).resolve().parent.parent


def test_story_images(docker_engine: DockerEngine) -> None:
    story = load_benchmark("docker_story")
    images = {image.target: image for image in story.measure(docker_engine)}
    assert list(images) == ["single", "multistage", "stripped", "packed"]
    for image in images.values():
        assert image.serves == "200 OK ok", image
    single, multistage, stripped, packed = images.values()
    # The toolchain ships with the single-stage image; each scratch image is its one binary, byte for byte.
    assert single.image_bytes > 500_000_000
    for image in (multistage, stripped, packed):
        assert image.image_bytes == image.binary_bytes
    assert single.binary_bytes == multistage.binary_bytes > stripped.binary_bytes > packed.binary_bytes
    assert multistage.added_startup_ms is None and stripped.added_startup_ms is not None
    assert packed.added_startup_ms is not None
    # The units: docker image ls counts MB (10^6 bytes), ls -h counts MiB (2^20 bytes) and says "M".
    for image in images.values():
        shown = re.fullmatch(r"([\d.]+)(MB|GB)", image.docker_image_ls)
        assert shown, image.docker_image_ls
        scale = 1e6 if shown.group(2) == "MB" else 1e9
        assert abs(float(shown.group(1)) * scale - image.image_bytes) / image.image_bytes < 0.01
        listed = re.fullmatch(r"([\d.]+)M", image.ls_h)
        assert listed, image.ls_h
        assert abs(float(listed.group(1)) * 2**20 - image.binary_bytes) / image.binary_bytes < 0.02
    table = story.table(list(images.values()))
    size = packed.image_bytes
    assert f"{size:,} B = {size / 1e6:,.1f} MB = {size / 2**20:,.1f} MiB" in table
