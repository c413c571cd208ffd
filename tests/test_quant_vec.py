"""kernels/quant_vec.h, the 16-lane requantization of every NDRange epilogue, bit-exact
against accel.numerics on every device: accel_requantize16's 32-bit path (every shift of the
block at least 32) and its 64-bit path (any shift below 32), blocks of each kind and blocks
mixing both, accumulators over the whole int32 range and near the rounding points; the same
with a residual (accel_requantize_add16); and the one-store write (accel_store16) at
unaligned addresses."""

from __future__ import annotations

import numpy as np
import pytest

from accel import kernel_source, numerics

SOURCE = """
#include "quant_vec.h"
__kernel void requantize(__global const int* acc, __global const int* m, __global const int* s,
                         __global char* out, const int offset, const int zero_point,
                         const int lo, const int hi) {
  const int i = get_global_id(0);
  accel_store16(accel_requantize16(vload16(i, acc), vload16(i, m), vload16(i, s), zero_point,
                                   lo, hi), out + offset + 16 * i);
}
__kernel void requantize_add(__global const int* acc, __global const int* m,
                             __global const int* s, __global const char* residual,
                             const int residual_zero_point, const int residual_multiplier,
                             const int residual_shift, __global char* out, const int offset,
                             const int zero_point, const int lo, const int hi) {
  const int i = get_global_id(0);
  accel_store16(accel_requantize_add16(vload16(i, acc), vload16(i, m), vload16(i, s),
                                       vload16(i, residual), residual_zero_point,
                                       residual_multiplier, residual_shift, zero_point, lo,
                                       hi), out + offset + 16 * i);
}
"""
BLOCKS = 96


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    path = tmp_path_factory.mktemp("quant_vec") / "requantize.cl"
    path.write_text(SOURCE)
    return kernel_source.load_path(path)  # quant_vec.h inlined from kernels/


def multipliers(rng, blocks: int):
    """Per-lane (M, S) from real multipliers: a quarter of the blocks all below 1/2 (shifts
    >= 32), a quarter all above (shifts < 32, down to 1), a quarter mixing both, a quarter
    below 1/2 but for a few lanes in [1/2, 1) (shift 31, the first below the 32-bit path)."""
    kind = (np.arange(blocks) % 4)[:, None]
    small = 2.0 ** rng.uniform(-32, -1.01, (blocks, 16))
    large = 2.0 ** rng.uniform(-0.99, 29.9, (blocks, 16))
    mixed = np.where(rng.random((blocks, 16)) < 0.5, small, large)
    edge = np.where(rng.random((blocks, 16)) < 0.2, rng.uniform(0.5, 0.99, (blocks, 16)), small)
    reals = np.select([kind == 0, kind == 1, kind == 2], [small, large, mixed], edge)
    m, s = numerics.quantize_multipliers(reals.ravel())
    assert s.min() <= 3 and s.max() >= 60  # both ends of the shift range
    return m, s, reals.ravel()


def accumulators(rng, reals):
    """Half anywhere in int32, half placed so that the result lands inside int8 (values near
    a rounding point included): the rounding is compared, not only the clamp."""
    anywhere = rng.integers(-2**31, 2**31, reals.size, dtype=np.int64)
    target = rng.integers(-140, 140, reals.size) + rng.choice([0.0, 0.5, 0.49999, 0.50001],
                                                              reals.size)
    near = np.clip(np.round(target / reals), -2**31, 2**31 - 1).astype(np.int64)
    return np.where(rng.random(reals.size) < 0.5, anywhere, near).astype(np.int32)


@pytest.mark.parametrize("offset", [0, 3])
def test_requantize16_both_paths(ctx, source, offset):
    rng = np.random.default_rng(1 + offset)
    m, s, reals = multipliers(rng, BLOCKS)
    acc = accumulators(rng, reals)
    zero_point, lo, hi = -7, -120, 110
    program = ctx.build(source)
    out = ctx.upload(np.full(BLOCKS * 16 + offset, 55, np.int8))
    ctx.launch(program, "requantize", [BLOCKS], ctx.upload(acc), ctx.upload(m), ctx.upload(s),
               out, np.int32(offset), np.int32(zero_point), np.int32(lo), np.int32(hi))
    got = ctx.download(out, np.int8, (BLOCKS * 16 + offset,))
    expected = numerics.requantize(acc, m, s, zero_point, lo, hi)
    assert (got[:offset] == 55).all()
    np.testing.assert_array_equal(got[offset:], expected)
    inside = (expected > lo) & (expected < hi)
    assert inside.mean() > 0.3  # not all clamped


@pytest.mark.parametrize("side_real", [0.7, 1.5, 2.0**-3, 2.0**-20],
                         ids=["side-shift31", "side-shift30", "side-shift34", "side-shift51"])
def test_requantize_add16(ctx, source, side_real):
    rng = np.random.default_rng(7)
    m, s, reals = multipliers(rng, BLOCKS)
    acc = accumulators(rng, reals)
    residual = rng.integers(-128, 128, acc.size).astype(np.int8)
    side_m, side_s = numerics.quantize_multiplier(side_real)
    residual_zero_point, zero_point, lo, hi = 9, 4, -128, 127
    program = ctx.build(source)
    out = ctx.buffer(BLOCKS * 16)
    ctx.launch(program, "requantize_add", [BLOCKS], ctx.upload(acc), ctx.upload(m),
               ctx.upload(s), ctx.upload(residual), np.int32(residual_zero_point),
               np.int32(side_m), np.int32(side_s), out, np.int32(0), np.int32(zero_point),
               np.int32(lo), np.int32(hi))
    got = ctx.download(out, np.int8, (BLOCKS * 16,))
    expected = numerics.requantize_add(acc, m, s, residual, residual_zero_point, side_m, side_s,
                                       zero_point, lo, hi)
    np.testing.assert_array_equal(got, expected)
