"""Session-wide pytest fixtures: the built test binaries from testdata/."""

from __future__ import annotations

import os

import pytest

from testdata.build import Fixture, build_all
from tests.helpers import FIXTURE_DIR, REPO_ROOT

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
