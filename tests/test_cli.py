"""The README's main job, ``accel demo``, end to end (as a user runs it)."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.slow
def test_demo_classifies_photos_and_times_against_onnxruntime():
    run = subprocess.run([sys.executable, "-m", "accel", "demo"], capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.count("top-5 classes") >= 3
    assert "batch-1 latency" in run.stdout and "onnxruntime fp32" in run.stdout
    assert "in our top-5 on" in run.stdout


def test_demo_with_a_bad_device_lists_what_exists():
    run = subprocess.run([sys.executable, "-m", "accel", "demo", "--device", "nope-nope"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 2
    assert "no OpenCL device matches 'nope-nope'" in run.stderr
