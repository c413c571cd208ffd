/* ==================================================================================
 * l2norm.cl: L2 normalisation across channels with a learned per-channel scale (SSD-VGG300's
 * conv4_3_norm), int8 NHWC in and out, integer-only so every device agrees bit for bit.
 *
 * Float formula: y[c] = gamma[c] * x[c] / sqrt(sum_c x[c]^2), with x, y real values. With
 * d = x_q - z_x the input scale cancels, so in output LSBs y_q[c] = z_y + g[c] * d[c] / sqrt(ss),
 * g[c] = gamma[c] / s_y and ss = sum over the logical channels of d^2 (an int32). Here:
 *   inv  = accel_inv_sqrt_q46(ss)          = floor(2^62 / isqrt(ss * 2^32))  ~ 2^46 / sqrt(ss)
 *   t[c] = accel_l2_normalize_q30(d, inv)  = round(d * inv / 2^16)           ~ 2^30 d / sqrt(ss)
 *   y[c] = accel_requantize(t[c], M[c], S[c], z_y, lo, hi), M[c] * 2^-S[c] = g[c] * 2^-30
 * ss = 0 gives y = z_y (the float form x / max(||x||, eps) agrees for any eps below the
 * input scale, since ||x|| >= s_x whenever ss > 0). The host encodes |g[c]| < 1/4 (which always rounds to 0) as
 * 2^30 * 2^-62, and uses that for padded channels too. A negative gamma is a negative
 * M[c] in (-2^31, -2^30]: the 64-bit product and the half-up rounding work the same.
 * Precision: isqrt loses < 1 of >= 2^16 sqrt(ss), so t is 2^30 d / sqrt(ss) within a
 * relative 2^-16 / sqrt(ss) plus 0.51; before the final rounding y is then within 2^-7 LSB
 * of the float value for every output that does not saturate, so the result is the float
 * formula rounded half up, or 1 LSB off when that value lies within 2^-7 of a half
 * (tests/test_kernel_l2norm.py measures it: <= 1 LSB, on ~2e-6 of random outputs).
 *
 * One work-item per pixel: global size (N * H * W). The sum runs over the logical channels
 * only, so the padded channels' contents never matter.
 * ================================================================================== */
#include "quant.h"

/* Channels per step of the inner loops; must divide 16. */
#ifndef VEC
#define VEC 1
#endif
#include "vec_check.h"

__kernel void l2norm_i8(__global const char* restrict in, __global char* restrict out,
                        const int channels, const int padded_channels,
                        const int in_zero_point,
                        __global const int* restrict multipliers,
                        __global const int* restrict shifts,
                        const int out_zero_point, const int lo, const int hi) {
  const long base = (long)get_global_id(0) * padded_channels;
  const __global char* src = in + base;
  __global char* dst = out + base;

  int sum_sq = 0;
  for (int c0 = 0; c0 < padded_channels; c0 += VEC) {
#pragma unroll
    for (int v = 0; v < VEC; ++v) {
      const int d = c0 + v < channels ? src[c0 + v] - in_zero_point : 0;
      sum_sq += d * d;
    }
  }
  const long inv = accel_inv_sqrt_q46(sum_sq);
  for (int c0 = 0; c0 < padded_channels; c0 += VEC) {
#pragma unroll
    for (int v = 0; v < VEC; ++v) {
      const int c = c0 + v;
      const int d = c < channels ? src[c] - in_zero_point : 0;
      const int t = accel_l2_normalize_q30(d, inv);
      dst[c] = accel_requantize(t, multipliers[c], shifts[c], out_zero_point, lo, hi);
    }
  }
}
