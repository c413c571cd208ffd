/* ==================================================================================
 * eltwise.cl: elementwise int8 operations.
 *
 * add_sat_i8: out[i] = saturate(a[i] + b[i]) on raw int8 values. It is the smoke test of
 * every device (it touches build, buffers, scalar arguments and launch) and needs no
 * quantisation parameters.
 *
 * add_i8: the quantized Add of two int8 tensors (ResNet's residual Add when it is not fused
 * into a conv): each input is rescaled to the output scale with its own multiplier/shift,
 * y = clamp(z_y + scale(a - z_a, M_a, S_a) + scale(b - z_b, M_b, S_b), lo, hi), which is
 * accel_requantize_add with acc = a - z_a. Both inputs and the output share one layout
 * (NHWC, channels padded to 16), so it runs over the flat buffers: VEC elements per
 * work-item, global size n / VEC (n is a multiple of 16).
 *
 * add_f32_i8 (ADD_F32=1 only): the same Add in onnxruntime's float32 QLinearAdd arithmetic
 * (quant.h's accel_add_f32), for QDQ models; same layout and global size as add_i8.
 * add_dq_f32_i8 (ADD_F32=1 only): the Add onnxruntime runs in float between DQ and Q where
 * it leaves int8 tensors unfused (quant.h's accel_dq_add_f32); same layout.
 * ================================================================================== */
#include "quant.h"

/* Elements per work-item of add_i8; must divide 16. */
#ifndef VEC
#define VEC 1
#endif
#include "vec_check.h"

/* 1: also build add_f32_i8 (float32 fma; off by default, the fixed-point contract). */
#ifndef ADD_F32
#define ADD_F32 0
#endif
#if ADD_F32 != 0 && ADD_F32 != 1
#error "ADD_F32 must be 0 or 1"
#endif

__kernel void add_sat_i8(__global const char* a, __global const char* b, __global char* out,
                         const int n) {
  const int i = get_global_id(0);
  if (i < n) out[i] = add_sat(a[i], b[i]);
}

__kernel void add_i8(__global const char* restrict a, __global const char* restrict b,
                     __global char* restrict out,
                     const int a_zero_point, const int a_multiplier, const int a_shift,
                     const int b_zero_point, const int b_multiplier, const int b_shift,
                     const int out_zero_point, const int lo, const int hi) {
  const long i0 = (long)get_global_id(0) * VEC;
#pragma unroll
  for (int v = 0; v < VEC; ++v) {
    out[i0 + v] = accel_requantize_add(a[i0 + v] - a_zero_point, a_multiplier, a_shift,
                                       b[i0 + v], b_zero_point, b_multiplier, b_shift,
                                       out_zero_point, lo, hi);
  }
}

#if ADD_F32
__kernel void add_f32_i8(__global const char* restrict a, __global const char* restrict b,
                         __global char* restrict out, const float ratio_a, const float ratio_b,
                         const float fixed, const int offset, const int lo, const int hi) {
  const long i0 = (long)get_global_id(0) * VEC;
#pragma unroll
  for (int v = 0; v < VEC; ++v) {
    out[i0 + v] = accel_add_f32(a[i0 + v], b[i0 + v], ratio_a, ratio_b, fixed, offset, lo,
                                 hi);
  }
}

/* The Add onnxruntime runs in float between DQ and Q (quant.h's accel_dq_add_f32). */
__kernel void add_dq_f32_i8(__global const char* restrict a, __global const char* restrict b,
                            __global char* restrict out, const int a_zero_point,
                            const float a_scale, const int b_zero_point, const float b_scale,
                            const float y_scale, const float y_scale_recip,
                            const int y_zero_point, const int lo, const int hi) {
  const long i0 = (long)get_global_id(0) * VEC;
#pragma unroll
  for (int v = 0; v < VEC; ++v) {
    out[i0 + v] = accel_dq_add_f32(a[i0 + v], b[i0 + v], a_zero_point, a_scale, b_zero_point,
                                   b_scale, y_scale, y_scale_recip, y_zero_point, lo, hi);
  }
}
#endif
