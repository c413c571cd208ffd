"""Accuracy that means something: a network trained here on scikit-learn's digits keeps its
test accuracy within 1 point after int8 compilation."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

import accel

digits_net = pytest.importorskip("digits_net", reason="tests/digits_net.py needs scikit-learn")


@pytest.fixture(scope="module")
def trained():
    net = digits_net.train()
    return net, digits_net.load_data()


@pytest.mark.slow
def test_int8_compilation_keeps_digits_accuracy(trained):
    net, (x_train, _, x_test, y_test) = trained
    model = digits_net.to_onnx(net, batch=1)
    session = ort.InferenceSession(model.SerializeToString())
    fp32 = np.array([session.run(None, {"input": x[None]})[0][0].argmax() for x in x_test])
    fp32_accuracy = float((fp32 == y_test).mean())
    assert fp32_accuracy > 0.9, "the network did not train"

    calibration = [x[None] for x in x_train[:64]]
    compiled = accel.compile(model, calibration=calibration)
    output = compiled.outputs[0].name
    int8 = np.array([compiled.run(x[None])[output][0].argmax() for x in x_test])
    int8_accuracy = float((int8 == y_test).mean())
    print(f"digits test accuracy: fp32 {fp32_accuracy:.4f}, int8 {int8_accuracy:.4f} "
          f"on {compiled.device.short_name}")
    assert int8_accuracy >= fp32_accuracy - 0.01
