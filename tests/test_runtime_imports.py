"""A process that loads and runs a saved model (or serves it) does not import the compiler:
no onnx, no accel.compiler front end, no TensorFlow."""

from __future__ import annotations

import json
import subprocess
import sys

from registry_model import compile_tiny

CHECK = """
import io, json, sys
import numpy as np
from PIL import Image
import accel
model = accel.load(sys.argv[1])
out = model.run(np.zeros((1, 3, 32, 32), np.float32))
buffer = io.BytesIO()
Image.new("RGB", (40, 30), (200, 20, 20)).save(buffer, format="JPEG")
top = accel.Classifier(model).classify(buffer.getvalue(), top=1)[0][0]
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("onnx", "tensorflow", "torch")
               or m.startswith(("accel.compiler.frontend", "accel.compiler.passes"))
               or m in ("accel.backend.api", "accel.backend.quantize", "accel.backend.lower",
                        "accel.backend.op_lowering", "accel.backend.partition",
                        "accel.backend.placement"))
print(json.dumps({"heavy": heavy, "outputs": sorted(out), "label": top.label}))
"""


def test_loading_and_running_a_saved_model_imports_no_compiler(tmp_path):
    artifact, _, _ = compile_tiny(tmp_path)
    run = subprocess.run([sys.executable, "-c", CHECK, str(artifact)], capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["outputs"] == ["probabilities"] and result["label"]
    assert result["heavy"] == [], result["heavy"]


def test_compile_is_still_there_on_first_use():
    code = "import accel, sys; f = accel.compile; print(f.__module__, 'onnx' in sys.modules)"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["accel.backend.api", "True"]
