/* ==================================================================================
 * conv_f32.cl: onnxruntime's float Conv between DequantizeLinear and QuantizeLinear, for the
 * "float islands" of int8 (QInt8) QDQ models: where onnxruntime on x86 leaves a conv's int8
 * tensors unfused (accel.compiler.passes.qdq_annotation.ort_keeps_int8), it computes
 *
 *   xf = float32((x - z_x) * s_x)                      DequantizeLinear of the input
 *   wf = float32(w * s_w[m])                           of the weights (host: a float32 array)
 *   y  = MLAS SGEMM of wf [M, K] and im2col(xf) [K, OH*OW] + bias[m]
 *   q  = saturate(rint(y / s_y) + z_y)                 QuantizeLinear (quant.h)
 *
 * The sum is MLAS's order, which decides its float32 rounding: k = (c, ky, kx) in im2col
 * order, cut into blocks of block_k (accel.ops.conv_f32.mlas_block_k); within a block one fma
 * chain from 0, the block sums added in float32. Padding taps are 0.0 (xf of z_x).
 * numpy twin: accel.reference.conv_f32. One work-item per (output channel, output pixel);
 * the weights are stored k-major ([K][M]: neighbouring work-items read neighbouring floats).
 * ================================================================================== */
#include "quant.h"

__kernel void conv_f32_i8(__global const char* restrict x, __global const float* restrict w,
                          __global const float* restrict bias, __global char* restrict out,
                          const int in_h, const int in_w, const int in_c,
                          const int in_stride, const int in_offset,
                          const int out_h, const int out_w, const int out_c,
                          const int out_stride, const int out_offset,
                          const int kernel_h, const int kernel_w, const int stride_h,
                          const int stride_w, const int pad_top, const int pad_left,
                          const int dilation_h, const int dilation_w,
                          const int x_zero_point, const float x_scale, const int block_k,
                          const float y_scale, const float y_scale_recip,
                          const int y_zero_point, const int lo, const int hi) {
  const int m = get_global_id(0);
  const int p = get_global_id(1);
  if (m >= out_c) return;
  const int n = p / (out_h * out_w);
  const int oy = (p / out_w) % out_h;
  const int ox = p % out_w;
  __global const float* wk = w + m;  /* w[k * out_c + m] */
  float y = 0.0f;
  float acc = 0.0f;
  int left = block_k;  /* taps left in this block */
  int first = 1;
  for (int c = 0; c < in_c; ++c) {
    for (int ky = 0; ky < kernel_h; ++ky) {
      const int iy = oy * stride_h - pad_top + ky * dilation_h;
      for (int kx = 0; kx < kernel_w; ++kx) {
        const int ix = ox * stride_w - pad_left + kx * dilation_w;
        float xf = 0.0f;
        if (iy >= 0 && iy < in_h && ix >= 0 && ix < in_w) {
          const int q = x[((long)(n * in_h + iy) * in_w + ix) * in_stride + in_offset + c];
          xf = (float)(q - x_zero_point) * x_scale;
        }
        acc = fma(xf, *wk, acc);
        wk += out_c;
        if (--left == 0) {  /* a block ends: its sum joins the output */
          y = first ? acc : y + acc;
          acc = 0.0f;
          first = 0;
          left = block_k;
        }
      }
    }
  }
  if (left != block_k) y = first ? acc : y + acc;  /* the last, partial block */
  y = y + bias[m];
  out[(long)p * out_stride + out_offset + m] =
      accel_quantize_f32(y, y_scale, y_scale_recip, y_zero_point, -y_zero_point, lo, hi);
}

/* The same for a 1x1 conv without padding (a ResNet's float islands), where k = c and every
 * tap lies inside the input. A work-item computes CONV1X1_CHANNELS output channels of
 * CONV1X1_PIXELS output pixels: independent fma chains that share each weight and each
 * dequantized input value (-D knobs; defaults: accel.ops.conv_f32.DEFAULT_KNOBS). Global size
 * (ceil(M / CONV1X1_CHANNELS), ceil(N * OH * OW / CONV1X1_PIXELS)); the arguments of
 * conv_f32_i8 less the kernel geometry. */
#ifndef CONV1X1_CHANNELS
#define CONV1X1_CHANNELS 8
#endif
#ifndef CONV1X1_PIXELS
#define CONV1X1_PIXELS 1
#endif
/* the constraints kernels/tuning.json declares (its "_knobs"), which the host checks first */
#if CONV1X1_CHANNELS != 1 && CONV1X1_CHANNELS != 2 && CONV1X1_CHANNELS != 4 && \
    CONV1X1_CHANNELS != 8 && CONV1X1_CHANNELS != 16
#error "CONV1X1_CHANNELS must be 1, 2, 4, 8 or 16"
#endif
#if CONV1X1_PIXELS != 1 && CONV1X1_PIXELS != 2 && CONV1X1_PIXELS != 4 && \
    CONV1X1_PIXELS != 8 && CONV1X1_PIXELS != 16
#error "CONV1X1_PIXELS must be 1, 2, 4, 8 or 16"
#endif
#define CONV1X1_CP (CONV1X1_CHANNELS * CONV1X1_PIXELS)
__kernel void conv1x1_f32_i8(__global const char* restrict x, __global const float* restrict w,
                             __global const float* restrict bias, __global char* restrict out,
                             const int in_h, const int in_w, const int in_c,
                             const int in_stride, const int in_offset,
                             const int out_h, const int out_w, const int out_c,
                             const int out_stride, const int out_offset,
                             const int stride_h, const int stride_w,
                             const int x_zero_point, const float x_scale, const int block_k,
                             const float y_scale, const float y_scale_recip,
                             const int y_zero_point, const int lo, const int hi,
                             const int out_pixels) {
  const int m0 = get_global_id(0) * CONV1X1_CHANNELS;
  const int p0 = get_global_id(1) * CONV1X1_PIXELS;
  const int channels = min(CONV1X1_CHANNELS, out_c - m0);
  __global const char* xp[CONV1X1_PIXELS];
#pragma unroll
  for (int i = 0; i < CONV1X1_PIXELS; ++i) {
    const int p = min(p0 + i, out_pixels - 1);  /* past the end: recompute the last pixel */
    const int n = p / (out_h * out_w);
    const int oy = (p / out_w) % out_h;
    const int ox = p % out_w;
    xp[i] = x + ((long)(n * in_h + oy * stride_h) * in_w + ox * stride_w) * in_stride +
            in_offset;
  }
  float y[CONV1X1_CP];
  for (int c0 = 0; c0 < in_c; c0 += block_k) {
    const int c1 = min(in_c, c0 + block_k);
    float acc[CONV1X1_CP];
#pragma unroll
    for (int j = 0; j < CONV1X1_CP; ++j) acc[j] = 0.0f;
    for (int c = c0; c < c1; ++c) {
      __global const float* wc = w + (long)c * out_c + m0;
      float wv[CONV1X1_CHANNELS];
#pragma unroll
      for (int j = 0; j < CONV1X1_CHANNELS; ++j) wv[j] = wc[min(j, channels - 1)];
#pragma unroll
      for (int i = 0; i < CONV1X1_PIXELS; ++i) {
        const float xf = (float)(xp[i][c] - x_zero_point) * x_scale;
#pragma unroll
        for (int j = 0; j < CONV1X1_CHANNELS; ++j)
          acc[i * CONV1X1_CHANNELS + j] = fma(xf, wv[j], acc[i * CONV1X1_CHANNELS + j]);
      }
    }
#pragma unroll
    for (int j = 0; j < CONV1X1_CP; ++j) y[j] = c0 == 0 ? acc[j] : y[j] + acc[j];
  }
  for (int i = 0; i < CONV1X1_PIXELS && p0 + i < out_pixels; ++i) {
    for (int j = 0; j < channels; ++j) {
      const float yb = y[i * CONV1X1_CHANNELS + j] + bias[m0 + j];
      out[(long)(p0 + i) * out_stride + out_offset + m0 + j] =
          accel_quantize_f32(yb, y_scale, y_scale_recip, y_zero_point, -y_zero_point, lo, hi);
    }
  }
}
