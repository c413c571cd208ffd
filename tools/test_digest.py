"""Prints the end of a test run's log as the few lines that matter when it failed on a machine
nobody can log into (CI keeps only part of a long log): the host class, the failed and
errored tests with their one-line reasons, and what any pytest internal error raised (with
its last lines). Usage: python tools/test_digest.py LOG EXIT_CODE (run by tools/test.sh)."""

from __future__ import annotations

import platform
import re
import sys

MAX_TESTS = 60
INTERNAL_TAIL = 12


def host_line() -> str:
    """The CPU's model and the ISA flags accel's host classes are told apart by."""
    flags, model = set(), platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    shown = [f for f in ("avx2", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8") if f in flags]
    return f"{model}; {' '.join(shown) or 'no AVX2'}"


def failed_tests(lines: list[str]) -> list[str]:
    """The short summary's FAILED/ERROR lines (pytest -ra), in order, without repeats."""
    found = [line.strip() for line in lines if re.match(r"(FAILED|ERROR) \S", line)]
    return list(dict.fromkeys(found))


def internal_error_tail(lines: list[str]) -> list[str]:
    """What a pytest internal error raised (its exception lines, a worker's included: they
    name the cause and, under pytest-xdist, the test that was running) and its last frames."""
    internal = [line.rstrip() for line in lines if line.startswith("INTERNALERROR>")]
    raised = [line for line in internal
              if re.match(r"INTERNALERROR>(\s+E)?\s+[\w.]*(Error|Exception|Exit)\b", line)]
    return list(dict.fromkeys(raised)) + internal[-INTERNAL_TAIL:]


def main(path: str, code: str) -> None:
    with open(path, errors="replace") as log:
        lines = log.readlines()
    print(f"\n===== digest of this run (exit {code}) =====")
    print(f"host: {host_line()}")
    tests = failed_tests(lines)
    for line in tests[:MAX_TESTS]:
        print(line[:300])
    if len(tests) > MAX_TESTS:
        print(f"... and {len(tests) - MAX_TESTS} more")
    tail = internal_error_tail(lines)
    if tail:
        print("pytest internal error, its last lines:")
        print("\n".join(line[:300] for line in tail))
    for line in reversed(lines):  # pytest's closing count
        if re.match(r"=+ .*\d+ (passed|failed|error)", line):
            print(line.strip())
            break


if __name__ == "__main__":
    main(*sys.argv[1:3])
