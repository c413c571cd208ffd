"""The small kernel cases (marked @pytest.mark.oclgrind) run again under oclgrind's simulated
OpenCL device, which checks every memory access of every work-item.

oclgrind runs a program with its own OpenCL runtime preloaded (LD_PRELOAD), so inside that
run accel.devices() sees one device, "Oclgrind Simulator" (kind "simulator", short name oclgrind-simulator; it
reports itself as an accelerator), and the ``ctx`` fixture runs each marked test on it.
Every message oclgrind writes goes to a log file; a run passes only if pytest passed and
the log is empty. One run per tests/test_kernel_*.py file (and OTHER_KERNEL_TESTS), so a
failure names the kernel family; a file must mark at least one case (pytest exits 5 when none
is selected).

Oclgrind 21.10 (the same code is in its 26.03.1 source) evaluates the integer clamp/min/max builtins
wrongly when the bounds are scalars (clamp(int16, int, int), valid OpenCL C): it reads the
scalar arguments as vectors, so only lane 0 is right. Kernels splat such bounds by hand
(kernels/quant_vec.h); PoCL and Intel's runtimes get either form right.

Checks:
- always: out-of-bounds global/local/private accesses (oclgrind's core), --check-api
  (bad OpenCL API use), --data-races;
- --uninitialized (reads of uninitialised memory), only for the kernel families in
  UNINITIALIZED_CHECKED. oclgrind 21.10's uninitialised-value plugin is not usable on
  vector code: it segfaults on `convert_int16((char16)(x))` in a 5-line kernel and reports
  splatted vectors as uninitialised (kernels/conv.cl). Our pool/eltwise/l2norm kernels are
  scalar code, which it handles (depthwise.cl was, until its epilogue became vector code).

Workarounds for that plugin, where it is used:
- it aborts on LLVM's `freeze` instruction (emitted e.g. for a div/rem pair of the same
  operands), so kernels/pool.cl avoids that pattern;
- it keeps the shadow state of a released buffer for the next buffer created at the same
  address: after a 240-byte buffer is released, bytes 240.. of a new 1152-byte buffer read
  as uninitialised although clEnqueueWriteBuffer filled them (a plain copy kernel shows
  it). So inside the oclgrind run every buffer made through Context.buffer (uploads
  included) is kept alive until the end (KEEP_BUFFERS); the marked cases are small.

test_the_harness_catches_* prove the checks can fail: a kernel with an out-of-bounds write
(whose results are still right) and one reading an unwritten buffer are both reported.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from chosen_devices import ENV as DEVICES_ENV
from chosen_devices import allows

TESTS = Path(__file__).resolve().parent
# oclgrind's device as accel describes it (short name, name, platform); ACCEL_TEST_DEVICES
# must allow it, and inside the run it is the one device the fixtures choose.
OCLGRIND = "oclgrind-simulator Oclgrind Simulator Oclgrind"
pytestmark = pytest.mark.skipif(not allows(OCLGRIND),
                                reason=f"{DEVICES_ENV} does not choose oclgrind's device")
ROOT = TESTS.parent
CHECKS = ["--check-api", "--data-races"]
UNINITIALIZED = "--uninitialized"
# (depthwise.cl left this list when its epilogue became vector code, quant_vec.h)
UNINITIALIZED_CHECKED = ["tests/test_kernel_affine.py",
                         "tests/test_kernel_eltwise.py",
                         "tests/test_kernel_l2norm.py",
                         "tests/test_kernel_pool.py"]
TIMEOUT_S = 300

# pytest, with every device buffer kept alive (see the module doc).
KEEP_BUFFERS = """
import sys
import pytest
import accel.runtime

kept = []
make_buffer = accel.runtime.Context.buffer

def keep_buffer(self, nbytes):
    kept.append(make_buffer(self, nbytes))
    return kept[-1]

accel.runtime.Context.buffer = keep_buffer
sys.exit(pytest.main(sys.argv[1:]))
"""


# Kernel tests outside tests/test_kernel_*.py that run under oclgrind too: quant_vec.h's own
# cases (its 32-bit requantization once differed under Oclgrind alone, see quant_vec.h).
OTHER_KERNEL_TESTS = ["tests/test_quant_vec.py"]


def kernel_test_files() -> list[str]:
    return sorted([str(p.relative_to(ROOT)) for p in TESTS.glob("test_kernel_*.py")] +
                  OTHER_KERNEL_TESTS)


def run_under_oclgrind(log: Path, checks: list[str],
                       pytest_args: list[str]) -> subprocess.CompletedProcess:
    """pytest with these arguments inside oclgrind with these checks, messages to log."""
    oclgrind = shutil.which("oclgrind")
    if oclgrind is None:
        pytest.fail("oclgrind is not installed (tools/setup-opencl.sh installs the Debian package)")
    env = {**os.environ, "ACCEL_CACHE_DIR": "off",  # build every program under oclgrind
           DEVICES_ENV: "oclgrind"}  # the fixtures choose the simulator
    env.pop("ACCEL_DEVICE", None)
    command = [oclgrind, *checks, "--log", str(log),
               sys.executable, "-c", KEEP_BUFFERS, "-p", "no:cacheprovider", "-v", *pytest_args]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT_S)


def assert_clean(log: Path, result: subprocess.CompletedProcess) -> None:
    output = result.stdout + result.stderr
    report = log.read_text() if log.exists() else ""
    assert result.returncode == 0, f"pytest under oclgrind failed:\n{output[-6000:]}\n{report[:4000]}"
    assert "[oclgrind-" in output, f"the tests did not run on oclgrind's device:\n{output[-3000:]}"
    assert " passed" in output and " failed" not in output
    assert report.strip() == "", f"oclgrind reported errors:\n{report[:8000]}"


def test_there_are_kernel_tests_to_check():
    assert set(UNINITIALIZED_CHECKED) <= set(kernel_test_files())


@pytest.mark.parametrize("test_file", kernel_test_files())
def test_kernel_tests_are_clean_under_oclgrind(tmp_path, test_file):
    log = tmp_path / "oclgrind.log"
    assert_clean(log, run_under_oclgrind(log, CHECKS, ["-m", "oclgrind", test_file]))


@pytest.mark.parametrize("test_file", UNINITIALIZED_CHECKED)
def test_kernel_tests_read_no_uninitialised_memory(tmp_path, test_file):
    log = tmp_path / "oclgrind.log"
    assert_clean(log, run_under_oclgrind(log, [*CHECKS, UNINITIALIZED],
                                         ["-m", "oclgrind", test_file]))


BAD_KERNEL_TEST = '''
import sys
import numpy as np
import accel
sys.path.insert(0, TESTS_DIR)  # the tests' one place that chooses devices
from chosen_devices import chosen

SOURCE = """
__kernel void copy_one_too_far(__global const char* in, __global char* out) {
  const int i = get_global_id(0);
  out[i + 1] = in[i];  /* the last work-item writes one byte past the end */
}

__kernel void sign_of_unwritten(__global const char* in, __global char* out) {
  const int i = get_global_id(0);
  out[i] = in[i] > 0 ? 1 : 0;  /* in was never written */
}
"""


def test_out_of_bounds():
    (device,) = chosen()
    assert device.platform == "Oclgrind"
    ctx = accel.Context(device)
    x = np.arange(16, dtype=np.int8)
    out = ctx.upload(np.zeros(16, np.int8))
    ctx.launch(ctx.build(SOURCE, cache=False), "copy_one_too_far", [16], ctx.upload(x), out)
    np.testing.assert_array_equal(ctx.download(out, np.int8, 16)[1:], x[:15])


def test_uninitialised():
    (device,) = chosen()
    ctx = accel.Context(device)
    out = ctx.upload(np.zeros(16, np.int8))
    ctx.launch(ctx.build(SOURCE, cache=False), "sign_of_unwritten", [16], ctx.buffer(16), out)
'''


@pytest.mark.parametrize("case, checks, message", [
    ("out_of_bounds", CHECKS, "Invalid write of size 1"),
    ("uninitialised", [*CHECKS, UNINITIALIZED], "Uninitialized value written"),
])
def test_the_harness_catches_a_bad_kernel(tmp_path, case, checks, message):
    """The checks above can fail: these kernels pass their own (value) tests, but oclgrind's
    log reports them."""
    test_file = tmp_path / "test_bad_kernel.py"
    test_file.write_text(BAD_KERNEL_TEST.replace("TESTS_DIR", repr(str(TESTS))))
    log = tmp_path / "oclgrind.log"
    result = run_under_oclgrind(log, checks, [f"{test_file}::test_{case}"])
    assert result.returncode == 0, result.stdout + result.stderr  # the values are right...
    report = log.read_text()
    assert message in report, report  # ...the memory accesses are not
