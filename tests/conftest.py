"""Session-wide pytest fixtures: the built test binaries from testdata/."""

from __future__ import annotations

import pytest

from testdata.build import Fixture, build_all
from tests.helpers import FIXTURE_DIR


@pytest.fixture(scope="session")
def fixtures() -> dict[str, Fixture]:
    """Every fixture that built, by name; built on first use, then reused from the cache in build/."""
    return build_all(FIXTURE_DIR)


@pytest.fixture(scope="session")
def fixture_names(fixtures: dict[str, Fixture]) -> list[str]:
    """Names of the fixtures that built here (optional ones may be missing). To parametrize, use the
    constants in tests.helpers instead, which need no build at collection time."""
    return list(fixtures)
