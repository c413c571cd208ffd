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
# The slowest tests are listed at the end (what to look at when the suite grows slow). A
# failed run ends with a digest (host class, failed tests, internal errors): CI keeps only
# part of a long log, and it may run on a host class nobody here has.
log=$(mktemp "${TMPDIR:-/tmp}/accel-tests.XXXXXX.log")
set +e
.venv/bin/python -m pytest -n "$workers" --dist loadfile --durations=25 "$@" 2>&1 | tee "$log"
code=${PIPESTATUS[0]}
set -e
[ "$code" = 0 ] || .venv/bin/python tools/test_digest.py "$log" "$code"
rm -f "$log"
exit "$code"
