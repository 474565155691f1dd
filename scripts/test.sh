#!/usr/bin/env bash
# Install the test toolchain, build the fixtures, run pytest. Arguments go to pytest.
#
#   bash scripts/test.sh                 everything
#   bash scripts/test.sh -k fixtures -x  a subset
#
# With CI=true, a missing tool fails the tests that need it instead of skipping them.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

bash scripts/install.sh --test
python3 testdata/build.py

# The Docker tests' session fixture stops the dockerd it started; if pytest itself is killed before that,
# this stops it on the way out (an engine that another test session holds is left alone).
trap 'python3 -m tests.docker_engine stop-orphaned || true' EXIT

status=0
python3 -m pytest "$@" || status=$?
if [ "$status" -eq 5 ]; then
    echo "test.sh: pytest collected no tests; treating that as a failure" >&2
    exit 1
fi
exit "$status"
