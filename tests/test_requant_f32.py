"""The float32 requantization of kernels/quant.h / accel.numerics (accel_requantize_f32,
numerics.requantize_f32): exactly numpy's float32 arithmetic, rint(float32(acc) * float32(m))
with both roundings half to even (onnxruntime's QLinearConv), on random and adversarial
values; and the OpenCL functions bit-exact against numpy on every device."""

from __future__ import annotations

import numpy as np
import pytest

from accel import kernel_source, numerics

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1


def float32_result(acc: np.ndarray, multiplier: float) -> np.ndarray:
    """What onnxruntime computes before the zero point and clamp: int64 of rint(float32)."""
    product = acc.astype(np.float32) * np.float32(multiplier)
    assert product.dtype == np.float32
    return np.rint(product).astype(np.int64)


def emulated(acc: np.ndarray, mantissa: int, shift: int) -> np.ndarray:
    """numerics.requantize_f32 before its zero point and clamp."""
    product = numerics.round_significant24(acc) * np.int64(mantissa)
    return numerics.round_shift_even(numerics.round_significant24(product), shift)


def multipliers_under_test(rng) -> list[float]:
    """Random ones over the whole range, typical QDQ ones, and exact binary fractions (which
    make rint's ties reachable)."""
    spread = np.exp(rng.uniform(np.log(2.0 ** -38), np.log(2.0 ** 22), 60))
    typical = rng.uniform(1e-4, 5e-2, 40)
    binary = [2.0 ** -k for k in (1, 2, 7, 20, 30, 38)] + [1.5 * 2.0 ** -10, 0.375, 3.0 * 2 ** -20]
    # 24-bit significand extremes.
    edges = [(2 ** 24 - 1) * 2.0 ** -30, (2 ** 23) * 2.0 ** -30, (2 ** 23 + 1) * 2.0 ** -33]
    return [float(m) for m in (*spread, *typical, *binary, *edges)]


def accumulators_under_test(rng, multiplier: float) -> np.ndarray:
    small = np.arange(-4096, 4097)  # every tie of a short product
    full = rng.integers(INT32_MIN, INT32_MAX, 8000, endpoint=True)  # |acc| > 2^24: rounded
    near24 = (1 << 24) + rng.integers(-64, 64, 1000)
    near24 = np.concatenate([near24, -near24, [INT32_MIN, INT32_MAX, 0, 1, -1]])
    medium = rng.integers(-(1 << 25), 1 << 25, 4000)
    # accumulators that land on (or next to) rint's ties k + 1/2
    halves = rng.integers(-300, 300, 2000) + 0.5
    ties = np.round(halves / np.float32(multiplier)).astype(np.int64)
    ties = np.clip(np.concatenate([ties, ties - 1, ties + 1]), INT32_MIN, INT32_MAX)
    return np.concatenate([small, full, near24, medium, ties]).astype(np.int64)


def test_float32_multiplier_is_float32_exactly():
    for real in (1.0 / 3.0, 0.1, 1e-5, 2.0 ** -39, 2.0 ** 23 * 0.999, 0.01234567891234):
        mantissa, shift = numerics.float32_multiplier(real)
        assert 1 << 23 <= mantissa < 1 << 24 and 1 <= shift <= 62
        assert mantissa * 2.0 ** -shift == float(np.float32(real))
    # rounds as float32 does (half to even), not as a truncation
    mantissa, shift = numerics.float32_multiplier(1.0 + 2.0 ** -24)  # a tie: to 1.0
    assert (mantissa, shift) == (1 << 23, 23)
    for bad in (0.0, -1.0, float("nan"), float("inf"), 2.0 ** 23, 2.0 ** -41):
        with pytest.raises(ValueError):
            numerics.float32_multiplier(bad)
    with pytest.raises(ValueError, match="mantissa"):
        numerics.check_float32_multipliers([1 << 24], [10])
    with pytest.raises(ValueError, match="shift"):
        numerics.check_float32_multipliers([1 << 23], [0])


def test_bit_length_and_rounding_helpers():
    values = np.array([0, 1, -1, 2, 3, (1 << 53) - 1, (1 << 53) + 1, (1 << 61) - 1, -(1 << 61) + 1,
                       (1 << 55) - 1, (1 << 54) + 1], dtype=np.int64)
    expected = [int(abs(int(v))).bit_length() for v in values]
    np.testing.assert_array_equal(numerics.bit_length64(values), expected)
    # half to even, both signs
    np.testing.assert_array_equal(numerics.round_shift_even([5, 7, -5, -7, 6, -6, 4], 1),
                                  [2, 4, -2, -4, 3, -3, 2])
    np.testing.assert_array_equal(numerics.round_shift_even([5, -5], 0), [5, -5])
    # 2^24 + 1 is a tie between 2^24 and 2^24 + 2: to even (2^24), like float32
    assert numerics.round_significant24((1 << 24) + 1) == float(np.float32((1 << 24) + 1))
    assert numerics.round_significant24((1 << 24) + 3) == float(np.float32((1 << 24) + 3))


def test_requantize_f32_equals_numpy_float32():
    """About 2 million (accumulator, multiplier) pairs: exactly numpy's float32 results."""
    rng = np.random.default_rng(2024)
    count = 0
    for multiplier in multipliers_under_test(rng):
        mantissa, shift = numerics.float32_multiplier(multiplier)
        acc = accumulators_under_test(rng, multiplier)
        expected = float32_result(acc, multiplier)
        got = emulated(acc, mantissa, shift)
        mismatch = np.flatnonzero(got != expected)
        assert mismatch.size == 0, (f"m={multiplier!r}: acc {acc[mismatch[:4]]} gives "
                                    f"{got[mismatch[:4]]}, float32 {expected[mismatch[:4]]}")
        # and through the zero point and clamp
        zero_point, lo, hi = int(rng.integers(-128, 128)), -100, 120
        np.testing.assert_array_equal(
            numerics.requantize_f32(acc, mantissa, shift, zero_point, lo, hi),
            np.clip(expected + zero_point, lo, hi).astype(np.int8))
        count += acc.size
    assert count > 2_000_000


HELPER_KERNEL = """
__kernel void requantize_f32_test(__global const int* acc, __global const int* mantissa,
                                  __global const int* shift, __global char* out,
                                  __global long* raw, const int zero_point, const int lo,
                                  const int hi) {
  const int i = get_global_id(0);
  out[i] = accel_requantize_f32(acc[i], mantissa[i], shift[i], zero_point, lo, hi);
  raw[i] = accel_round_shift_even(
      accel_round_significant24(accel_round_significant24(acc[i]) * (long)mantissa[i]), shift[i]);
}
"""


def test_quant_h_requantize_f32_matches_numerics(ctx):
    rng = np.random.default_rng(7)
    acc_parts, mantissas, shifts = [], [], []
    for multiplier in multipliers_under_test(rng)[::3]:
        mantissa, shift = numerics.float32_multiplier(multiplier)
        acc = accumulators_under_test(rng, multiplier)[::4]
        acc_parts.append(acc)
        mantissas.append(np.full(acc.size, mantissa))
        shifts.append(np.full(acc.size, shift))
    acc = np.concatenate(acc_parts).astype(np.int32)
    mantissa = np.concatenate(mantissas).astype(np.int32)
    shift = np.concatenate(shifts).astype(np.int32)
    program = ctx.build(kernel_source.load("quant.h") + HELPER_KERNEL)
    out, raw = ctx.buffer(acc.size), ctx.buffer(acc.size * 8)
    zero_point, lo, hi = 3, -120, 127
    ctx.launch(program, "requantize_f32_test", (acc.size,), ctx.upload(acc), ctx.upload(mantissa),
               ctx.upload(shift), out, raw, np.int32(zero_point), np.int32(lo), np.int32(hi))
    np.testing.assert_array_equal(ctx.download(raw, np.int64, acc.shape),
                                  emulated(acc.astype(np.int64), mantissa, shift))
    np.testing.assert_array_equal(ctx.download(out, np.int8, acc.shape),
                                  numerics.requantize_f32(acc, mantissa, shift, zero_point, lo, hi))


VECTOR_KERNEL = """
__kernel void requantize_f32_16_test(__global const int* acc, __global const int* mantissa,
                                     __global const int* shift, __global char* out,
                                     const int zero_point, const int lo, const int hi) {
  const int i = get_global_id(0);
  vstore16(accel_requantize_f32_16(vload16(i, acc), vload16(i, mantissa), vload16(i, shift),
                                   zero_point, lo, hi), i, out);
}
"""


@pytest.mark.parametrize("zero_point, lo, hi", [(3, -120, 127), (-128, -128, 127), (100, 100, 127)])
def test_quant_vec_h_float_requantize_matches_the_integer_emulation(ctx, zero_point, lo, hi):
    """quant_vec.h's float32 form (the NDRange kernels' epilogue) against numerics'
    integer emulation on the adversarial values above, 16 lanes of mixed multipliers."""
    rng = np.random.default_rng(11)
    acc_parts, mantissas, shifts = [], [], []
    for multiplier in multipliers_under_test(rng):
        mantissa, shift = numerics.float32_multiplier(multiplier)
        acc = accumulators_under_test(rng, multiplier)[::3]
        acc_parts.append(acc)
        mantissas.append(np.full(acc.size, mantissa))
        shifts.append(np.full(acc.size, shift))
    order = rng.permutation(sum(part.size for part in acc_parts))  # mix multipliers per vector
    count = order.size - order.size % 16
    acc = np.concatenate(acc_parts).astype(np.int32)[order][:count]
    mantissa = np.concatenate(mantissas).astype(np.int32)[order][:count]
    shift = np.concatenate(shifts).astype(np.int32)[order][:count]
    program = ctx.build(kernel_source.load("quant_vec.h") + VECTOR_KERNEL)
    out = ctx.buffer(count)
    ctx.launch(program, "requantize_f32_16_test", (count // 16,), ctx.upload(acc),
               ctx.upload(mantissa), ctx.upload(shift), out, np.int32(zero_point), np.int32(lo),
               np.int32(hi))
    expected = numerics.requantize_f32(acc, mantissa, shift, zero_point, lo, hi)
    got = ctx.download(out, np.int8, acc.shape)
    mismatch = np.flatnonzero(got != expected)
    assert mismatch.size == 0, (f"acc {acc[mismatch[:4]]} m {mantissa[mismatch[:4]]} "
                                f"s {shift[mismatch[:4]]}: {got[mismatch[:4]]} != "
                                f"{expected[mismatch[:4]]}")
