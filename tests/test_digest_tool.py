"""tools/test_digest.py: what a failed run's log ends with (CI keeps only part of it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

TOOL = Path(__file__).resolve().parent.parent / "tools" / "test_digest.py"

LOG = """\
........F.E
INTERNALERROR> Traceback (most recent call last):
INTERNALERROR>   File "xdist/remote.py", line 227, in run_one_test
INTERNALERROR> E             execnet.gateway_base.DumpError: strings must be utf-8 encodable
INTERNALERROR> AssertionError: ('tests/test_a.py::test_b', <WorkerController gw0>)
=========================== short test summary info ============================
FAILED tests/test_a.py::test_b - AssertionError: 1 != 2
ERROR tests/test_c.py::test_d - RuntimeError: fixture broke
FAILED tests/test_a.py::test_b - AssertionError: 1 != 2
======= 1 failed, 9 passed, 1 error in 3.10s =======
"""


def test_the_digest_names_the_host_the_failures_and_the_internal_error(tmp_path):
    log = tmp_path / "run.log"
    log.write_text(LOG)
    out = subprocess.run([sys.executable, str(TOOL), str(log), "1"], capture_output=True,
                         text=True, check=True).stdout.splitlines()
    start = out.index("===== digest of this run (exit 1) =====")
    assert out[start + 1].startswith("host: ")
    assert out[start + 2:start + 4] == [  # in order, once each
        "FAILED tests/test_a.py::test_b - AssertionError: 1 != 2",
        "ERROR tests/test_c.py::test_d - RuntimeError: fixture broke"]
    assert out[start + 4] == "pytest internal error, its last lines:"
    assert "DumpError: strings must be utf-8 encodable" in out[start + 5]
    assert "('tests/test_a.py::test_b'" in out[start + 6]
    assert out[-1] == "======= 1 failed, 9 passed, 1 error in 3.10s ======="
