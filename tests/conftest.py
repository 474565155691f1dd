"""Session-wide pytest fixtures: the built test binaries from testdata/, and a real Docker engine."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from testdata.build import Fixture, build_all
from tests.docker_engine import DOCKER_CLIENT, DOCKERD, DockerEngine
from tests.helpers import FIXTURE_DIR, IN_CI, REPO_ROOT

# `python -m binslim` in a test must run this checkout, not whatever copy pip installed.
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(REPO_ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
)


@pytest.fixture(scope="session")
def fixtures() -> dict[str, Fixture]:
    """Every fixture that built, by name; built on first use, then reused from the cache in build/."""
    return build_all(FIXTURE_DIR)


@pytest.fixture(scope="session")
def fixture_names(fixtures: dict[str, Fixture]) -> list[str]:
    """Names of the fixtures that built here (optional ones may be missing). To parametrize, use the
    constants in tests.helpers instead, which need no build at collection time."""
    return list(fixtures)


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[DockerEngine]:
    """Debian's dockerd, started for this session and stopped at its end (also when tests fail), with the
    stand-in base images (golang:1.23-bookworm, debian:bookworm-slim) built or taken from the cache.

    Always in CI. Elsewhere only with BINSLIM_DOCKER_TESTS=1: the first run builds the base images for several
    minutes, and one session at a time holds the engine (tests/docker_engine.py)."""
    if not IN_CI and os.environ.get("BINSLIM_DOCKER_TESTS") != "1":
        pytest.skip("Docker tests run in CI; set BINSLIM_DOCKER_TESTS=1 to run them here")
    missing = [tool for tool in (DOCKERD, DOCKER_CLIENT) if not os.access(tool, os.X_OK)]
    missing += [tool for tool in ("debootstrap",) if shutil.which(tool) is None]
    problem = ""
    if missing:
        problem = f"{', '.join(missing)} not found: install Debian's docker.io and debootstrap"
        problem += " (bash scripts/install.sh --test)"
    elif os.geteuid() != 0:
        problem = "the Docker tests start dockerd, which needs root"
    if problem:
        if IN_CI:
            pytest.fail(problem, pytrace=False)
        pytest.skip(problem)
    engine = DockerEngine.start()
    try:
        engine.ensure_base_images()
        engine.forget_builds()
        yield engine
    finally:
        engine.stop()
