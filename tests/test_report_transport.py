"""The suite's reports reach pytest-xdist's controller whatever text a failure quotes
(tests/conftest.py pytest_report_to_serializable)."""

from __future__ import annotations

import execnet
import pytest


def test_a_failure_quoting_lone_surrogates_is_sent_escaped(request):
    report = pytest.TestReport(
        nodeid="tests/test_x.py::test_y", location=("tests/test_x.py", 1, "test_y"),
        keywords={"test_y": 1}, outcome="failed", longrepr="E   assert 'bad \udcff text'",
        when="call", sections=[("Captured stdout call", "out \udc80")])
    with pytest.raises(execnet.DataFormatError):  # what pytest-xdist would have to send
        execnet.dumps(report.longrepr)
    data = request.config.hook.pytest_report_to_serializable(config=request.config,
                                                             report=report)
    execnet.dumps(data)  # no DumpError: the worker would go on
    assert data["longrepr"] == "E   assert 'bad \\udcff text'"
    assert data["sections"] == [("Captured stdout call", "out \\udc80")]
    assert data["nodeid"] == report.nodeid and data["outcome"] == "failed"
