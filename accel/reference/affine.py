"""numpy reference of kernels/affine.cl's affine_i8 on logical int8 NHWC arrays."""

from __future__ import annotations

import numpy as np

from .. import numerics
from ..ops.affine import AffineParams


def affine(params: AffineParams, x: np.ndarray) -> np.ndarray:
    acc = (x.astype(np.int64) - params.input_zero_point) * params.weights.astype(np.int64) \
        + params.bias.astype(np.int64)
    # The kernel computes acc in int32 (wraps); |x - z| <= 255 and |w| <= 127 keep the
    # product small, so only an extreme bias could wrap: mirror it anyway.
    acc = ((acc + (1 << 31)) % (1 << 32) - (1 << 31)).astype(np.int32)
    act = params.activation
    return numerics.requantize(acc, params.multipliers, params.shifts,
                               params.output_zero_point, act.lo, act.hi)
