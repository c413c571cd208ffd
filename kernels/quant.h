/* ==================================================================================
 * quant.h: the int8 numerics contract, shared by every kernel (NDRange and FPGA shapes).
 *
 * accel/numerics.py implements the same functions line for line in numpy; the kernels
 * are tested bit-exact against it.
 *
 *   activations  int8, per-tensor scale s and zero point z: real = s * (q - z)
 *   weights      int8 in [-127, 127], symmetric, one scale per output channel
 *   accumulator  int32: acc = bias' + sum(x * w), with out-of-bounds taps read as z_x and
 *                bias' = bias - z_x * sum(w) folded on the host
 *   requantize   y = clamp(z_y + round(acc * M / 2^S), lo, hi) with an int32 multiplier
 *                M in [2^30, 2^31) and a right shift S in [1, 62]: the real multiplier
 *                M * 2^-S covers [2^-32, 2^30). The product is taken in 64 bits, so nothing
 *                saturates before the final clamp; rounding is half up (add 2^(S-1), shift).
 *   ReLU/ReLU6   fold into [lo, hi]: lo = z_y for ReLU.
 *   residual     accel_requantize_add: a residual Add fused into the conv epilogue.
 *   L2 norm      accel_isqrt64, accel_inv_sqrt_q46, accel_l2_normalize_q30: integer only.
 *   QDQ models   onnxruntime's float32 arithmetic, reproduced exactly: accel_requantize_f32
 *                (QLinearConv's float32 multiplier, emulated in integers), accel_add_f32
 *                (QLinearAdd), accel_div_f32 + accel_quantize_f32 (QLinearAveragePool),
 *                accel_dq_add_f32 (an Add onnxruntime leaves in float between DQ and Q).
 *   FPGA         ACCEL_FPGA selects the FPGA shape's syntax (channels, single work-item).
 * ================================================================================== */
#ifndef ACCEL_QUANT_H
#define ACCEL_QUANT_H

/* The FPGA shape of the kernels (aoc defines INTELFPGA_CL; Intel's FPGA emulator defines
 * cl_intel_channels). Everything FPGA-only sits behind this one macro. */
#if defined(INTELFPGA_CL) || defined(cl_intel_channels)
#define ACCEL_FPGA 1
#else
#define ACCEL_FPGA 0
#endif

#define ACCEL_INT8_MIN (-128)
#define ACCEL_INT8_MAX 127

/* round(value * multiplier / 2^shift), half up, in 64 bits. */
inline long accel_scale(long value, int multiplier, int shift) {
  const long product = value * (long)multiplier;
  return (product + ((long)1 << (shift - 1))) >> shift;
}

inline char accel_clamp_i8(long value, int lo, int hi) {
  return (char)clamp(value, (long)lo, (long)hi);
}

/* An int32 accumulator to int8 at the output scale. */
inline char accel_requantize(int acc, int multiplier, int shift, int zero_point, int lo, int hi) {
  return accel_clamp_i8(accel_scale(acc, multiplier, shift) + zero_point, lo, hi);
}

/* A conv accumulator plus a residual input, each rescaled to the output scale with its own
 * multiplier, then summed (residual Add fused into the conv epilogue). */
inline char accel_requantize_add(int acc, int multiplier, int shift, int residual,
                                 int residual_zero_point, int residual_multiplier,
                                 int residual_shift, int zero_point, int lo, int hi) {
  const long main = accel_scale(acc, multiplier, shift);
  const long side = accel_scale(residual - residual_zero_point, residual_multiplier, residual_shift);
  return accel_clamp_i8(main + side + zero_point, lo, hi);
}

/* Float32 requantization (onnxruntime's QLinearConv), opt-in for QDQ models:
 *   y = clamp(z_y + rint(float32(float32(acc) * m)), lo, hi), every rounding half to even,
 * for the float32 multiplier m = mantissa * 2^-shift (mantissa in [2^23, 2^24), the 24-bit
 * significand; shift in [1, 62]). Emulated exactly in integers: no floating point. */

/* Bits of |value| (0 for 0), |value| < 2^62. */
inline int accel_bit_length64(long value) {
  return 64 - (int)clz((ulong)abs(value));
}

/* value / 2^shift rounded half to even, shift in [0, 62]. */
inline long accel_round_shift_even(long value, int shift) {
  const long quotient = value >> shift;
  const long remainder = value - (quotient << shift);
  const long halfway = ((long)1 << shift) >> 1;
  const int up = remainder > halfway || (remainder == halfway && halfway != 0 && (quotient & 1) == 1);
  return quotient + up;
}

/* value rounded half to even to 24 significant bits (what a float32 holds); |value| < 2^62. */
inline long accel_round_significant24(long value) {
  const int excess = max(accel_bit_length64(value) - 24, 0);
  return accel_round_shift_even(value, excess) << excess;
}

inline char accel_requantize_f32(int acc, int mantissa, int shift, int zero_point, int lo, int hi) {
  const long product = accel_round_significant24(acc) * (long)mantissa;  /* < 2^55 */
  return accel_clamp_i8(accel_round_shift_even(accel_round_significant24(product), shift) + zero_point, lo, hi);
}

/* floor(sqrt(value)) for a 64-bit value, exact, by the digit-by-digit method. The loop
 * always runs 32 times (a fixed trip count pipelines on an FPGA). */
inline ulong accel_isqrt64(ulong value) {
  ulong root = 0;
  ulong bit = (ulong)1 << 62;
  for (int i = 0; i < 32; ++i) {
    const ulong trial = root + bit;
    const int take = value >= trial;
    value = take ? value - trial : value;
    root = take ? (root >> 1) + bit : root >> 1;
    bit >>= 2;
  }
  return root;
}

/* L2 normalisation: 2^46 / sqrt(sum_sq) for a sum of squares in [0, 2^31), as
 * floor(2^62 / floor(sqrt(sum_sq * 2^32))); 0 when sum_sq is 0. */
inline long accel_inv_sqrt_q46(int sum_sq) {
  const ulong root = accel_isqrt64((ulong)sum_sq << 32);
  return root == 0 ? 0 : (long)(((ulong)1 << 62) / root);
}

/* L2 normalisation: d / sqrt(sum_sq) as a Q30 fixed-point value (|result| < 2^30 + 2^15),
 * from d = x - z_x and inv = accel_inv_sqrt_q46(sum_sq); rounded half up. */
inline int accel_l2_normalize_q30(int d, long inv) {
  return (int)(((long)d * inv + ((long)1 << 15)) >> 16);
}

/* float32 Add (onnxruntime's QLinearAdd on x86, MLAS AVX2), opt-in for QDQ models: on ORT's
 * stored values (ours + offset: 128 for uint8 tensors, 0 for int8) t = fma(b, ratio_b, fixed),
 * y = fma(a, ratio_a, t), q = saturate(rint(y)), float32 rounding half to even; fixed:
 * numerics.add_f32_fixed_part (host). */
inline char accel_add_f32(int a, int b, float ratio_a, float ratio_b, float fixed, int offset,
                          int lo, int hi) {
  const float t = fma((float)(b + offset), ratio_b, fixed);
  const float y = fma((float)(a + offset), ratio_a, t);
  const float q = clamp(rint(y), (float)(offset - 128), (float)(offset + 127));
  return accel_clamp_i8((long)q - offset, lo, hi);
}

/* float32 a / b, correctly rounded (IEEE division), from recip = float32(1 / b) correctly
 * rounded (host: numerics.reciprocal_f32). OpenCL's `/` may be 2.5 ulp off; its fma is
 * exact. q = a * recip is refined twice: the first step makes q within 1 ulp of a / b, and
 * from such a q the second gives the correctly rounded quotient (Markstein's theorem).
 * Written as separate statements so no compiler fuses a product into an add. */
inline float accel_div_f32(float a, float b, float recip) {
  float q = a * recip;
  float r = fma(-q, b, a);
  q = fma(r, recip, q);
  r = fma(-q, b, a);
  return fma(r, recip, q);
}

/* onnxruntime's quantize_value (QLinearAveragePool): saturate(rint(y / scale + z)) on ORT's
 * stored values (z = ours + offset: 128 for uint8 tensors, 0 for int8), returned as ours,
 * then clamped to [lo, hi]. Every float32 step rounds half to even. Its numpy side is
 * accel.reference.pool.avg_pool_f32, in plain float32 (numpy's division is IEEE's). */
inline char accel_quantize_f32(float y, float scale, float scale_recip, int zero_point,
                               int offset, int lo, int hi) {
  const float quotient = accel_div_f32(y, scale, scale_recip);
  const float shifted = quotient + (float)(zero_point + offset);
  const float q = clamp(rint(shifted), (float)(offset - 128), (float)(offset + 127));
  return accel_clamp_i8((long)q - offset, lo, hi);
}

/* onnxruntime's float Add between DequantizeLinear and QuantizeLinear (the int8 QDQ tensors
 * it leaves unfused on x86), opt-in for QDQ models: y = float32(a') + float32(b') with
 * a' = float32((a - z_a) * s_a), b' likewise, then QuantizeLinear (accel_quantize_f32 with
 * the zero point added after rounding). Every product and the sum round on their own
 * (FP_CONTRACT OFF: no fma). numpy side: numerics.dq_add_f32. */
inline char accel_dq_add_f32(int a, int b, int a_zero_point, float a_scale, int b_zero_point,
                             float b_scale, float y_scale, float y_scale_recip, int y_zero_point,
                             int lo, int hi) {
#pragma OPENCL FP_CONTRACT OFF
  const float fa = (float)(a - a_zero_point) * a_scale;
  const float fb = (float)(b - b_zero_point) * b_scale;
  const float y = fa + fb;
  return accel_quantize_f32(y, y_scale, y_scale_recip, y_zero_point, -y_zero_point, lo, hi);
}

#endif /* ACCEL_QUANT_H */
