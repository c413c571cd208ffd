/* ==================================================================================
 * affine.cl: a channel-wise int8 affine with requantize and clamp.
 *
 * affine_i8: y[p, c] = requantize((x[p, c] - z_x) * w[c] + bias[c], M[c], S[c], z_y, lo, hi)
 * for every pixel p of an NHWC tensor: a depthwise 1x1 conv, what a BatchNorm (+ ReLU)
 * becomes when no conv can absorb it (DenseNet's BN after a concat). The input and output
 * may be channel slices of wider tensors (a concat written in place): channel c of pixel p
 * sits at p * stride + offset + c. Padded channels carry w = 0, bias = 0, so they hold z_y.
 * Global size: (channels_padded / VEC, pixels).
 * ================================================================================== */
#include "quant.h"

/* Channels per work-item; must divide 16. */
#ifndef VEC
#define VEC 1
#endif

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
