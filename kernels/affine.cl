/* ==================================================================================
 * affine.cl: a channel-wise int8 affine with requantize and clamp.
 *
 * affine_i8: y[p, c] = requantize((x[p, c] - z_x) * w[c] + bias[c], M[c], S[c], z_y, lo, hi)
 * for every pixel p of an NHWC tensor: a depthwise 1x1 conv, what a BatchNorm (+ ReLU)
 * becomes when no conv can absorb it (DenseNet's BN after a concat). The input and output
 * may be channel slices of wider tensors (a concat written in place): channel c of pixel p
 * sits at p * stride + offset + c. Padded channels carry w = 0, bias = 0, so they hold z_y.
 * Global size: (channels_padded / VEC, pixels).
 *
 * lut_i8 (QDQ models): the same slices through a 256-entry table
 * (one for all channels / one per channel) that the host fills with onnxruntime's float32
 * arithmetic: a concat input requantized into its concat, a BatchNorm after a concat.
 * ================================================================================== */
#include "quant.h"

/* Channels per work-item; must divide 16. */
#ifndef VEC
#define VEC 1
#endif
#include "vec_check.h"

__kernel void affine_i8(__global const char* restrict x, __global char* restrict out,
                        __global const int* restrict weights, __global const int* restrict bias,
                        __global const int* restrict multipliers,
                        __global const int* restrict shifts,
                        const int in_stride, const int in_offset,
                        const int out_stride, const int out_offset,
                        const int in_zero_point, const int out_zero_point,
                        const int lo, const int hi) {
  const int c0 = get_global_id(0) * VEC;
  const long pixel = get_global_id(1);
  __global const char* src = x + pixel * in_stride + in_offset;
  __global char* dst = out + pixel * out_stride + out_offset;
#pragma unroll
  for (int v = 0; v < VEC; ++v) {
    const int c = c0 + v;
    const int acc = (src[c] - in_zero_point) * weights[c] + bias[c];
    dst[c] = accel_requantize(acc, multipliers[c], shifts[c], out_zero_point, lo, hi);
  }
}

/* lut_i8: y[p, c] = table[c * table_stride + x[p, c] + 128]. The host tabulates onnxruntime's
 * float32 arithmetic for a QDQ model, so every device gives ORT's bytes:
 *  - table_stride 0: one 256-entry table, a concat input copied into its channel slice at the
 *    concat's scale (QLinearConcat: round_half_even(float(s_x * (q - z_x)) / s_y) + z_y,
 *    clamped); padded channels hold z_x, which maps to z_y;
 *  - table_stride 256: one table per channel, a per-channel affine (ORT runs BatchNorm in
 *    float32 between a DequantizeLinear and a QuantizeLinear), clamp included; padded
 *    channels' tables hold z_y.
 * Global size: (channels_padded / VEC, pixels). */
__kernel void lut_i8(__global const char* restrict x, __global char* restrict out,
                     __global const char* restrict table, const int table_stride,
                     const int in_stride, const int in_offset,
                     const int out_stride, const int out_offset) {
  const int c0 = get_global_id(0) * VEC;
  const long pixel = get_global_id(1);
  __global const char* src = x + pixel * in_stride + in_offset;
  __global char* dst = out + pixel * out_stride + out_offset;
#pragma unroll
  for (int v = 0; v < VEC; ++v) {
    const int c = c0 + v;
    dst[c] = table[c * table_stride + src[c] + 128];
  }
}
