/* ==================================================================================
 * pool.cl: int8 pooling on NHWC activations, channels padded to a multiple of 16.
 *
 * max_pool_i8      max over the in-bounds taps of each window (out-of-bounds taps are
 *                  ignored), then y = requantize(max - z_x, M, S, z_y) so the output may
 *                  have its own scale and zero point (M = 2^30, S = 30 is the identity).
 * avg_pool_i8      acc = sum of (x - z_x) over the in-bounds taps (padding counts as z_x),
 *                  y = requantize(acc, M[n], S[n], z_y) where n is the window's divisor and
 *                  (M[n], S[n]) encodes in_scale / (out_scale * n), one table entry per
 *                  possible divisor, computed on the host. The divisor counts the taps
 *                  inside [count_h0, count_h1) x [count_w0, count_w1): the input itself
 *                  (count_include_pad = 0) or the input plus its pads (= 1).
 * global_avg_pool_i8  the same over the whole H x W plane with one (M, S) for 1/(H*W);
 *                  with requant_f32 = 1 (QDQ models: onnxruntime's QLinearGlobalAveragePool)
 *                  (M, S) is a float32 multiplier for quant.h's accel_requantize_f32.
 * avg_pool_f32_i8  (AVG_F32=1 only) the average in onnxruntime's float32 arithmetic
 *                  (QLinearAveragePool, for QDQ models): sum = the in-bounds taps'
 *                  dequantized values float32(s_x * (x - z_x)), added in row order from 0,
 *                  looked up in a 256-entry table (so no product is ever fused into an add);
 *                  then y = sum / n (n as above), q = quant.h's accel_quantize_f32(y, s_y).
 *                  Divisions use host reciprocals, correctly rounded like IEEE's.
 *
 * One work-item computes VEC adjacent channels of one output pixel in every image of the
 * batch: global size (C_in_padded / VEC, OW, OH). (Not N * OH split by / and %: LLVM then
 * emits a `freeze`, which oclgrind's uninitialised-value checker cannot run.) The output
 * may be a channel slice of a wider tensor (out_channel_stride, out_channel_offset), so a
 * following Concat is free.
 * ================================================================================== */
#include "quant.h"

/* Channels per work-item; must divide 16. */
#ifndef VEC
#define VEC 16
#endif
#include "vec_check.h"

/* 1: also build avg_pool_f32_i8 (float32; off by default, the fixed-point contract). */
#ifndef AVG_F32
#define AVG_F32 0
#endif
#if AVG_F32 != 0 && AVG_F32 != 1
#error "AVG_F32 must be 0 or 1"
#endif

__kernel void max_pool_i8(__global const char* restrict in, __global char* restrict out,
                          const int batch, const int height, const int width, const int channels,
                          const int out_height, const int out_width,
                          const int out_channel_stride, const int out_channel_offset,
                          const int kernel_h, const int kernel_w,
                          const int stride_h, const int stride_w,
                          const int pad_top, const int pad_left,
                          const int in_zero_point, const int multiplier, const int shift,
                          const int out_zero_point, const int lo, const int hi) {
  const int c0 = get_global_id(0) * VEC;
  const int ox = get_global_id(1);
  const int oy = get_global_id(2);
  const int y0 = oy * stride_h - pad_top;
  const int x0 = ox * stride_w - pad_left;
  /* Clip the window to the input once; the host guarantees it is never empty. */
  const int ky0 = max(0, -y0), ky1 = min(kernel_h, height - y0);
  const int kx0 = max(0, -x0), kx1 = min(kernel_w, width - x0);

  for (int n = 0; n < batch; ++n) {
    int best[VEC];
#pragma unroll
    for (int v = 0; v < VEC; ++v) best[v] = ACCEL_INT8_MIN;
    for (int ky = ky0; ky < ky1; ++ky) {
      for (int kx = kx0; kx < kx1; ++kx) {
        const __global char* px = in + ((long)(n * height + y0 + ky) * width + x0 + kx) * channels + c0;
#pragma unroll
        for (int v = 0; v < VEC; ++v) best[v] = max(best[v], (int)px[v]);
      }
    }
    __global char* dst = out + ((long)(n * out_height + oy) * out_width + ox) * out_channel_stride
                         + out_channel_offset + c0;
#pragma unroll
    for (int v = 0; v < VEC; ++v)
      dst[v] = accel_requantize(best[v] - in_zero_point, multiplier, shift, out_zero_point, lo, hi);
  }
}

/* An average's divisor: the taps of the window at (y0, x0) inside the counted region. */
inline int avg_divisor(int y0, int x0, int kernel_h, int kernel_w, int count_h0, int count_h1,
                       int count_w0, int count_w1) {
  return (min(y0 + kernel_h, count_h1) - max(y0, count_h0)) *
         (min(x0 + kernel_w, count_w1) - max(x0, count_w0));
}

__kernel void avg_pool_i8(__global const char* restrict in, __global char* restrict out,
                          const int batch, const int height, const int width, const int channels,
                          const int out_height, const int out_width,
                          const int out_channel_stride, const int out_channel_offset,
                          const int kernel_h, const int kernel_w,
                          const int stride_h, const int stride_w,
                          const int pad_top, const int pad_left,
                          const int count_h0, const int count_h1,
                          const int count_w0, const int count_w1,
                          const int in_zero_point,
                          __global const int* restrict multipliers,
                          __global const int* restrict shifts,
                          const int out_zero_point, const int lo, const int hi) {
  const int c0 = get_global_id(0) * VEC;
  const int ox = get_global_id(1);
  const int oy = get_global_id(2);
  const int y0 = oy * stride_h - pad_top;
  const int x0 = ox * stride_w - pad_left;
  const int ky0 = max(0, -y0), ky1 = min(kernel_h, height - y0);
  const int kx0 = max(0, -x0), kx1 = min(kernel_w, width - x0);
  const int count = avg_divisor(y0, x0, kernel_h, kernel_w, count_h0, count_h1, count_w0, count_w1);

  const int multiplier = multipliers[count];
  const int shift = shifts[count];

  for (int n = 0; n < batch; ++n) {
    int acc[VEC];
#pragma unroll
    for (int v = 0; v < VEC; ++v) acc[v] = 0;
    for (int ky = ky0; ky < ky1; ++ky) {
      for (int kx = kx0; kx < kx1; ++kx) {
        const __global char* px = in + ((long)(n * height + y0 + ky) * width + x0 + kx) * channels + c0;
#pragma unroll
        for (int v = 0; v < VEC; ++v) acc[v] += px[v] - in_zero_point;
      }
    }
    __global char* dst = out + ((long)(n * out_height + oy) * out_width + ox) * out_channel_stride
                         + out_channel_offset + c0;
#pragma unroll
    for (int v = 0; v < VEC; ++v)
      dst[v] = accel_requantize(acc[v], multiplier, shift, out_zero_point, lo, hi);
  }
}

#if AVG_F32
__kernel void avg_pool_f32_i8(__global const char* restrict in, __global char* restrict out,
                              const int batch, const int height, const int width,
                              const int channels, const int out_height, const int out_width,
                              const int out_channel_stride, const int out_channel_offset,
                              const int kernel_h, const int kernel_w,
                              const int stride_h, const int stride_w,
                              const int pad_top, const int pad_left,
                              const int count_h0, const int count_h1,
                              const int count_w0, const int count_w1,
                              __global const float* restrict dequantized,
                              __global const float* restrict count_reciprocals,
                              const float out_scale, const float out_scale_reciprocal,
                              const int out_zero_point, const int offset,
                              const int lo, const int hi) {
  const int c0 = get_global_id(0) * VEC;
  const int ox = get_global_id(1);
  const int oy = get_global_id(2);
  const int y0 = oy * stride_h - pad_top;
  const int x0 = ox * stride_w - pad_left;
  const int ky0 = max(0, -y0), ky1 = min(kernel_h, height - y0);
  const int kx0 = max(0, -x0), kx1 = min(kernel_w, width - x0);
  const int count = avg_divisor(y0, x0, kernel_h, kernel_w, count_h0, count_h1, count_w0, count_w1);
  const float divisor = (float)count;
  const float divisor_reciprocal = count_reciprocals[count];

  for (int n = 0; n < batch; ++n) {
    float sum[VEC];
#pragma unroll
    for (int v = 0; v < VEC; ++v) sum[v] = 0.0f;
    for (int ky = ky0; ky < ky1; ++ky) {
      for (int kx = kx0; kx < kx1; ++kx) {
        const __global char* px = in + ((long)(n * height + y0 + ky) * width + x0 + kx) * channels + c0;
#pragma unroll
        for (int v = 0; v < VEC; ++v) sum[v] += dequantized[px[v] - ACCEL_INT8_MIN];
      }
    }
    __global char* dst = out + ((long)(n * out_height + oy) * out_width + ox) * out_channel_stride
                         + out_channel_offset + c0;
#pragma unroll
    for (int v = 0; v < VEC; ++v) {
      const float mean = accel_div_f32(sum[v], divisor, divisor_reciprocal);
      dst[v] = accel_quantize_f32(mean, out_scale, out_scale_reciprocal, out_zero_point, offset,
                                  lo, hi);
    }
  }
}
#endif

/* Global size (C_in_padded / VEC, N). */
__kernel void global_avg_pool_i8(__global const char* restrict in, __global char* restrict out,
                                 const int pixels, const int channels,
                                 const int out_channel_stride, const int out_channel_offset,
                                 const int in_zero_point, const int multiplier, const int shift,
                                 const int out_zero_point, const int lo, const int hi,
                                 const int requant_f32) {
  const int c0 = get_global_id(0) * VEC;
  const int n = get_global_id(1);
  const __global char* src = in + (long)n * pixels * channels + c0;

  int acc[VEC];
#pragma unroll
  for (int v = 0; v < VEC; ++v) acc[v] = 0;
  for (int p = 0; p < pixels; ++p) {
#pragma unroll
    for (int v = 0; v < VEC; ++v) acc[v] += src[(long)p * channels + v] - in_zero_point;
  }
  __global char* dst = out + (long)n * out_channel_stride + out_channel_offset + c0;
#pragma unroll
  for (int v = 0; v < VEC; ++v)
    dst[v] = requant_f32 ? accel_requantize_f32(acc[v], multiplier, shift, out_zero_point, lo, hi)
                         : accel_requantize(acc[v], multiplier, shift, out_zero_point, lo, hi);
}
