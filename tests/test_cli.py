"""The README's main job, ``accel demo``, end to end (as a user runs it)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from accel import images


@pytest.mark.slow
def test_demo_classifies_the_bundled_photos_and_times_against_onnxruntime():
    # resnet50 (placeholder weights); the default, EfficientNet-Lite0 with trained weights, is
    # tested in test_efficientnet.py
    run = subprocess.run([sys.executable, "-m", "accel", "demo", "--model", "resnet50"],
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout + run.stderr
    out = run.stdout
    photos = images.bundled_photos()
    # each step is an accel command, shown as typed
    for step in ("$ accel devices", "$ accel models build resnet50", "$ accel compile",
                 "$ accel classify"):
        assert step in out
    assert "deterministic placeholders" in out  # the labels are said to be meaningless
    for photo in photos:  # every photo gets five labelled classes
        block = out.split(str(photo), 1)[1]
        assert re.match(r"\n(  \d\. \d\.\d{4}  .+ \(\d+\)\n){5}", block), block[:400]
    found = re.search(r"same top-1 on (\d+)/(\d+) photos, onnxruntime's top-1 in our top-5 on "
                      r"(\d+)/(\d+)", out)
    assert found, out
    same, n, within, _ = map(int, found.groups())
    assert n == len(photos) and within >= n - 1 and same >= n // 2
    latency = re.search(r"batch-1 latency, .*: accel int8 on (\S+) ([\d.]+) ms, onnxruntime fp32 "
                        r"([\d.]+) ms", out)
    assert latency and float(latency.group(2)) > 0 and float(latency.group(3)) > 0, out
    assert "Traceback" not in run.stderr


def test_demo_with_a_bad_device_lists_what_exists():
    run = subprocess.run([sys.executable, "-m", "accel", "demo", "--device", "nope-nope"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 2
    assert "no OpenCL device matches 'nope-nope'" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1 and run.stdout == ""
