"""kernels/quant_vec.h, the 16-lane requantization of every NDRange epilogue, bit-exact
against accel.numerics on every device: accel_requantize16's 32-bit path (every shift of the
block at least 32) and its 64-bit path (any shift below 32), blocks of each kind and blocks
mixing both, accumulators over the whole int32 range and near the rounding points; the same
with a residual (accel_requantize_add16); and the one-store write (accel_store16) at
unaligned addresses. The 32-bit path at the contract's ends: shifts 32 and 62, multipliers
2^30 and 2^31 - 1, int32's extreme accumulators and exact rounding ties.

Every case is small and marked oclgrind: tests/test_oclgrind.py runs them again under
Oclgrind, whose integer clamp/min/max with scalar bounds is wrong (quant_vec.h splats them);
the 32-bit path once failed there only."""

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
pytestmark = pytest.mark.oclgrind


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


def edge_lanes():
    """(acc, M, S) lanes at the ends of the 32-bit path: for shifts 32, 33, 47, 61, 62 and
    multipliers 2^30, 3 * 2^29, 2^31 - 2^20 and 2^31 - 1, int32's extremes, 0, +-1, and the
    accumulators whose product lands exactly half way between two results (acc * M an odd
    multiple of 2^(S-1): acc = u * 2^(S-1-t) for odd u, t the multiplier's trailing zero bits,
    wherever that fits int32) with their neighbours +-1."""
    lanes = []
    for m in (1 << 30, 3 << 29, (1 << 31) - (1 << 20), (1 << 31) - 1):
        t = (m & -m).bit_length() - 1
        for s in (32, 33, 47, 61, 62):
            values = {-2**31, 2**31 - 1, 0, 1, -1}
            if s - 1 - t <= 31:
                for u in (1, -1, 3, -3, 5, -7):
                    tie = u * (1 << (s - 1 - t))
                    values |= {tie - 1, tie, tie + 1}
            lanes += [(a, m, s) for a in sorted(values) if -2**31 <= a < 2**31]
    acc, m, s = (np.array(v, dtype=np.int32) for v in zip(*lanes))
    return acc, m, s


@pytest.mark.parametrize("zero_point, lo, hi", [(0, -128, 127), (100, -128, 127),
                                                (-100, -128, 127), (-2, -5, 20)],
                         ids=["zero-point-0", "zero-point-100", "zero-point--100", "narrow"])
def test_requantize16_edges(ctx, source, zero_point, lo, hi):
    """The edge lanes twice: in blocks of 16 whose shifts are all >= 32 (the 32-bit path) and
    in blocks whose last lane has shift 31 (the 64-bit path for the other 15)."""
    acc, m, s = edge_lanes()
    rows = -(-acc.size // 15)
    pad = rows * 15 - acc.size
    acc, m, s = (np.concatenate([v, v[:pad]]).reshape(rows, 15) for v in (acc, m, s))
    fast = [np.concatenate([v, v[:, :1]], axis=1) for v in (acc, m, s)]
    slow = [np.concatenate([acc, acc[:, :1]], axis=1),
            np.concatenate([m, np.full((rows, 1), 1 << 30, np.int32)], axis=1),
            np.concatenate([s, np.full((rows, 1), 31, np.int32)], axis=1)]
    acc, m, s = (np.concatenate([f, w]).ravel() for f, w in zip(fast, slow))
    path_32 = (s.reshape(-1, 16) >= 32).all(axis=1)
    assert (path_32 == (np.arange(2 * rows) < rows)).all()  # the first half, only
    blocks = acc.size // 16
    program = ctx.build(source)
    out = ctx.buffer(acc.size)
    ctx.launch(program, "requantize", [blocks], ctx.upload(acc), ctx.upload(m), ctx.upload(s),
               out, np.int32(0), np.int32(zero_point), np.int32(lo), np.int32(hi))
    got = ctx.download(out, np.int8, (acc.size,))
    expected = numerics.requantize(acc, m, s, zero_point, lo, hi)
    np.testing.assert_array_equal(got, expected)
    assert ((expected > lo) & (expected < hi)).mean() > 0.3  # the rounding compared, not the clamp


@pytest.mark.parametrize("residual_shift", [32, 62])
def test_requantize_add16_edges(ctx, source, residual_shift):
    """accel_requantize_add16's 32-bit path (both terms) at the same ends, with the residual
    at int8's ends and its multiplier at 2^31 - 1."""
    acc, m, s = edge_lanes()
    blocks = acc.size // 16
    acc, m, s = acc[:blocks * 16], m[:blocks * 16], s[:blocks * 16]
    rng = np.random.default_rng(3)
    residual = rng.choice(np.array([-128, 127, -127, 0, 1], np.int8), acc.size)
    residual_zero_point, residual_multiplier, zero_point = 127, (1 << 31) - 1, -3
    program = ctx.build(source)
    out = ctx.buffer(acc.size)
    ctx.launch(program, "requantize_add", [blocks], ctx.upload(acc), ctx.upload(m),
               ctx.upload(s), ctx.upload(residual), np.int32(residual_zero_point),
               np.int32(residual_multiplier), np.int32(residual_shift), out, np.int32(0),
               np.int32(zero_point), np.int32(-128), np.int32(127))
    got = ctx.download(out, np.int8, (acc.size,))
    expected = numerics.requantize_add(acc, m, s, residual, residual_zero_point,
                                       residual_multiplier, residual_shift, zero_point)
    np.testing.assert_array_equal(got, expected)
    assert ((expected > -128) & (expected < 127)).mean() > 0.3
