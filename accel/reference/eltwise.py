"""numpy reference of kernels/eltwise.cl's add_i8 / add_f32_i8 / add_dq_f32_i8 on logical int8
arrays."""

from __future__ import annotations

import numpy as np

from .. import numerics
from ..ops.eltwise import AddParams


def add(params: AddParams, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    act = params.activation
    if params.requant == "float32_dq":
        a_scale, b_scale, y_scale, _ = params.dq_scales()
        return numerics.dq_add_f32(a, b, params.a_zero_point, a_scale, params.b_zero_point,
                                   b_scale, y_scale, params.output_zero_point, act.lo, act.hi)
    if params.requant == "float32":
        ratio_a, ratio_b, fixed = params.float32_constants()
        return numerics.add_f32(a, b, ratio_a, ratio_b, fixed, params.storage_offset,
                                act.lo, act.hi)
    (ma, sa), (mb, sb) = params.multipliers()
    return numerics.requantize_add(a.astype(np.int32) - params.a_zero_point, ma, sa,
                                   b, params.b_zero_point, mb, sb,
                                   params.output_zero_point, act.lo, act.hi)
