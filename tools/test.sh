#!/usr/bin/env bash
# The test command: set up (a no-op when nothing changed), then the whole test suite.
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
exec .venv/bin/python -m pytest "$@"
