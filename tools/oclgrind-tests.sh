#!/usr/bin/env bash
# Run kernel tests under oclgrind by hand, with the checks tests/test_oclgrind.py uses, and
# print oclgrind's whole report (the test shows only the start of it).
#
#   tools/oclgrind-tests.sh [--uninitialized] [pytest arguments]
#
# Default pytest arguments: -m oclgrind tests/test_kernel_*.py tests/test_quant_vec.py. Exits
# non-zero when pytest fails or oclgrind reports anything. See tests/test_oclgrind.py for why
# --uninitialized is optional (oclgrind 21.10's plugin breaks on vector code).
set -euo pipefail
cd "$(dirname "$0")/.."

checks=(--check-api --data-races)
if [[ "${1:-}" == "--uninitialized" ]]; then
  checks+=(--uninitialized)
  shift
fi
if (( $# == 0 )); then
  set -- -m oclgrind tests/test_kernel_*.py tests/test_quant_vec.py
fi
python="${PYTHON:-.venv/bin/python}"
# The same pytest entry point as the test: every device buffer kept alive.
runner="$("$python" -c 'import sys; sys.path.insert(0, "tests"); import test_oclgrind; print(test_oclgrind.KEEP_BUFFERS)')"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT

status=0
ACCEL_CACHE_DIR=off oclgrind "${checks[@]}" --log "$log" \
  "$python" -c "$runner" -p no:cacheprovider "$@" || status=$?
if [[ -s "$log" ]]; then
  echo "---- oclgrind reported:"
  cat "$log"
  (( status != 0 )) || status=1
else
  echo "---- oclgrind reported nothing"
fi
exit "$status"
