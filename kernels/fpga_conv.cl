/* ==================================================================================
 * fpga_conv.cl: int8 convolution and dense layers, FPGA shape (Intel FPGA SDK for OpenCL).
 *
 * Four single-work-item kernels joined by channels, launched together (one queue each):
 *
 *   fpga_conv_reader    global memory -> on-chip window and weight buffers -> one input
 *                       vector (VEC_SIZE channels) and one weight vector (LANE_NUM output
 *                       channels x VEC_SIZE input channels) per cycle into data_ch/weight_ch
 *   fpga_conv_core      the MAC array: VEC_SIZE x LANE_NUM multiplies per cycle, partial sums
 *                       in shift-register accumulators; LANE_NUM int32 sums per output pixel
 *                       into acc_ch
 *   fpga_conv_epilogue  bias, requantize, ReLU clamp, fused residual add (quant.h, the same
 *                       functions as the NDRange kernels) -> LANE_NUM int8 into result_ch
 *   fpga_conv_writer    int8 results -> global memory at a channel offset (concat is free)
 *
 * Iteration order (every kernel walks the same sequence): output-channel group g (LANE_NUM
 * channels), then output pixel (n, oy, ox), then the reduction k = (ky, kx, cv) over
 * KH x KW taps and ceil(Cin / VEC_SIZE) input vectors. The loops that move data are
 * flattened (one loop over a whole row, or over the whole layer, with incremental counters:
 * no division, no loop-carried dependency through memory), so each pipelines at II=1; the
 * only outer loops left (reader: output rows, epilogue: channel groups) run rarely.
 *
 * On-chip buffers of the reader, both double-buffered so loading overlaps streaming:
 *   window   the KH input rows one output row needs (dilated rows included), all columns,
 *            all input vectors: KH * W * Cv vectors. While row r streams from one half, the
 *            next row (or the next group's first row) loads into the other half in the same
 *            loop. A layer whose window does not fit WIN_BUF_SIZE reads its taps straight
 *            from global memory (no reuse lost for 1x1 layers such as big dense layers).
 *   weights  the group's KH * KW * Cv weight vectors. The next group's weights load during
 *            the group's first output row, which always has at least as many cycles. A layer
 *            whose reduction does not fit WEIGHT_BUF_SIZE (large dense layers) streams its
 *            weights from global memory: a dense layer uses each weight once anyway.
 *
 * Data layouts (prepared by accel/ops/fpga.py):
 *   input    NHWC int8; pixel (n, y, x) at ((n*H + y)*W + x)*in_stride + in_offset, in_channels
 *            of it read; taps outside the image and channels past in_channels read as the input
 *            zero point z_x, so bias' = bias - z_x * sum(w) (folded on the host) is exact.
 *   weights  int8 [groups][KH][KW][Cv][LANE_NUM][VEC_SIZE], zero in padded channels.
 *   bias     int32 [groups * LANE_NUM], folded and reduced modulo 2^32 (the accumulation is
 *            modular too and the true accumulator fits int32, so the result is exact).
 *   multipliers, shifts  int32 [groups * LANE_NUM] (padded lanes hold a valid pair); when
 *            the epilogue's requant_f32 argument is 1, float32 multipliers as (mantissa,
 *            shift) pairs for accel_requantize_f32 (onnxruntime's requantization, QDQ models).
 *            A run-time argument, not a knob: one bitstream serves both modes.
 *   residual int8 NHWC, pixel p at p * residual_stride, read when has_residual.
 *   output   int8 NHWC, pixel p at p * out_stride + out_offset, out_channels_padded channels
 *            written (the layer's channels padded to 16; padded ones hold the zero point).
 *
 * Knobs (-D, #ifndef defaults; ONE configuration serves every layer of every model):
 *   VEC_SIZE         input channels per cycle (the MAC array's depth)
 *   LANE_NUM         output channels per cycle (the MAC array's width)
 *   WIN_BUF_SIZE     bytes of one half of the window double buffer
 *   WEIGHT_BUF_SIZE  reduction length (KH*KW*Cin, in bytes per lane) one half of the
 *                    weight double buffer holds
 *   STREAM_DEPTH     depth of data_ch and weight_ch (reader -> core); default 64 on a
 *                    board, 8192 in Intel's emulator (see the channels below)
 *   RESULT_DEPTH     depth of acc_ch and result_ch (core -> epilogue -> writer); default 16
 *                    on a board, 8192 in the emulator
 * The defaults fit every conv layer of ResNet-50/152, VGG-16, DenseNet-121 and SSD-VGG300
 * (largest window 3 x 19 x 1024 bytes, largest conv reduction 3*3*1024).
 *
 * Pooling runs as its own pipeline (fpga_pool.cl), after the conv that feeds it; both are
 * built as one program (one board bitstream) through fpga_bitstream.cl.
 * Everything FPGA-only sits behind ACCEL_FPGA (quant.h); without it this file is empty.
 * ================================================================================== */
#include "quant.h"

#ifndef VEC_SIZE
#define VEC_SIZE 16
#endif
#ifndef LANE_NUM
#define LANE_NUM 16
#endif
#ifndef WIN_BUF_SIZE
#define WIN_BUF_SIZE 65536
#endif
#ifndef WEIGHT_BUF_SIZE
#define WEIGHT_BUF_SIZE 9216
#endif

#define WIN_BUF_VECS (WIN_BUF_SIZE / VEC_SIZE)
#define WEIGHT_BUF_VECS (WEIGHT_BUF_SIZE / VEC_SIZE)
/* Depth of the accumulators' shift register: the loop-carried add closes over ACC_DEPTH
 * iterations instead of one, so a deep adder tree does not limit fmax. A fixed part of the
 * design, not a knob. */
#define ACC_DEPTH 4

#if ACCEL_FPGA
#pragma OPENCL EXTENSION cl_intel_channels : enable

/* The reader's loop writes one half of each double buffer while it reads the other: no
 * dependency between iterations, which aoc cannot prove on its own (it would raise the II).
 * Only for aoc: the emulator ignores it and the clang check (ACCEL_SYNTAX_CHECK) lacks it. */
#if defined(INTELFPGA_CL) && !defined(ACCEL_SYNTAX_CHECK)
#define FPGA_IVDEP _Pragma("ivdep")
#else
#define FPGA_IVDEP
#endif

typedef struct { char v[VEC_SIZE]; } data_vec;
typedef struct { data_vec lane[LANE_NUM]; } weight_vec;
typedef struct { int lane[LANE_NUM]; } acc_vec;
typedef struct { char lane[LANE_NUM]; } result_vec;

/* Channel depths (knobs, see the banner). On a board a few dozen entries absorb the stages'
 * latency differences. Intel's emulator runs each kernel as a thread that spins on a full
 * or empty channel; with more kernels than free cores a shallow channel makes every few
 * transfers wait for an OS time slice (~100 us per item measured on 2 cores), so emulation
 * gets deep channels. The emulator is the FPGA front end without aoc's INTELFPGA_CL. */
#if defined(INTELFPGA_CL)
#define FPGA_EMULATOR 0
#else
#define FPGA_EMULATOR 1
#endif
#ifndef STREAM_DEPTH
#if FPGA_EMULATOR
#define STREAM_DEPTH 8192
#else
#define STREAM_DEPTH 64
#endif
#endif
#ifndef RESULT_DEPTH
#if FPGA_EMULATOR
#define RESULT_DEPTH 8192
#else
#define RESULT_DEPTH 16
#endif
#endif
#if STREAM_DEPTH < 1 || RESULT_DEPTH < 1
#error "STREAM_DEPTH and RESULT_DEPTH must be at least 1"
#endif

channel data_vec data_ch __attribute__((depth(STREAM_DEPTH)));
channel weight_vec weight_ch __attribute__((depth(STREAM_DEPTH)));
channel acc_vec acc_ch __attribute__((depth(RESULT_DEPTH)));
channel result_vec result_ch __attribute__((depth(RESULT_DEPTH)));

/* One input vector of pixel (row y, column x) of image n from global memory; the zero
 * point outside the image and past in_channels. */
inline data_vec fpga_load_input(__global const char* restrict input, int n, int y, int x, int cv,
                                int in_height, int in_width, int in_channels, int in_stride,
                                int in_offset, int zero_point) {
  data_vec d;
  const bool inside = y >= 0 && y < in_height && x >= 0 && x < in_width;
  const long base = ((long)(n * in_height + y) * in_width + x) * in_stride + in_offset;
#pragma unroll
  for (int v = 0; v < VEC_SIZE; ++v) {
    const int c = cv * VEC_SIZE + v;
    d.v[v] = (inside && c < in_channels) ? input[base + c] : (char)zero_point;
  }
  return d;
}

inline data_vec fpga_fill_vec(int zero_point) {
  data_vec d;
#pragma unroll
  for (int v = 0; v < VEC_SIZE; ++v) d.v[v] = (char)zero_point;
  return d;
}

__attribute__((max_global_work_dim(0)))
__kernel void fpga_conv_reader(__global const char* restrict input,
                               __global const weight_vec* restrict weights,
                               const int batch, const int in_height, const int in_width,
                               const int in_channels, const int in_stride, const int in_offset,
                               const int out_height, const int out_width,
                               const int kernel_h, const int kernel_w,
                               const int stride_h, const int stride_w,
                               const int dilation_h, const int dilation_w,
                               const int pad_top, const int pad_left,
                               const int input_zero_point, const int groups) {
  __local data_vec window[2][WIN_BUF_VECS];
  __local weight_vec weight_buf[2][WEIGHT_BUF_VECS];

  const int cvecs = (in_channels + VEC_SIZE - 1) / VEC_SIZE;
  const int kvecs = kernel_h * kernel_w * cvecs;          /* reduction length in vectors */
  const int row_vecs = kernel_h * in_width * cvecs;       /* one output row's window */
  const bool window_on_chip = row_vecs <= WIN_BUF_VECS;
  const bool weights_on_chip = kvecs <= WEIGHT_BUF_VECS;
  const int rows = batch * out_height;
  const int total_rows = groups * rows;

  /* Prologue: the first group's weights and the first row's window. */
  if (weights_on_chip)
    for (int i = 0; i < kvecs; ++i) weight_buf[0][i] = weights[i];
  if (window_on_chip) {
    int ky = 0, x = 0, cv = 0;
    for (int i = 0; i < row_vecs; ++i) {
      window[0][i] = fpga_load_input(input, 0, -pad_top + ky * dilation_h, x, cv, in_height,
                                     in_width, in_channels, in_stride, in_offset,
                                     input_zero_point);
      if (++cv == cvecs) { cv = 0; if (++x == in_width) { x = 0; ++ky; } }
    }
  }

  int g = 0, n = 0, oy = 0; /* the row streaming now */
  for (int t = 0; t < total_rows; ++t) {
    const int cur = t & 1;
    /* The row after this one: next image row, next image, or the next group's first row. */
    int next_n = n, next_oy = oy + 1, next_g = g;
    if (next_oy == out_height) { next_oy = 0; if (++next_n == batch) { next_n = 0; ++next_g; } }
    const int prefetch_window = (window_on_chip && t + 1 < total_rows) ? row_vecs : 0;
    const int prefetch_weights = (weights_on_chip && n == 0 && oy == 0 && g + 1 < groups) ? kvecs : 0;
    const int stream = out_width * kvecs;
    const int steps = max(stream, max(prefetch_window, prefetch_weights));
    const int next_y0 = next_oy * stride_h - pad_top;
    const int y0 = oy * stride_h - pad_top;
    const __global weight_vec* group_weights = weights + (long)g * kvecs;
    const __global weight_vec* next_weights = weights + (long)(g + 1) * kvecs;

    int p_ky = 0, p_x = 0, p_cv = 0;              /* window prefetch position */
    int ox = 0, ky = 0, kx = 0, cv = 0, k = 0;    /* stream position */
    FPGA_IVDEP
    for (int i = 0; i < steps; ++i) {
      if (i < prefetch_window) {
        window[cur ^ 1][i] = fpga_load_input(input, next_n, next_y0 + p_ky * dilation_h, p_x, p_cv,
                                             in_height, in_width, in_channels, in_stride,
                                             in_offset, input_zero_point);
        if (++p_cv == cvecs) { p_cv = 0; if (++p_x == in_width) { p_x = 0; ++p_ky; } }
      }
      if (i < prefetch_weights) weight_buf[(g + 1) & 1][i] = next_weights[i];
      if (i < stream) {
        const int x = ox * stride_w - pad_left + kx * dilation_w;
        data_vec d;
        if (window_on_chip)
          d = (x >= 0 && x < in_width) ? window[cur][(ky * in_width + x) * cvecs + cv]
                                        : fpga_fill_vec(input_zero_point);
        else
          d = fpga_load_input(input, n, y0 + ky * dilation_h, x, cv, in_height, in_width,
                              in_channels, in_stride, in_offset, input_zero_point);
        const weight_vec w = weights_on_chip ? weight_buf[g & 1][k] : group_weights[k];
        write_channel_intel(data_ch, d);
        write_channel_intel(weight_ch, w);
        ++k;
        if (++cv == cvecs) {
          cv = 0;
          if (++kx == kernel_w) {
            kx = 0;
            if (++ky == kernel_h) { ky = 0; k = 0; ++ox; }
          }
        }
      }
    }
    n = next_n; oy = next_oy; g = next_g;
  }
}

__attribute__((max_global_work_dim(0)))
__kernel void fpga_conv_core(const int outputs, const int kvecs) {
  /* Per lane, ACC_DEPTH partial sums: each cycle adds into the oldest and shifts. */
  int acc[LANE_NUM][ACC_DEPTH];
#pragma unroll
  for (int l = 0; l < LANE_NUM; ++l)
#pragma unroll
    for (int s = 0; s < ACC_DEPTH; ++s) acc[l][s] = 0;

  const long steps = (long)outputs * kvecs;
  int k = 0;
  for (long i = 0; i < steps; ++i) {
    const data_vec d = read_channel_intel(data_ch);
    const weight_vec w = read_channel_intel(weight_ch);
    const bool last = k == kvecs - 1;
#pragma unroll
    for (int l = 0; l < LANE_NUM; ++l) {
      int dot = 0;
#pragma unroll
      for (int v = 0; v < VEC_SIZE; ++v) dot += (int)d.v[v] * (int)w.lane[l].v[v];
      const int sum = acc[l][ACC_DEPTH - 1] + dot;
#pragma unroll
      for (int s = ACC_DEPTH - 1; s > 0; --s) acc[l][s] = acc[l][s - 1];
      acc[l][0] = sum;
    }
    if (last) { /* the pixel is done: fold the partial sums, send them, restart from zero */
      acc_vec out;
#pragma unroll
      for (int l = 0; l < LANE_NUM; ++l) {
        int total = 0;
#pragma unroll
        for (int s = 0; s < ACC_DEPTH; ++s) {
          total += acc[l][s];
          acc[l][s] = 0;
        }
        out.lane[l] = total;
      }
      write_channel_intel(acc_ch, out);
    }
    k = last ? 0 : k + 1;
  }
}

__attribute__((max_global_work_dim(0)))
__kernel void fpga_conv_epilogue(__global const int* restrict bias,
                                 __global const int* restrict multipliers,
                                 __global const int* restrict shifts,
                                 __global const char* restrict residual,
                                 const int groups, const int pixels,
                                 const int out_channels_padded,
                                 const int output_zero_point, const int lo, const int hi,
                                 const int has_residual, const int residual_stride,
                                 const int residual_zero_point, const int residual_multiplier,
                                 const int residual_shift, const int requant_f32) {
  /* The per-channel parameters are read where they are used: LANE_NUM consecutive words, one
   * wide cached load per step. (Copying them into private arrays once per group is what a
   * board build would do, but Intel's FPGA emulator 2025.0 then returns stale values at
   * random, so the portable form is kept.) */
  for (int g = 0; g < groups; ++g) {
    for (int p = 0; p < pixels; ++p) {
      const acc_vec acc = read_channel_intel(acc_ch);
      result_vec out;
#pragma unroll
      for (int l = 0; l < LANE_NUM; ++l) {
        const int c = g * LANE_NUM + l;
        const int value = acc.lane[l] + bias[c];
        if (has_residual) {
          const int side = c < out_channels_padded ? residual[(long)p * residual_stride + c]
                                            : residual_zero_point;
          out.lane[l] = accel_requantize_add(value, multipliers[c], shifts[c], side,
                                             residual_zero_point, residual_multiplier,
                                             residual_shift, output_zero_point, lo, hi);
        } else if (requant_f32) {
          out.lane[l] = accel_requantize_f32(value, multipliers[c], shifts[c],
                                             output_zero_point, lo, hi);
        } else {
          out.lane[l] = accel_requantize(value, multipliers[c], shifts[c],
                                         output_zero_point, lo, hi);
        }
      }
      write_channel_intel(result_ch, out);
    }
  }
}

__attribute__((max_global_work_dim(0)))
__kernel void fpga_conv_writer(__global char* restrict output, const int groups,
                               const int pixels, const int out_channels_padded,
                               const int out_stride,
                               const int out_offset) {
  int g = 0, p = 0;
  for (int i = 0; i < groups * pixels; ++i) {
    const result_vec r = read_channel_intel(result_ch);
    const long base = (long)p * out_stride + out_offset + g * LANE_NUM;
#pragma unroll
    for (int l = 0; l < LANE_NUM; ++l)
      if (g * LANE_NUM + l < out_channels_padded) output[base + l] = r.lane[l];
    if (++p == pixels) { p = 0; ++g; }
  }
}

#endif /* ACCEL_FPGA */
