"""Scales and zero points: range choice, per-channel weights, biases, uint8 conversion."""

from __future__ import annotations

import numpy as np
import pytest

from accel.numerics import requantize
from accel.quantization import (MinMaxObserver, PercentileObserver, QParams, calibrate,
                                dequantize, from_uint8, qparams_from_range, quantize,
                                quantize_bias, quantize_weights_per_channel, requant_multipliers)


def test_range_covers_the_values_and_zero_is_exact():
    q = qparams_from_range(-1.0, 3.0)
    x = np.linspace(-1.0, 3.0, 1001, dtype=np.float32)
    assert np.abs(dequantize(quantize(x, q), q) - x).max() <= q.scale / 2 + 1e-7
    assert dequantize(quantize(np.zeros(1), q), q)[0] == 0.0
    positive = qparams_from_range(0.5, 2.0)  # widened to include 0
    assert positive.zero_point == -128
    assert qparams_from_range(0.0, 0.0) == QParams(1.0, 0)
    with pytest.raises(ValueError):
        qparams_from_range(-np.inf, 1.0)
    with pytest.raises(ValueError):
        QParams(0.0, 0)
    with pytest.raises(ValueError):
        QParams(1.0, 200)


def test_uint8_models_convert_exactly():
    q8 = from_uint8(0.05, 131)
    assert q8 == QParams(0.05, 3)
    u = np.arange(256, dtype=np.int32)
    as_uint8 = (u - 131) * np.float32(0.05)
    np.testing.assert_array_equal(dequantize((u - 128).astype(np.int8), q8), as_uint8.astype(np.float32))
    with pytest.raises(ValueError):
        from_uint8(0.05, 300)


def test_per_channel_weights_are_symmetric_and_accurate():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(8, 3, 3, 5)).astype(np.float32) * np.arange(1, 9).reshape(8, 1, 1, 1)
    w[3] = 0.0
    q, scales = quantize_weights_per_channel(w)
    assert q.dtype == np.int8 and q.min() >= -127 and q.max() <= 127
    assert scales[3] == 1.0 and not q[3].any()
    for c in (0, 7):
        assert np.abs(q[c]).max() == 127
        assert np.abs(q[c] * scales[c] - w[c]).max() <= scales[c] / 2 + 1e-6
    with pytest.raises(ValueError):
        quantize_weights_per_channel(np.zeros((0, 3)))


def test_bias_and_multipliers_reproduce_a_float_layer():
    """A 1x1 'layer' in float, and the same layer through the int8 contract."""
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 2, size=(64, 16)).astype(np.float32)
    w = rng.normal(size=(4, 16)).astype(np.float32) * 0.3
    b = rng.normal(size=4).astype(np.float32)
    y = x @ w.T + b
    qx, qy = qparams_from_range(x.min(), x.max()), qparams_from_range(y.min(), y.max())
    wq, ws = quantize_weights_per_channel(w)
    bias = quantize_bias(b, qx.scale, ws)
    mult, shift = requant_multipliers(qx.scale, ws, qy.scale)
    xq = quantize(x, qx).astype(np.int64)
    acc = bias + (xq - qx.zero_point) @ wq.T.astype(np.int64)
    yq = requantize(acc, mult, shift, qy.zero_point)
    error = np.abs(dequantize(yq, qy) - y)
    assert error.max() < 4 * qy.scale  # a few LSBs of accumulated rounding
    with pytest.raises(ValueError):
        quantize_bias(np.array([1e30]), 1e-3, np.array([1e-3]))


def test_observers():
    rng = np.random.default_rng(2)
    data = [rng.normal(size=10000).astype(np.float32) for _ in range(4)]
    data[2][0] = 1000.0  # one outlier
    minmax, pct = MinMaxObserver(), PercentileObserver(99.9)
    for d in data:
        minmax.update(d)
        pct.update(d)
    assert minmax.hi == 1000.0
    q_pct = pct.qparams()
    assert q_pct.scale < minmax.qparams().scale / 50  # the outlier is ignored
    with pytest.raises(ValueError):
        MinMaxObserver().qparams()
    with pytest.raises(ValueError):
        PercentileObserver(10)


def test_calibrate_runs_every_input_and_reports_progress(capsys):
    inputs = [np.full(4, v, np.float32) for v in (-1.0, 0.5, 2.0)]
    seen = []

    def run(x):
        seen.append(x)
        return {"a": x, "b": 2 * x}

    q = calibrate(run, inputs)
    assert len(seen) == 3
    assert q["a"] == qparams_from_range(-1.0, 2.0)
    assert q["b"] == qparams_from_range(-2.0, 4.0)
    assert "calibrating: 3/3 inputs" in capsys.readouterr().err
    with pytest.raises(ValueError, match="at least one input"):
        calibrate(run, [], progress=False)
