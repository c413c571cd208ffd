"""The int8 numerics contract in numpy: the oracle every kernel is tested against.

kernels/quant.h holds the same functions in OpenCL C; keep the two line for line.
See quant.h's banner for the contract itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

INT8_MIN, INT8_MAX = -128, 127
WEIGHT_MAX = 127  # symmetric int8 weights: [-127, 127]
MULTIPLIER_MIN = 1 << 30  # normalised fixed-point multipliers lie in [2^30, 2^31)
SHIFT_MIN, SHIFT_MAX = 1, 62


def quantize_multiplier(real: float) -> tuple[int, int]:
    """(M, S) with M in [2^30, 2^31), S in [1, 62] and M * 2^-S closest to ``real``.

    Raises ValueError for a multiplier the contract cannot represent (not finite, <= 0,
    below 2^-32 or at least 2^30)."""
    real = float(real)
    if not math.isfinite(real) or real <= 0.0:
        raise ValueError(f"requantization multiplier must be a positive finite number, got {real!r}")
    mantissa, exponent = math.frexp(real)  # real = mantissa * 2^exponent, mantissa in [0.5, 1)
    multiplier = round(mantissa * (1 << 31))
    if multiplier == 1 << 31:  # rounding carried into the next power of two
        multiplier //= 2
        exponent += 1
    shift = 31 - exponent
    if not SHIFT_MIN <= shift <= SHIFT_MAX:
        raise ValueError(f"requantization multiplier {real!r} is out of range "
                         f"[2^-{SHIFT_MAX - 31}, 2^{31 - SHIFT_MIN}) (shift would be {shift})")
    return multiplier, shift


def _split_array(split, reals) -> tuple[np.ndarray, np.ndarray]:
    """``split`` (a real multiplier -> (integer multiplier, shift)) over an array."""
    pairs = [split(r) for r in np.ravel(np.asarray(reals, dtype=np.float64))]
    return (np.array([m for m, _ in pairs], dtype=np.int32),
            np.array([s for _, s in pairs], dtype=np.int32))


def _check_pairs(multipliers, shifts, bits: int, what: str) -> None:
    """ValueError unless every multiplier is in [2^(bits-1), 2^bits) and every shift in
    [SHIFT_MIN, SHIFT_MAX]."""
    m = np.asarray(multipliers, dtype=np.int64)
    s = np.asarray(shifts, dtype=np.int64)
    if m.shape != s.shape:
        raise ValueError(f"{what}s {m.shape} and shifts {s.shape} differ in shape")
    bad = (m < 1 << (bits - 1)) | (m >= 1 << bits)
    if np.any(bad):
        raise ValueError(f"{what} out of range [2^{bits - 1}, 2^{bits}): {m[bad][:4]}")
    bad = (s < SHIFT_MIN) | (s > SHIFT_MAX)
    if np.any(bad):
        raise ValueError(f"shift out of range [{SHIFT_MIN}, {SHIFT_MAX}]: {s[bad][:4]}")


def quantize_multipliers(reals) -> tuple[np.ndarray, np.ndarray]:
    """quantize_multiplier over an array: (multipliers int32, shifts int32)."""
    return _split_array(quantize_multiplier, reals)


def check_multipliers(multipliers, shifts) -> None:
    """ValueError unless every (M, S) pair is inside the contract's ranges."""
    _check_pairs(multipliers, shifts, 31, "multiplier")


def scale(value, multiplier, shift) -> np.ndarray:
    """accel_scale: round(value * multiplier / 2^shift), half up, in 64 bits."""
    product = np.asarray(value, dtype=np.int64) * np.asarray(multiplier, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    return (product + (np.int64(1) << (shift - 1))) >> shift


def clamp_i8(value, lo=INT8_MIN, hi=INT8_MAX) -> np.ndarray:
    return np.clip(value, lo, hi).astype(np.int8)


def requantize(acc, multiplier, shift, zero_point, lo=INT8_MIN, hi=INT8_MAX) -> np.ndarray:
    """accel_requantize: an int32 accumulator to int8 at the output scale."""
    return clamp_i8(scale(acc, multiplier, shift) + zero_point, lo, hi)


def requantize_add(acc, multiplier, shift, residual, residual_zero_point, residual_multiplier,
                   residual_shift, zero_point, lo=INT8_MIN, hi=INT8_MAX) -> np.ndarray:
    """accel_requantize_add: conv accumulator + residual, each rescaled, summed, clamped."""
    main = scale(acc, multiplier, shift)
    side = scale(np.asarray(residual, dtype=np.int64) - residual_zero_point,
                 residual_multiplier, residual_shift)
    return clamp_i8(main + side + zero_point, lo, hi)



# --- float32 requantization (onnxruntime's QLinearConv), opt-in for QDQ models -------------
# y = clamp(z_y + rint(float32(float32(acc) * m)), lo, hi), each rounding half to even, with
# m a float32 multiplier given as mantissa * 2^-shift (mantissa in [2^23, 2^24): the 24-bit
# significand of m; shift in [1, 62]). Emulated exactly in integers, no floating point.
F32_MANTISSA_MIN = 1 << 23


def float32_multiplier(real: float) -> tuple[int, int]:
    """(mantissa, shift) with mantissa * 2^-shift == float32(real) exactly.

    Raises ValueError for a multiplier outside the mode's range [2^-39, 2^23)."""
    real = float(real)
    if not math.isfinite(real) or real <= 0.0:
        raise ValueError(f"requantization multiplier must be a positive finite number, got {real!r}")
    single = float(np.float32(real))  # float32 rounding, half to even, as onnxruntime does
    fraction, exponent = math.frexp(single)  # fraction in [0.5, 1): exact in 24 bits
    mantissa, shift = int(fraction * (1 << 24)), 24 - exponent
    if not SHIFT_MIN <= shift <= SHIFT_MAX or single == 0.0:
        raise ValueError(f"float32 requantization multiplier {real!r} is out of range "
                         f"[2^-{SHIFT_MAX - 24 + 1}, 2^{24 - SHIFT_MIN}) (shift would be {shift})")
    return mantissa, shift


def float32_multipliers(reals) -> tuple[np.ndarray, np.ndarray]:
    """float32_multiplier over an array: (mantissas int32, shifts int32)."""
    return _split_array(float32_multiplier, reals)


def check_float32_multipliers(mantissas, shifts) -> None:
    """ValueError unless every (mantissa, shift) pair is inside the float32 mode's ranges."""
    _check_pairs(mantissas, shifts, 24, "float32 mantissa")


def bit_length64(value) -> np.ndarray:
    """accel_bit_length64: bits of |value| (0 for 0), |value| < 2^62. quant.h uses clz; here
    frexp of the float64 value, corrected where float64 rounding reached the next power of 2."""
    magnitude = np.abs(np.asarray(value, dtype=np.int64))
    length = np.frexp(magnitude.astype(np.float64))[1].astype(np.int64)
    too_long = (length > 0) & ((magnitude >> np.maximum(length - 1, 0)) == 0)
    return length - too_long


def round_shift_even(value, shift) -> np.ndarray:
    """accel_round_shift_even: value / 2^shift rounded half to even, shift in [0, 62]."""
    value = np.asarray(value, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    quotient = value >> shift
    remainder = value - (quotient << shift)
    halfway = (np.int64(1) << shift) >> 1
    up = (remainder > halfway) | ((remainder == halfway) & (halfway != 0) & ((quotient & 1) == 1))
    return quotient + up


def round_significant24(value) -> np.ndarray:
    """accel_round_significant24: value rounded half to even to 24 significant bits (what a
    float32 holds), as an integer; |value| < 2^62."""
    value = np.asarray(value, dtype=np.int64)
    excess = np.maximum(bit_length64(value) - 24, 0)
    return round_shift_even(value, excess) << excess


def requantize_f32(acc, mantissa, shift, zero_point, lo=INT8_MIN, hi=INT8_MAX) -> np.ndarray:
    """accel_requantize_f32: clamp(z + rint(float32(float32(acc) * m)), lo, hi) for the
    float32 multiplier m = mantissa * 2^-shift, rounding half to even, exactly in integers."""
    product = round_significant24(acc) * np.asarray(mantissa, dtype=np.int64)  # < 2^55
    return clamp_i8(round_shift_even(round_significant24(product), shift) + zero_point, lo, hi)


def isqrt64(value) -> np.ndarray:
    """accel_isqrt64: floor(sqrt(value)) of unsigned 64-bit values, digit by digit, 32 steps."""
    value = np.asarray(value, dtype=np.uint64).copy()
    root = np.zeros_like(value)
    bit = np.uint64(1) << np.uint64(62)
    for _ in range(32):
        trial = root + bit
        take = value >= trial
        value = np.where(take, value - trial, value)
        root = np.where(take, (root >> np.uint64(1)) + bit, root >> np.uint64(1))
        bit >>= np.uint64(2)
    return root


def inv_sqrt_q46(sum_sq) -> np.ndarray:
    """accel_inv_sqrt_q46: 2^46 / sqrt(sum_sq) as floor(2^62 / floor(sqrt(sum_sq * 2^32)))."""
    root = isqrt64(np.asarray(sum_sq, dtype=np.uint64) << np.uint64(32))
    safe_root = np.where(root == 0, np.uint64(1), root)
    return np.where(root == 0, np.uint64(0), (np.uint64(1) << np.uint64(62)) // safe_root).astype(np.int64)


def l2_normalize_q30(d, inv) -> np.ndarray:
    """accel_l2_normalize_q30: d / sqrt(sum_sq) in Q30, rounded half up."""
    product = np.asarray(d, dtype=np.int64) * np.asarray(inv, dtype=np.int64)
    return ((product + (np.int64(1) << 15)) >> 16).astype(np.int32)


@dataclass(frozen=True)
class Activation:
    """The clamp that ReLU/ReLU6 fold into, for an output with scale s and zero point z."""
    lo: int = INT8_MIN
    hi: int = INT8_MAX

    @staticmethod
    def none() -> "Activation":
        return Activation()

    @staticmethod
    def relu(zero_point: int) -> "Activation":
        return Activation(max(INT8_MIN, zero_point), INT8_MAX)

    @staticmethod
    def relu6(scale_: float, zero_point: int) -> "Activation":
        six = zero_point + round(6.0 / scale_)
        return Activation(max(INT8_MIN, zero_point), min(INT8_MAX, six))


# --- float32 Add (onnxruntime's QLinearAdd on x86, MLAS AVX2), opt-in for QDQ models ---------
# On ORT's stored values (ours + offset: 128 for uint8 tensors, 0 for int8):
# t = fma(b, ratio_b, fixed); y = fma(a, ratio_a, t); q = saturate(rint(y)), each a float32
# operation rounding half to even, with ratio_x = float32(scale_x / scale_y) and
# fixed = float32(zp_y - fma(ratio_a, zp_a, float32(ratio_b * zp_b))) (stored zero points).
# The output is q - offset, then clamp to [lo, hi].


def fma_f32(x, y, z) -> np.ndarray:
    """float32 fma(x, y, z) (one rounding, half to even) for float32 arrays (a product of two
    float32 values has at most 48 significant bits: exact in float64): the float64 sum and its exact error
    (two-sum), and where the float64 sum lies exactly halfway between two float32 values,
    the error's sign picks the side."""
    p = np.asarray(x, np.float32).astype(np.float64) * np.asarray(y, np.float32).astype(np.float64)
    z = np.asarray(z, np.float32).astype(np.float64)
    s = p + z
    z_part = s - p
    error = (p - (s - z_part)) + (z - z_part)
    nearest = s.astype(np.float32)
    below = np.where(nearest.astype(np.float64) > s, np.nextafter(nearest, np.float32(-np.inf)),
                     nearest)
    above = np.nextafter(below, np.float32(np.inf))
    halfway = s == (below.astype(np.float64) + above.astype(np.float64)) / 2
    return np.where(halfway & (error != 0), np.where(error > 0, above, below), nearest)


def add_f32_fixed_part(ratio_a, a_zero_point, ratio_b, b_zero_point, out_zero_point,
                       offset: int = 128) -> float:
    """The float32 constant of add_f32 from our int8 zero points (host side only)."""
    ratio_a, ratio_b = np.float32(ratio_a), np.float32(ratio_b)
    b_part = np.float32(ratio_b * np.float32(b_zero_point + offset))
    a_part = fma_f32(np.float32(a_zero_point + offset), ratio_a, b_part)
    return float(np.float32(np.float32(out_zero_point + offset) - a_part))


def add_f32(a, b, ratio_a, ratio_b, fixed, offset, lo=INT8_MIN, hi=INT8_MAX) -> np.ndarray:
    t = fma_f32(np.asarray(b, np.int32) + offset, ratio_b, fixed)
    y = fma_f32(np.asarray(a, np.int32) + offset, ratio_a, t)
    q = np.clip(np.rint(y), offset - 128, offset + 127).astype(np.int32)
    return clamp_i8(q - offset, lo, hi)


def dq_add_f32(a, b, a_zero_point, a_scale, b_zero_point, b_scale, y_scale, y_zero_point,
               lo=INT8_MIN, hi=INT8_MAX) -> np.ndarray:
    """quant.h's accel_dq_add_f32: onnxruntime's float Add between DequantizeLinear and
    QuantizeLinear (int8 tensors it leaves unfused), on our int8 values: each product and the
    sum rounded to float32, then rint(y / y_scale) + y_zero_point, saturated, clamped."""
    fa = ((np.asarray(a, np.int32) - a_zero_point).astype(np.float32)
          * np.float32(a_scale)).astype(np.float32)
    fb = ((np.asarray(b, np.int32) - b_zero_point).astype(np.float32)
          * np.float32(b_scale)).astype(np.float32)
    q = np.rint(((fa + fb).astype(np.float32) / np.float32(y_scale)).astype(np.float32))
    q = np.clip(q, -128 - y_zero_point, 127 - y_zero_point).astype(np.int64) + y_zero_point
    return clamp_i8(q, lo, hi)


# --- float32 division and quantization (onnxruntime's QLinearAveragePool, QDQ models) -------


def reciprocal_f32(value: float) -> np.float32:
    """float32(1 / value) correctly rounded (half to even), for a positive finite float32
    value: the exact quotient against its float32 neighbours (float64 then float32 could
    round twice)."""
    value = float(np.float32(value))
    if not math.isfinite(value) or value <= 0.0:
        raise ValueError(f"reciprocal of {value!r}: must be a positive finite number")
    exact = 1 / Fraction(value)
    guess = np.float32(float(exact))
    candidates = [np.nextafter(guess, np.float32(-np.inf)), guess,
                  np.nextafter(guess, np.float32(np.inf))]
    # Nearest; on a tie the even significand (its lowest bit clear).
    return min(candidates, key=lambda c: (abs(Fraction(float(c)) - exact),
                                          int(np.asarray(c).view(np.uint32)) & 1))


def div_f32(a, b, recip) -> np.ndarray:
    """accel_div_f32: a / b rounded to float32 by two fma refinements of a * recip; equal to
    numpy's float32 division (IEEE), which the references use."""
    a = np.asarray(a, np.float32)
    b = np.asarray(b, np.float32)
    q = (a * np.asarray(recip, np.float32)).astype(np.float32)
    r = fma_f32(-q, b, a)
    q = fma_f32(r, recip, q)
    r = fma_f32(-q, b, a)
    return fma_f32(r, recip, q)
