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
 *   fpga_pool_writer  VEC_SIZE int8 per step -> global memory at a channel offset, as
 *                     aligned vector stores of up to 16 bytes
 *
 * Semantics (the same as pool.cl and accel/reference/pool.py):
 *   max  over the in-bounds taps, y = requantize(max - z_x, M[0], S[0], z_y)
 *   avg  acc = sum of (x - z_x) over the in-bounds taps, y = requantize(acc, M[n], S[n], z_y)
 *        with n the taps inside the count region [count_h0, count_h1) x [count_w0, count_w1)
 *   global average pooling is avg with a kernel of the whole H x W plane (n = H * W).
 *   float32_mode (QDQ models: onnxruntime's float32 arithmetic; 0 = the fixed point above)
 *     1  average pool as pool.cl's avg_pool_f32_i8: a float32 running sum of the taps'
 *        dequantized values (a private 256-entry table), divided by n, then quant.h's
 *        accel_quantize_f32. On a board this running sum is a loop-carried float add (the
 *        loop's II rises to the adder's latency unless aoc maps it to Arria 10's single-cycle
 *        accumulator), so it is compiled in only where a model needs it (FPGA_POOL_AVG_F32).
 *     2  global average pool as pool.cl's: the integer sum, y = accel_requantize_f32(acc,
 *        M[n], S[n], z_y) with (M, S) a float32 multiplier (FPGA_POOL_F32).
 *   Modes are compile-time (FPGA_POOL_FIXED, FPGA_POOL_F32, FPGA_POOL_AVG_F32, default all;
 *   accel/fpga/design.py): with one compiled in, float32_mode is not read. Max vs average
 *   (is_max) stays a per-layer choice between a comparator and an adder.
 *
 * Iteration order: pixel (n, oy, ox), input vector cv, tap (ky, kx), flattened into one
 * loop with incremental counters (II=1; the running max/sum is a register). Each tap is one
 * aligned VEC_SIZE-byte vector (channels padded to a multiple of VEC_SIZE; host-checked).
 *
 * Knobs (-D, #ifndef defaults):
 *   VEC_SIZE    channels per step (the same value as fpga_conv.cl's bitstream)
 *   POOL_DEPTH  depth of pool_ch (fpga_pool -> fpga_pool_writer); default 16 on a board,
 *               8192 in Intel's emulator (see fpga_conv.cl's channel depths)
 *   FPGA_PERSISTENT  both kernels loop over a segment's layer descriptors (fpga_descriptor.h,
 *               fpga_conv.cl's banner)
 * ================================================================================== */
#include "quant.h"

#ifndef VEC_SIZE
#define VEC_SIZE 16
#endif
/* Compile-time modes (accel/fpga/design.py POOL_MODES); by default all. */
#ifndef FPGA_POOL_FIXED
#define FPGA_POOL_FIXED 1
#endif
#ifndef FPGA_POOL_F32
#define FPGA_POOL_F32 1
#endif
#ifndef FPGA_POOL_AVG_F32
#define FPGA_POOL_AVG_F32 1
#endif
#if !FPGA_POOL_FIXED && !FPGA_POOL_F32 && !FPGA_POOL_AVG_F32
#error "the pool pipeline needs at least one of FPGA_POOL_FIXED, FPGA_POOL_F32, FPGA_POOL_AVG_F32"
#endif
#if (VEC_SIZE & (VEC_SIZE - 1)) != 0
#error "VEC_SIZE must be a power of two (aligned vector loads)"
#endif

#if ACCEL_FPGA
#pragma OPENCL EXTENSION cl_intel_channels : enable
#include "fpga_descriptor.h"

/* One aligned vector per tap (see fpga_conv.cl's data_vec). */
typedef struct __attribute__((aligned(VEC_SIZE))) { char v[VEC_SIZE]; } pool_vec;
/* The writer's store unit: VEC_SIZE bytes up to 16 (channel offsets and strides are
 * multiples of 16, so wider units would not stay aligned in a concat). */
#if VEC_SIZE >= 16
#define POOL_STORE_BYTES 16
#else
#define POOL_STORE_BYTES VEC_SIZE
#endif
#define POOL_STORES (VEC_SIZE / POOL_STORE_BYTES)
typedef struct __attribute__((aligned(POOL_STORE_BYTES))) { char v[POOL_STORE_BYTES]; }
    pool_out_vec;

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
#if FPGA_PERSISTENT
__kernel void fpga_pool(FPGA_ACTIVATIONS const pool_vec* restrict activations,
                        __global const int* restrict int_arena,
                        __global const float* restrict float_arena,
                        __global const fpga_descriptor* restrict layers,
                        const int num_layers) {
  FPGA_FOR_EACH_LAYER(FPGA_LAYER_POOL)
  FPGA_ACTIVATIONS const pool_vec* restrict input = activations + d[FD_IN_BASE];
  __global const int* restrict multipliers = int_arena + d[FD_MULT_BASE];
  __global const int* restrict shifts = int_arena + d[FD_SHIFT_BASE];
  __global const float* restrict dequantized = float_arena + d[FD_DEQUANT_BASE];
  __global const float* restrict count_reciprocals = float_arena + d[FD_RECIP_BASE];
  const int batch = d[FD_BATCH], in_height = d[FD_IN_HEIGHT], in_width = d[FD_IN_WIDTH];
  const int channels = d[FD_IN_CHANNELS], in_stride_vecs = d[FD_IN_STRIDE_VECS];
  const int out_height = d[FD_OUT_HEIGHT], out_width = d[FD_OUT_WIDTH];
  const int kernel_h = d[FD_KERNEL_H], kernel_w = d[FD_KERNEL_W];
  const int stride_h = d[FD_STRIDE_H], stride_w = d[FD_STRIDE_W];
  const int pad_top = d[FD_PAD_TOP], pad_left = d[FD_PAD_LEFT], is_max = d[FD_IS_MAX];
  const int count_h0 = d[FD_COUNT_H0], count_h1 = d[FD_COUNT_H1];
  const int count_w0 = d[FD_COUNT_W0], count_w1 = d[FD_COUNT_W1];
  const int input_zero_point = d[FD_INPUT_ZERO_POINT];
  const int output_zero_point = d[FD_OUTPUT_ZERO_POINT], lo = d[FD_LO], hi = d[FD_HI];
#if FPGA_POOL_FIXED + FPGA_POOL_F32 + FPGA_POOL_AVG_F32 > 1  /* a mode select only then */
  const int float32_mode = d[FD_FLOAT32_MODE];
#endif
  const float out_scale = as_float(d[FD_OUT_SCALE]);
  const float out_scale_reciprocal = as_float(d[FD_OUT_SCALE_RECIPROCAL]);
  const int offset = d[FD_OFFSET];
  /* The activations are the previous layer's: wait for its writer (fpga_descriptor.h). */
  if (d[FD_WAIT] == FPGA_LAYER_CONV) (void)read_channel_intel(conv_to_pool_token);
  if (d[FD_WAIT] == FPGA_LAYER_POOL) (void)read_channel_intel(pool_to_pool_token);
  mem_fence(CLK_CHANNEL_MEM_FENCE | CLK_GLOBAL_MEM_FENCE);
#else
__kernel void fpga_pool(__global const pool_vec* restrict input,
                        __global const int* restrict multipliers,
                        __global const int* restrict shifts,
                        const int batch, const int in_height, const int in_width,
                        const int channels, const int in_stride_vecs,
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
#endif
  const int cvecs = (channels + VEC_SIZE - 1) / VEC_SIZE;
  const long steps = (long)batch * out_height * out_width * cvecs * kernel_h * kernel_w;
  pool_vec fill;
#pragma unroll
  for (int v = 0; v < VEC_SIZE; ++v) fill.v[v] = (char)input_zero_point;
  int running[VEC_SIZE];
#pragma unroll
  for (int v = 0; v < VEC_SIZE; ++v) running[v] = is_max ? ACCEL_INT8_MIN : 0;
#if FPGA_POOL_AVG_F32
  /* The float32 average: the dequantization table in private memory (one read port per
   * lane, no global load per value), a float32 running sum per lane. */
  float table[256];
#if FPGA_POOL_FIXED || FPGA_POOL_F32
  for (int i = 0; i < 256; ++i) table[i] = float32_mode == 1 ? dequantized[i] : 0.0f;
#else
  for (int i = 0; i < 256; ++i) table[i] = dequantized[i];
#endif
  float running_f32[VEC_SIZE];
#pragma unroll
  for (int v = 0; v < VEC_SIZE; ++v) running_f32[v] = 0.0f;
#endif

  int n = 0, oy = 0, ox = 0, cv = 0, ky = 0, kx = 0;
  for (long i = 0; i < steps; ++i) {
    const int y0 = oy * stride_h - pad_top, x0 = ox * stride_w - pad_left;
    const int y = y0 + ky, x = x0 + kx;
    const bool inside = y >= 0 && y < in_height && x >= 0 && x < in_width;
    pool_vec tap = fill;
    if (inside) tap = input[((n * in_height + y) * in_width + x) * in_stride_vecs + cv];
#pragma unroll
    for (int v = 0; v < VEC_SIZE; ++v) {
      const int value = tap.v[v];
      if (inside) running[v] = is_max ? max(running[v], value) : running[v] + value - input_zero_point;
#if FPGA_POOL_AVG_F32
      if (inside) running_f32[v] += table[value - ACCEL_INT8_MIN];
#endif
    }
    if (ky == kernel_h - 1 && kx == kernel_w - 1) {
      /* The window's divisor: its taps inside the count region. */
      const int count = max(0, min(y0 + kernel_h, count_h1) - max(y0, count_h0)) *
                        max(0, min(x0 + kernel_w, count_w1) - max(x0, count_w0));
      const int entry = is_max ? 0 : count;
      const int multiplier = multipliers[entry], shift = shifts[entry];
#if FPGA_POOL_AVG_F32 && (FPGA_POOL_FIXED || FPGA_POOL_F32)
      const float divisor_reciprocal = float32_mode == 1 ? count_reciprocals[count] : 1.0f;
#elif FPGA_POOL_AVG_F32
      const float divisor_reciprocal = count_reciprocals[count];
#endif
      pool_vec out;
#pragma unroll
      for (int v = 0; v < VEC_SIZE; ++v) {
        const int acc = is_max ? running[v] - input_zero_point : running[v];
        /* Only the modes compiled in; with one of them there is no run-time choice. */
#if FPGA_POOL_FIXED
        char result = accel_requantize(acc, multiplier, shift, output_zero_point, lo, hi);
#elif FPGA_POOL_F32
        char result = accel_requantize_f32(acc, multiplier, shift, output_zero_point, lo, hi);
#else
        char result = 0;
#endif
#if FPGA_POOL_F32 && FPGA_POOL_FIXED
        if (float32_mode == 2)
          result = accel_requantize_f32(acc, multiplier, shift, output_zero_point, lo, hi);
#endif
#if FPGA_POOL_AVG_F32
        const float mean = accel_div_f32(running_f32[v], (float)count, divisor_reciprocal);
        const char average = accel_quantize_f32(mean, out_scale, out_scale_reciprocal,
                                                output_zero_point, offset, lo, hi);
#if FPGA_POOL_FIXED || FPGA_POOL_F32
        if (float32_mode == 1) result = average;
#else
        result = average;
#endif
        running_f32[v] = 0.0f;
#endif
        out.v[v] = result;
        running[v] = is_max ? ACCEL_INT8_MIN : 0;
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
#if FPGA_PERSISTENT
  FPGA_END_LAYERS
#endif
}

/* Aligned POOL_STORE_BYTES-wide stores (pool_out_vec; out_stride_units and out_offset_units
 * in those units): each store unit of a vector below the padded channel count is written
 * whole (channels, strides and offsets are multiples of 16), one predicate per unit. */
__attribute__((max_global_work_dim(0)))
#if FPGA_PERSISTENT
__kernel void fpga_pool_writer(FPGA_ACTIVATIONS pool_out_vec* restrict activations,
                               __global const fpga_descriptor* restrict layers,
                               const int num_layers) {
  FPGA_FOR_EACH_LAYER(FPGA_LAYER_POOL)
  FPGA_ACTIVATIONS pool_out_vec* restrict output = activations + d[FD_OUT_BASE];
  const int pixels = d[FD_PIXELS], channels = d[FD_IN_CHANNELS];
  const int out_stride_units = d[FD_OUT_STRIDE_UNITS];
  const int out_offset_units = d[FD_OUT_OFFSET_UNITS];
#else
__kernel void fpga_pool_writer(__global pool_out_vec* restrict output, const int pixels,
                               const int channels, const int out_stride_units,
                               const int out_offset_units) {
#endif
  const int cvecs = (channels + VEC_SIZE - 1) / VEC_SIZE;
  const int total_units = channels / POOL_STORE_BYTES;
  int cv = 0, left = total_units;                /* units from vector cv on */
  int pixel = out_offset_units, base = out_offset_units;  /* in store units */
  for (int i = 0; i < pixels * cvecs; ++i) {
    const pool_vec r = read_channel_intel(pool_ch);
    const int units = min(POOL_STORES, left);
#pragma unroll
    for (int u = 0; u < POOL_STORES; ++u) {
      pool_out_vec o;
#pragma unroll
      for (int b = 0; b < POOL_STORE_BYTES; ++b) o.v[b] = r.v[u * POOL_STORE_BYTES + b];
      if (u < units) output[base + u] = o;
    }
    base += POOL_STORES;
    left -= POOL_STORES;
    if (++cv == cvecs) { cv = 0; left = total_units; pixel += out_stride_units; base = pixel; }
  }
#if FPGA_PERSISTENT
  /* The layer is in memory: tell the next layer's reader (fpga_descriptor.h). */
  mem_fence(CLK_GLOBAL_MEM_FENCE | CLK_CHANNEL_MEM_FENCE);
  if (d[FD_SIGNAL] == FPGA_LAYER_CONV) write_channel_intel(pool_to_conv_token, layer);
  if (d[FD_SIGNAL] == FPGA_LAYER_POOL) write_channel_intel(pool_to_pool_token, layer);
  FPGA_END_LAYERS
#endif
}

#endif /* ACCEL_FPGA */
