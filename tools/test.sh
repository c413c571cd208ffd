#!/usr/bin/env bash
# The test command: set up (a no-op when nothing changed), then the whole test suite.
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
# Tests that check the set-up's results (three platforms, clang) fail instead of skipping.
export ACCEL_REQUIRE_FULL_SETUP=1
# One pytest-xdist process per core (at most 4: each holds every OpenCL device and its
# compiled models), one test file per process at a time so module fixtures (compiled models,
# servers) are built once; ACCEL_TEST_WORKERS=0 runs serially.
cores=$(nproc 2>/dev/null || echo 2)
workers=${ACCEL_TEST_WORKERS:-$(( cores < 4 ? cores : 4 ))}
if [ "$workers" = 0 ]; then
  exec .venv/bin/python -m pytest "$@"
fi
# The slowest tests are listed at the end (what to look at when the suite grows slow).
exec .venv/bin/python -m pytest -n "$workers" --dist loadfile --durations=25 "$@"
