"""numpy reference of kernels/pool.cl on logical (N, H, W, C) int8 arrays.

Written tap by tap over a padded copy with a validity mask, independently of the kernel's
window clipping, so the two agree only if both are right."""

from __future__ import annotations

import numpy as np

from .. import numerics
from ..ops.pool import GlobalAvgPoolParams, PoolParams


def _taps(params: PoolParams, x: np.ndarray):
    """Yield (values, in_bounds, counted) per kernel tap, each shaped (N, OH, OW, C) or
    (1, OH, OW, 1): the tap's input values, whether it lies inside the input, and whether
    it counts towards an average's divisor."""
    n, h, w, c = params.input_shape
    _, oh, ow, _ = params.output_shape
    (kh, kw), (sh, sw), (pt, pl, pb, pr) = params.kernel, params.stride, params.pads
    # Room for every window, ceil_mode ones included, around the input.
    rows = max(h + pt, (oh - 1) * sh + kh)
    cols = max(w + pl, (ow - 1) * sw + kw)
    padded = np.zeros((n, rows, cols, c), dtype=np.int32)
    padded[:, pt:pt + h, pl:pl + w, :] = x
    inside = np.zeros((1, rows, cols, 1), dtype=bool)
    inside[:, pt:pt + h, pl:pl + w, :] = True
    counted = inside.copy()
    if params.count_include_pad:
        counted[:, :pt + h + pb, :pl + w + pr, :] = True
    for ky in range(kh):
        for kx in range(kw):
            window = (slice(None), slice(ky, ky + (oh - 1) * sh + 1, sh),
                      slice(kx, kx + (ow - 1) * sw + 1, sw), slice(None))
            yield padded[window], inside[window], counted[window]


def max_pool(params: PoolParams, x: np.ndarray) -> np.ndarray:
    best = np.full(params.output_shape, numerics.INT8_MIN, dtype=np.int32)
    for values, inside, _ in _taps(params, x):
        best = np.where(inside, np.maximum(best, values), best)
    multipliers, shifts = params.multiplier_table()
    act = params.activation
    return numerics.requantize(best - params.input_zero_point, multipliers[0], shifts[0],
                               params.output_zero_point, act.lo, act.hi)


def avg_pool_f32(params: PoolParams, x: np.ndarray) -> np.ndarray:
    """onnxruntime's QLinearAveragePool as its C++ reads: dequantize each in-bounds tap in
    float32, sum in row order from 0, divide by the count, then nearbyint(y / s_y + z_y) on
    ORT's stored values, all in numpy float32 (IEEE division)."""
    f32 = np.float32
    total = np.zeros(params.output_shape, dtype=f32)
    count = np.zeros((1,) + params.output_shape[1:3] + (1,), dtype=np.int32)
    for values, inside, counted in _taps(params, x):
        dequantized = f32(params.input_scale) * (values - params.input_zero_point).astype(f32)
        total = np.where(inside, (total + dequantized).astype(f32), total)
        count += counted
    mean = (total / count.astype(f32)).astype(f32)
    offset = params.storage_offset
    shifted = (mean / f32(params.output_scale)).astype(f32) + f32(params.output_zero_point + offset)
    stored = np.clip(np.rint(shifted.astype(f32)), offset - 128, offset + 127).astype(np.int32)
    act = params.activation
    return numerics.clamp_i8(stored - offset, act.lo, act.hi)


def avg_pool(params: PoolParams, x: np.ndarray) -> np.ndarray:
    if params.requant == "float32":
        return avg_pool_f32(params, x)
    n, oh, ow, c = params.output_shape
    acc = np.zeros((n, oh, ow, c), dtype=np.int32)
    count = np.zeros((1, oh, ow, 1), dtype=np.int32)
    for values, inside, counted in _taps(params, x):
        acc += np.where(inside, values - params.input_zero_point, 0)
        count += counted
    multipliers, shifts = params.multiplier_table()
    act = params.activation
    return numerics.requantize(acc, multipliers[count], shifts[count], params.output_zero_point,
                               act.lo, act.hi)


def global_avg_pool(params: GlobalAvgPoolParams, x: np.ndarray) -> np.ndarray:
    acc = (x.astype(np.int32) - params.input_zero_point).sum(axis=(1, 2), keepdims=True)
    multiplier, shift = params.multiplier()
    act = params.activation
    requantize = numerics.requantize_f32 if params.requant == "float32" else numerics.requantize
    return requantize(acc, multiplier, shift, params.output_zero_point, act.lo, act.hi)


def pool2d(params: PoolParams | GlobalAvgPoolParams, x: np.ndarray) -> np.ndarray:
    if isinstance(params, GlobalAvgPoolParams):
        return global_avg_pool(params, x)
    return max_pool(params, x) if params.kind == "max" else avg_pool(params, x)
