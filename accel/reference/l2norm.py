"""numpy reference of kernels/l2norm.cl, and the float formula it approximates."""

from __future__ import annotations

import numpy as np

from .. import numerics
from ..ops.l2norm import L2NormParams


def l2norm(params: L2NormParams, x: np.ndarray) -> np.ndarray:
    """The integer formula, bit for bit what the kernel computes."""
    d = x.astype(np.int32) - params.input_zero_point
    sum_sq = (d * d).sum(axis=-1, keepdims=True)
    inv = numerics.inv_sqrt_q46(sum_sq)
    t = numerics.l2_normalize_q30(d, inv)
    multipliers, shifts = params.multipliers()
    channels = params.input_shape[3]
    act = params.activation
    return numerics.requantize(t, multipliers[:channels], shifts[:channels],
                               params.output_zero_point, act.lo, act.hi)


def l2norm_float(params: L2NormParams, x: np.ndarray) -> np.ndarray:
    """The float formula y = gamma * x / ||x||, quantized with round half up (float64)."""
    d = x.astype(np.float64) - params.input_zero_point
    norm = np.sqrt((d * d).sum(axis=-1, keepdims=True))
    gain = np.asarray(params.gamma) / params.output_scale
    y = np.divide(d * gain, norm, out=np.zeros_like(d), where=norm > 0)
    act = params.activation
    return np.clip(np.floor(y + 0.5) + params.output_zero_point, act.lo, act.hi).astype(np.int8)
