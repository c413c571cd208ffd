/* ==================================================================================
 * fpga_pool.cl: int8 max / average / global-average pooling, FPGA shape (Intel FPGA SDK).
 *
 * A pipeline of its own (pooling is not fused into the conv pipeline of fpga_conv.cl: the
 * overlapping 3x3/2 windows of ResNet's and DenseNet's stems would need line buffers of
 * conv output; as a separate pass it costs one extra read and write of a small tensor):
 *
 *   fpga_pool         reads the window taps of VEC_SIZE channels from global memory, keeps a
 *                     running max or sum per channel in registers, and at the last tap
 *                     requantizes them (quant.h, the same function as pool.cl) into pool_ch
 *   fpga_pool_writer  VEC_SIZE int8 per step -> global memory at a channel offset
 *
 * Semantics (the same as pool.cl and accel/reference/pool.py):
 *   max  over the in-bounds taps, y = requantize(max - z_x, M[0], S[0], z_y)
 *   avg  acc = sum of (x - z_x) over the in-bounds taps, y = requantize(acc, M[n], S[n], z_y)
 *        with n the taps inside the count region [count_h0, count_h1) x [count_w0, count_w1)
 *   global average pooling is avg with a kernel of the whole H x W plane (n = H * W).
 *   float32_mode (QDQ models: onnxruntime's float32 arithmetic; 0 = the fixed point above)
 *     1  average pool as pool.cl's avg_pool_f32_i8: a float32 running sum of the taps'
 *        dequantized values (table), divided by n, then quant.h's accel_quantize_f32. On a
 *        board this running sum is a loop-carried float add: the pool loop's II rises to
 *        the adder's latency unless aoc maps it to Arria 10's single-cycle accumulator;
 *        only QDQ models' average pools pay for it.
 *     2  global average pool as pool.cl's: the integer sum, y = accel_requantize_f32(acc,
 *        M[n], S[n], z_y) with (M, S) a float32 multiplier.
 *
 * Iteration order: pixel (n, oy, ox), input vector cv, tap (ky, kx), flattened into one
 * loop with incremental counters (II=1; the running max/sum is a register).
 *
 * Knobs (-D, #ifndef defaults):
 *   VEC_SIZE    channels per step (the same value as fpga_conv.cl's bitstream)
 *   POOL_DEPTH  depth of pool_ch (fpga_pool -> fpga_pool_writer); default 16 on a board,
 *               8192 in Intel's emulator (see fpga_conv.cl's channel depths)
 * ================================================================================== */
#include "quant.h"

#ifndef VEC_SIZE
#define VEC_SIZE 16
#endif

#if ACCEL_FPGA
#pragma OPENCL EXTENSION cl_intel_channels : enable

typedef struct { char v[VEC_SIZE]; } pool_vec;

/* Deep in emulation, where kernels are spinning threads (see fpga_conv.cl); the emulator
 * is the FPGA front end without aoc's INTELFPGA_CL. */
#ifndef POOL_DEPTH
#if defined(INTELFPGA_CL)
#define POOL_DEPTH 16
#else
#define POOL_DEPTH 8192
#endif
#endif
#if POOL_DEPTH < 1
#error "POOL_DEPTH must be at least 1"
#endif

channel pool_vec pool_ch __attribute__((depth(POOL_DEPTH)));

__attribute__((max_global_work_dim(0)))
__kernel void fpga_pool(__global const char* restrict input,
                        __global const int* restrict multipliers,
                        __global const int* restrict shifts,
                        const int batch, const int in_height, const int in_width,
                        const int channels, const int in_stride,
                        const int out_height, const int out_width,
                        const int kernel_h, const int kernel_w,
                        const int stride_h, const int stride_w,
                        const int pad_top, const int pad_left, const int is_max,
                        const int count_h0, const int count_h1,
                        const int count_w0, const int count_w1,
                        const int input_zero_point, const int output_zero_point,
                        const int lo, const int hi, const int float32_mode,
                        __global const float* restrict dequantized,
                        __global const float* restrict count_reciprocals,
                        const float out_scale, const float out_scale_reciprocal,
                        const int offset) {
  const int cvecs = (channels + VEC_SIZE - 1) / VEC_SIZE;
  const long steps = (long)batch * out_height * out_width * cvecs * kernel_h * kernel_w;
  int running[VEC_SIZE];
  float running_f32[VEC_SIZE];
#pragma unroll
  for (int v = 0; v < VEC_SIZE; ++v) {
    running[v] = is_max ? ACCEL_INT8_MIN : 0;
    running_f32[v] = 0.0f;
  }

  int n = 0, oy = 0, ox = 0, cv = 0, ky = 0, kx = 0;
  for (long i = 0; i < steps; ++i) {
    const int y0 = oy * stride_h - pad_top, x0 = ox * stride_w - pad_left;
    const int y = y0 + ky, x = x0 + kx;
    const bool inside = y >= 0 && y < in_height && x >= 0 && x < in_width;
    const long base = ((long)(n * in_height + y) * in_width + x) * in_stride + cv * VEC_SIZE;
#pragma unroll
    for (int v = 0; v < VEC_SIZE; ++v) {
      const int c = cv * VEC_SIZE + v;
      const int value = (inside && c < channels) ? input[base + v] : input_zero_point;
      if (inside) running[v] = is_max ? max(running[v], value) : running[v] + value - input_zero_point;
      if (inside && float32_mode == 1) running_f32[v] += dequantized[value - ACCEL_INT8_MIN];
    }
    if (ky == kernel_h - 1 && kx == kernel_w - 1) {
      /* The window's divisor: its taps inside the count region. */
      const int count = max(0, min(y0 + kernel_h, count_h1) - max(y0, count_h0)) *
                        max(0, min(x0 + kernel_w, count_w1) - max(x0, count_w0));
      const int entry = is_max ? 0 : count;
      const int multiplier = multipliers[entry], shift = shifts[entry];
      const float divisor_reciprocal = float32_mode == 1 ? count_reciprocals[count] : 1.0f;
      pool_vec out;
#pragma unroll
      for (int v = 0; v < VEC_SIZE; ++v) {
        const int acc = is_max ? running[v] - input_zero_point : running[v];
        if (float32_mode == 1) {
          const float mean = accel_div_f32(running_f32[v], (float)count, divisor_reciprocal);
          out.v[v] = accel_quantize_f32(mean, out_scale, out_scale_reciprocal, output_zero_point,
                                        offset, lo, hi);
        } else if (float32_mode == 2) {
          out.v[v] = accel_requantize_f32(acc, multiplier, shift, output_zero_point, lo, hi);
        } else {
          out.v[v] = accel_requantize(acc, multiplier, shift, output_zero_point, lo, hi);
        }
        running[v] = is_max ? ACCEL_INT8_MIN : 0;
        running_f32[v] = 0.0f;
      }
      write_channel_intel(pool_ch, out);
    }
    /* Advance (kx, ky, cv, ox, oy, n). */
    if (++kx == kernel_w) {
      kx = 0;
      if (++ky == kernel_h) {
        ky = 0;
        if (++cv == cvecs) {
          cv = 0;
          if (++ox == out_width) { ox = 0; if (++oy == out_height) { oy = 0; ++n; } }
        }
      }
    }
  }
}

__attribute__((max_global_work_dim(0)))
__kernel void fpga_pool_writer(__global char* restrict output, const int pixels,
                               const int channels, const int out_stride, const int out_offset) {
  const int cvecs = (channels + VEC_SIZE - 1) / VEC_SIZE;
  int p = 0, cv = 0;
  for (int i = 0; i < pixels * cvecs; ++i) {
    const pool_vec r = read_channel_intel(pool_ch);
    const long base = (long)p * out_stride + out_offset + cv * VEC_SIZE;
#pragma unroll
    for (int v = 0; v < VEC_SIZE; ++v)
      if (cv * VEC_SIZE + v < channels) output[base + v] = r.v[v];
    if (++cv == cvecs) { cv = 0; ++p; }
  }
}

#endif /* ACCEL_FPGA */
