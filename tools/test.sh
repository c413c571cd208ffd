#!/usr/bin/env bash
# The test command: set up (a no-op when nothing changed), then the whole test suite.
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
# Tests that check the set-up's results (three platforms, clang) fail instead of skipping.
export ACCEL_REQUIRE_FULL_SETUP=1
exec .venv/bin/python -m pytest "$@"
