#!/usr/bin/env bash
# Strict OpenCL C 1.2 syntax check of kernel sources with clang, twice per file:
#   plain      the NDRange shape (no FPGA macros), as PoCL and Intel's CPU runtime see it
#   fpga       -DINTELFPGA_CL (as aoc defines it) with kernels/fpga_builtins_check.h declaring
#              the Intel channel built-ins, so the FPGA-only code is checked too
# Usage: tools/fpga-syntax-check.sh [file.cl ...]   (default: every kernels/*.cl)
# Exits non-zero if any check fails; $CLANG overrides the compiler.
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
clang="${CLANG:-clang}"
if ! command -v "$clang" >/dev/null 2>&1; then
  echo "fpga-syntax-check: $clang not found (apt-get install clang)" >&2
  exit 2
fi
if [ $# -eq 0 ]; then set -- "$root"/kernels/*.cl; fi
flags=(-x cl -cl-std=CL1.2 -fsyntax-only -Werror -Wall -I "$root/kernels")
fpga=(-DINTELFPGA_CL -include "$root/kernels/fpga_builtins_check.h")
status=0
for file in "$@"; do
  for mode in plain fpga; do
    extra=()
    [ "$mode" = fpga ] && extra=("${fpga[@]}")
    if output="$("$clang" "${flags[@]}" "${extra[@]}" "$file" 2>&1)" && [ -z "$output" ]; then
      echo "ok    $mode  $file"
    else
      echo "FAIL  $mode  $file"
      echo "$output"
      status=1
    fi
  done
done
exit $status
