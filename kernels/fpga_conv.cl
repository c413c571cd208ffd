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
 *                       into acc_ch. The data vector is broadcast to every lane, or with
 *                       FPGA_SYSTOLIC passed lane to lane (lane l l cycles behind lane 0)
 *   fpga_conv_epilogue  bias, requantize, ReLU clamp, fused residual add (quant.h, the same
 *                       functions as the NDRange kernels) -> LANE_NUM int8 into result_ch,
 *                       LANE_NUM / EPILOGUE_STEPS lanes per cycle
 *   fpga_conv_writer    int8 results -> global memory at a channel offset (concat is free),
 *                       as aligned 16-byte vector stores
 *
 * Iteration order (every kernel walks the same sequence): output-channel group g (LANE_NUM
 * channels), then output pixel (n, oy, ox), then the reduction k = (ky, kx, cv) over
 * KH x KW taps and ceil(Cin / VEC_SIZE) input vectors. The loops that move data are
 * flattened (the reader: one loop over every row of every group, each row the same length;
 * the others: one loop over the layer), with incremental counters and addresses: no
 * division, no multiply per step, no loop-carried dependency through memory, and every trip
 * count known before the loop starts (tests/test_fpga_kernels.py), so each pipelines at II=1
 * and never drains between rows (Intel's Best Practices Guide on loop flattening; PipeCNN's
 * reader is flattened the same way). The epilogue's outer loop over groups runs rarely.
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
 *   input    NHWC int8 as whole VEC_SIZE-byte vectors (in_stride and in_offset multiples of
 *            VEC_SIZE, passed in vectors; accel/ops/fpga.py checks): pixel (n, y, x) at vector
 *            ((n*H + y)*W + x)*in_stride_vecs + in_offset_vecs. Taps outside the image read as
 *            the input zero point z_x, so bias' = bias - z_x * sum(w) (folded on the host) is
 *            exact; channels past in_channels are read as they are (their weights are zero).
 *   weights  int8 [groups][KH][KW][Cv][LANE_NUM][VEC_SIZE], zero in padded channels.
 *   bias     int32 [groups * LANE_NUM], folded and reduced modulo 2^32 (the accumulation is
 *            modular too and the true accumulator fits int32, so the result is exact).
 *   multipliers, shifts  int32 [groups * LANE_NUM] (padded lanes hold a valid pair); in the
 *            float32 mode, float32 multipliers as (mantissa, shift) pairs for
 *            accel_requantize_f32 (onnxruntime's requantization, QDQ models).
 *   residual int8 NHWC, pixel p at p * residual_stride, read when has_residual.
 *   output   int8 NHWC, pixel p at p * out_stride + out_offset, out_channels_padded channels
 *            written (the layer's channels padded to 16; padded ones hold the zero point) as
 *            aligned OUT_STORE_BYTES-wide stores (stride and offset passed in those units).
 *
 * Knobs (-D, #ifndef defaults; ONE configuration serves every layer of every model):
 *   VEC_SIZE         input channels per cycle (the MAC array's depth)
 *   LANE_NUM         output channels per cycle (the MAC array's width)
 *   WIN_BUF_SIZE     bytes of one half of the window double buffer
 *   WEIGHT_BUF_SIZE  reduction length (KH*KW*Cin, in bytes per lane) one half of the
 *                    weight double buffer holds
 *   STREAM_DEPTH     depth of data_ch and weight_ch (reader -> core); default 2 on a
 *                    board (registers: the weight channel is LANE x VEC bytes wide),
 *                    8192 in Intel's emulator (see the channels below)
 *   RESULT_DEPTH     depth of acc_ch and result_ch (core -> epilogue -> writer); default 16
 *                    on a board, 8192 in the emulator
 *   EPILOGUE_STEPS   cycles the epilogue spends on one output vector (default 1): its
 *                    requantize datapaths are LANE_NUM / EPILOGUE_STEPS lanes wide. The core
 *                    spends kvecs cycles per vector, so any EPILOGUE_STEPS <= the smallest
 *                    kvecs of a model costs no time and divides the epilogue's DSPs by it.
 *   FPGA_SYSTOLIC    1: the core passes the data vector lane to lane through registers
 *                    (short wires; per-lane weight and sum delay rings; LANE_NUM - 1 drain
 *                    cycles per layer); 0 (default): broadcast to every lane
 *   FPGA_PERSISTENT  1: each kernel is launched once per segment of layers and loops over
 *                    its table of layer descriptors (fpga_descriptor.h: the arguments below
 *                    come from the table, a writer -> reader token orders the layers, the
 *                    activations are one volatile arena); 0 (default): one launch per layer,
 *                    the arguments as listed. The loop bodies are the same code.
 *   FPGA_CONV_FIXED, FPGA_CONV_RESIDUAL, FPGA_CONV_F32   the epilogue's compile-time modes
 *                    (0/1, default all): fixed-point requantize, the fused residual add on
 *                    top of it, onnxruntime's float32 requantize. A bitstream carries only the
 *                    modes its models need (accel.ops.fpga.config_for) and reports them
 *                    (fpga_bitstream.cl's fpga_config); with one of them the lanes have no
 *                    run-time mode switch (the requant_f32 argument is then not read).
 * Their one source is accel/fpga/design.py (FpgaDesign.defines()); the #ifndef values below
 * equal its defaults (tests/test_fpga_design.py).
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
/* The epilogue's compile-time modes (accel/fpga/design.py CONV_MODES); by default all, so
 * the file builds standalone and serves every model. */
#ifndef FPGA_CONV_FIXED
#define FPGA_CONV_FIXED 1
#endif
#ifndef FPGA_CONV_RESIDUAL
#define FPGA_CONV_RESIDUAL 1
#endif
#ifndef FPGA_CONV_F32
#define FPGA_CONV_F32 1
#endif
#if !FPGA_CONV_FIXED && !FPGA_CONV_F32
#error "the conv epilogue needs FPGA_CONV_FIXED or FPGA_CONV_F32"
#endif
#if FPGA_CONV_RESIDUAL && !FPGA_CONV_FIXED
#error "FPGA_CONV_RESIDUAL extends the fixed-point datapath: it needs FPGA_CONV_FIXED"
#endif
#if (VEC_SIZE & (VEC_SIZE - 1)) != 0
#error "VEC_SIZE must be a power of two (aligned vector loads)"
#endif

/* EPILOGUE_STEPS: cycles the epilogue takes per output vector (LANE_NUM / EPILOGUE_STEPS
 * lanes requantized per cycle; 1 = all at once). A design knob (accel/fpga/design.py). */
#ifndef EPILOGUE_STEPS
#define EPILOGUE_STEPS 1
#endif
#if EPILOGUE_STEPS < 1 || LANE_NUM % EPILOGUE_STEPS != 0
#error "EPILOGUE_STEPS must divide LANE_NUM"
#endif
#define EPILOGUE_LANES (LANE_NUM / EPILOGUE_STEPS)
/* FPGA_SYSTOLIC: the MAC array passes the data vector lane to lane (see fpga_conv_core);
 * 0 = broadcast to every lane. A design knob (accel/fpga/design.py). */
#ifndef FPGA_SYSTOLIC
#define FPGA_SYSTOLIC 0
#endif

#define WIN_BUF_VECS (WIN_BUF_SIZE / VEC_SIZE)
#define WEIGHT_BUF_VECS (WEIGHT_BUF_SIZE / VEC_SIZE)
/* Depth of the accumulators' shift register: the loop-carried add closes over ACC_DEPTH
 * iterations instead of one, so a deep adder tree does not limit fmax. A fixed part of the
 * design, not a knob. */
#define ACC_DEPTH 4

#if ACCEL_FPGA
#pragma OPENCL EXTENSION cl_intel_channels : enable
#include "fpga_descriptor.h"

/* The reader's loop writes one half of each double buffer while it reads the other: no
 * dependency between iterations, which aoc cannot prove on its own (it would raise the II).
 * Only for aoc: the emulator ignores it and the clang check (ACCEL_SYNTAX_CHECK) lacks it. */
#if defined(INTELFPGA_CL) && !defined(ACCEL_SYNTAX_CHECK)
#define FPGA_IVDEP _Pragma("ivdep")
#else
#define FPGA_IVDEP
#endif

/* VEC_SIZE-aligned: every input access is one whole aligned vector (the host checks that
 * strides and channel offsets are multiples of VEC_SIZE), so aoc builds one wide load unit
 * per access site instead of VEC byte loads (Intel's Best Practices Guide: aligned,
 * contiguous accesses coalesce into burst-coalesced LSUs). */
typedef struct __attribute__((aligned(VEC_SIZE))) { char v[VEC_SIZE]; } data_vec;
typedef struct { data_vec lane[LANE_NUM]; } weight_vec;
typedef struct { int lane[LANE_NUM]; } acc_vec;
typedef struct { char lane[LANE_NUM]; } result_vec;
/* The writer's store unit: the largest power of two up to 16 bytes dividing LANE_NUM. Output
 * offsets and strides are multiples of 16 channels (accel/ops/layout.py) and a layer's padded
 * channel count too, so each unit of a lane group is stored whole or not at all: aligned
 * vector stores, no byte predicates. */
#if LANE_NUM % 16 == 0
#define OUT_STORE_BYTES 16
#elif LANE_NUM % 8 == 0
#define OUT_STORE_BYTES 8
#elif LANE_NUM % 4 == 0
#define OUT_STORE_BYTES 4
#elif LANE_NUM % 2 == 0
#define OUT_STORE_BYTES 2
#else
#define OUT_STORE_BYTES 1
#endif
#define OUT_STORES (LANE_NUM / OUT_STORE_BYTES)
typedef struct __attribute__((aligned(OUT_STORE_BYTES))) { char v[OUT_STORE_BYTES]; } out_vec;

/* Channel depths (knobs, see the banner). On a board the reader -> core channels are
 * shallow: the core consumes data and weights in lockstep, and the weight channel is
 * LANE_NUM x VEC_SIZE bytes wide (a deep one would take hundreds of M20K). Intel's emulator
 * runs each kernel as a thread that spins on a full or empty channel; with more kernels than
 * free cores a shallow channel makes every few transfers wait for an OS time slice
 * (~100 us per item measured on 2 cores), so emulation gets deep channels (the host passes
 * them, accel/fpga/design.py). The emulator is the FPGA front end without aoc's INTELFPGA_CL. */
#if defined(INTELFPGA_CL)
#define FPGA_EMULATOR 0
#else
#define FPGA_EMULATOR 1
#endif
#ifndef STREAM_DEPTH
#if FPGA_EMULATOR
#define STREAM_DEPTH 8192
#else
#define STREAM_DEPTH 2
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

inline data_vec fpga_fill_vec(int zero_point) {
  data_vec d;
#pragma unroll
  for (int v = 0; v < VEC_SIZE; ++v) d.v[v] = (char)zero_point;
  return d;
}

/* Flattened: one loop over total_rows * row_steps iterations, every output row the same
 * row_steps long (the longest of its stream and the prefetches it overlaps), so the loop
 * never drains between rows (PipeCNN flattens its reader the same way). Addresses advance by
 * increments: no multiply per step. */
__attribute__((max_global_work_dim(0)))
#if FPGA_PERSISTENT
__kernel void fpga_conv_reader(FPGA_ACTIVATIONS const data_vec* restrict activations,
                               __global const weight_vec* restrict weight_arena,
                               __global const fpga_descriptor* restrict layers,
                               const int num_layers) {
#else
__kernel void fpga_conv_reader(__global const data_vec* restrict input,
                               __global const weight_vec* restrict weights,
                               const int batch, const int in_height, const int in_width,
                               const int in_channels, const int in_stride_vecs,
                               const int in_offset_vecs,
                               const int out_height, const int out_width,
                               const int kernel_h, const int kernel_w,
                               const int stride_h, const int stride_w,
                               const int dilation_h, const int dilation_w,
                               const int pad_top, const int pad_left,
                               const int input_zero_point, const int groups) {
#endif
  __local data_vec window[2][WIN_BUF_VECS];
  __local weight_vec weight_buf[2][WEIGHT_BUF_VECS];
#if FPGA_PERSISTENT
  /* One layer per iteration (fpga_descriptor.h); the per-layer kernel's body below. */
  FPGA_FOR_EACH_LAYER(FPGA_LAYER_CONV)
  FPGA_ACTIVATIONS const data_vec* restrict input = activations + d[FD_IN_BASE];
  __global const weight_vec* restrict weights = weight_arena + d[FD_WEIGHTS_BASE];
  const int batch = d[FD_BATCH], in_height = d[FD_IN_HEIGHT], in_width = d[FD_IN_WIDTH];
  const int in_channels = d[FD_IN_CHANNELS], in_stride_vecs = d[FD_IN_STRIDE_VECS];
  const int in_offset_vecs = d[FD_IN_OFFSET_VECS];
  const int out_height = d[FD_OUT_HEIGHT], out_width = d[FD_OUT_WIDTH];
  const int kernel_h = d[FD_KERNEL_H], kernel_w = d[FD_KERNEL_W];
  const int stride_h = d[FD_STRIDE_H], stride_w = d[FD_STRIDE_W];
  const int dilation_h = d[FD_DILATION_H], dilation_w = d[FD_DILATION_W];
  const int pad_top = d[FD_PAD_TOP], pad_left = d[FD_PAD_LEFT];
  const int input_zero_point = d[FD_INPUT_ZERO_POINT], groups = d[FD_GROUPS];
#endif

  const int cvecs = (in_channels + VEC_SIZE - 1) / VEC_SIZE;
  const int kvecs = kernel_h * kernel_w * cvecs;          /* reduction length in vectors */
  /* The window holds, per tap row, the input columns the row's taps read: all W of them, or
   * for a 1x1 kernel (KW = 1) only the OW columns at ox * stride - pad (a 1x1 stride-2
   * projection then reloads half a row, not a whole one: no reader stall). */
  const bool compact = kernel_w == 1;
  const int win_cols = compact ? out_width : in_width;
  const int col_first = compact ? -pad_left : 0;           /* source column of slot 0 */
  const int col_src_step = compact ? stride_w : 1;         /* source columns per slot */
  const int row_vecs = kernel_h * win_cols * cvecs;        /* one output row's window */
  const bool window_on_chip = row_vecs <= WIN_BUF_VECS;
  const bool weights_on_chip = kvecs <= WEIGHT_BUF_VECS;
  const int total_rows = groups * batch * out_height;
  const int stream = out_width * kvecs;
  const int row_steps = max(stream, max(window_on_chip ? row_vecs : 0,
                                        weights_on_chip ? kvecs : 0));
  const long total_steps = (long)total_rows * row_steps;
  /* Vector-index increments (per layer, computed once). */
  const int image_row = in_width * in_stride_vecs;         /* one image row */
  const int tap_row = dilation_h * image_row;              /* ky -> ky + 1 */
  const int tap_col = dilation_w * in_stride_vecs;         /* kx -> kx + 1 */
  const int col_step = stride_w * in_stride_vecs;          /* ox -> ox + 1 */
  const int win_tap_row = win_cols * cvecs, win_tap_col = dilation_w * cvecs;
  const int win_col_step = (compact ? 1 : stride_w) * cvecs;
  const int win_ox0 = compact ? 0 : -pad_left * cvecs;      /* window index of ox = 0 */
  const int src_col_vecs = col_src_step * in_stride_vecs;  /* slot -> slot + 1 in memory */
  const int src_row_rewind = win_cols * src_col_vecs;      /* a tap row's slots in memory */
  const data_vec fill = fpga_fill_vec(input_zero_point);

  /* Prologue: the first group's weights and the first row's window. */
  if (weights_on_chip)
    for (int i = 0; i < kvecs; ++i) weight_buf[0][i] = weights[i];
#if FPGA_PERSISTENT
  /* The weights are the host's: loaded while the previous layer drains and signals (the
   * estimator charges what that does not hide). The activations are not: wait for the token
   * of the writer that wrote them (fpga_descriptor.h). */
  if (d[FD_WAIT] == FPGA_LAYER_CONV) (void)read_channel_intel(conv_to_conv_token);
  if (d[FD_WAIT] == FPGA_LAYER_POOL) (void)read_channel_intel(pool_to_conv_token);
  mem_fence(CLK_CHANNEL_MEM_FENCE | CLK_GLOBAL_MEM_FENCE);
#endif
  if (window_on_chip) {
    int y = -pad_top, slot = 0, xs = col_first, cv = 0;
    int addr = y * image_row + col_first * in_stride_vecs + in_offset_vecs;
    for (int i = 0; i < row_vecs; ++i) {
      window[0][i] = (y >= 0 && y < in_height && xs >= 0 && xs < in_width) ? input[addr] : fill;
      ++addr;
      if (++cv == cvecs) {
        cv = 0;
        addr += src_col_vecs - cvecs;
        xs += col_src_step;
        if (++slot == win_cols) {
          slot = 0; xs = col_first; y += dilation_h; addr += tap_row - src_row_rewind;
        }
      }
    }
  }

  /* The row streaming now (t, g, n, oy) and what it overlaps: the next row's window
   * (next_n, next_oy) and, in a group's first row, the next group's weights. */
  int t = 0, g = 0, n = 0, oy = 0, j = 0;
  int next_n = 0, next_oy = 1;
  if (next_oy == out_height) { next_oy = 0; if (++next_n == batch) next_n = 0; }
  int prefetch_window = (window_on_chip && total_rows > 1) ? row_vecs : 0;
  int prefetch_weights = (weights_on_chip && groups > 1) ? kvecs : 0;
  int group_weights = 0;                                  /* g * kvecs */
  int y0 = -pad_top;                                      /* oy * stride_h - pad_top */
  int row_base = y0 * image_row + in_offset_vecs;         /* vector index of (n, y0, 0) */
  /* window prefetch position: image row p_y, slot p_x (source column p_xs), vector p_cv,
   * address p_addr */
  int p_y = next_oy * stride_h - pad_top, p_x = 0, p_xs = col_first, p_cv = 0;
  int p_addr = (next_n * in_height + p_y) * image_row + col_first * in_stride_vecs +
               in_offset_vecs;
  /* stream position: pixel ox, tap (ky, kx), vector cv; k = the weight vector */
  int ox = 0, ky = 0, kx = 0, cv = 0, k = 0;
  int x_ox = -pad_left, x_tap = 0;                        /* x = x_ox + x_tap */
  int a_ox = -pad_left * in_stride_vecs, a_tap = 0, a_ky = 0;  /* global address parts */
  int w_ox = win_ox0, w_tap = 0, w_ky = 0;                /* window index parts */
  int y_ky = 0;                                           /* ky * dilation_h */

  FPGA_IVDEP
  for (long i = 0; i < total_steps; ++i) {
    const int cur = t & 1;
    if (j < prefetch_window) {
      window[cur ^ 1][j] = (p_y >= 0 && p_y < in_height && p_xs >= 0 && p_xs < in_width)
                               ? input[p_addr] : fill;
      ++p_addr;
      if (++p_cv == cvecs) {
        p_cv = 0;
        p_addr += src_col_vecs - cvecs;
        p_xs += col_src_step;
        if (++p_x == win_cols) {
          p_x = 0; p_xs = col_first; p_y += dilation_h; p_addr += tap_row - src_row_rewind;
        }
      }
    }
    if (j < prefetch_weights) weight_buf[(g + 1) & 1][j] = weights[group_weights + kvecs + j];
    if (j < stream) {
      const int x = x_ox + x_tap;
      const int y = y0 + y_ky;
      const bool inside_x = x >= 0 && x < in_width;
      data_vec d;
      if (window_on_chip)  /* a compact window holds the zero point where x is outside */
        d = (compact || inside_x) ? window[cur][w_ky + w_ox + w_tap + cv] : fill;
      else
        d = (inside_x && y >= 0 && y < in_height) ? input[row_base + a_ky + a_ox + a_tap + cv]
                                                  : fill;
      const weight_vec w = weights_on_chip ? weight_buf[g & 1][k] : weights[group_weights + k];
      write_channel_intel(data_ch, d);
      write_channel_intel(weight_ch, w);
      ++k;
      if (++cv == cvecs) {
        cv = 0;
        x_tap += dilation_w; a_tap += tap_col; w_tap += win_tap_col;
        if (++kx == kernel_w) {
          kx = 0; x_tap = 0; a_tap = 0; w_tap = 0;
          y_ky += dilation_h; a_ky += tap_row; w_ky += win_tap_row;
          if (++ky == kernel_h) {
            ky = 0; y_ky = 0; a_ky = 0; w_ky = 0; k = 0;
            ++ox; x_ox += stride_w; a_ox += col_step; w_ox += win_col_step;
          }
        }
      }
    }
    if (++j == row_steps) { /* the next output row */
      j = 0;
      ++t;
      ox = 0; x_ox = -pad_left; a_ox = -pad_left * in_stride_vecs; w_ox = win_ox0;
      const bool new_group = next_n == 0 && next_oy == 0;
      if (new_group) { ++g; group_weights += kvecs; }
      n = next_n; oy = next_oy;
      y0 = oy * stride_h - pad_top;
      row_base = (n * in_height + y0) * image_row + in_offset_vecs;
      if (++next_oy == out_height) { next_oy = 0; if (++next_n == batch) next_n = 0; }
      prefetch_window = (window_on_chip && t + 1 < total_rows) ? row_vecs : 0;
      prefetch_weights = (weights_on_chip && new_group && g + 1 < groups) ? kvecs : 0;
      p_y = next_oy * stride_h - pad_top; p_x = 0; p_xs = col_first; p_cv = 0;
      p_addr = (next_n * in_height + p_y) * image_row + col_first * in_stride_vecs +
               in_offset_vecs;
    }
  }
#if FPGA_PERSISTENT
  FPGA_END_LAYERS
#endif
}

#if !FPGA_SYSTOLIC
__attribute__((max_global_work_dim(0)))
#if FPGA_PERSISTENT
__kernel void fpga_conv_core(__global const fpga_descriptor* restrict layers,
                             const int num_layers) {
#else
__kernel void fpga_conv_core(const int outputs, const int kvecs) {
#endif
#if FPGA_PERSISTENT
  FPGA_FOR_EACH_LAYER(FPGA_LAYER_CONV)
  const int outputs = d[FD_OUTPUTS], kvecs = d[FD_KVECS];
#endif
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
#if FPGA_PERSISTENT
  FPGA_END_LAYERS
#endif
}
#else
/* The systolic core (FPGA_SYSTOLIC): the data vector is passed lane to lane, one lane per
 * cycle, instead of being broadcast to every lane (no fan-out of VEC bytes to LANE_NUM
 * multiplier trees: the wires stay short, as in Intel's DLA). Lane l therefore works l cycles
 * behind lane 0: its weights wait l cycles in a per-lane delay line (a ring of SYS_DEPTH
 * vectors in on-chip memory, one write and one read per cycle), its "pixel done" flag
 * travels with the data, and its finished sum waits LANE_NUM - 1 - l cycles in a second
 * ring so every lane of a pixel leaves together. Each lane sums the same products in the
 * same order as the broadcast core: the same bits. The loop runs LANE_NUM - 1 cycles past
 * the last input to drain the skew (a trip count known before it starts). */
#if LANE_NUM <= 8
#define SYS_DEPTH 8
#elif LANE_NUM <= 16
#define SYS_DEPTH 16
#elif LANE_NUM <= 32
#define SYS_DEPTH 32
#elif LANE_NUM <= 64
#define SYS_DEPTH 64
#elif LANE_NUM <= 128
#define SYS_DEPTH 128
#elif LANE_NUM <= 256
#define SYS_DEPTH 256
#else
#define SYS_DEPTH 512
#endif
#define SYS_MASK (SYS_DEPTH - 1)

__attribute__((max_global_work_dim(0)))
#if FPGA_PERSISTENT
__kernel void fpga_conv_core(__global const fpga_descriptor* restrict layers,
                             const int num_layers) {
#else
__kernel void fpga_conv_core(const int outputs, const int kvecs) {
#endif
  __local data_vec weight_ring[LANE_NUM][SYS_DEPTH];  /* lane l's weights, l cycles late */
  __local int sum_ring[LANE_NUM][SYS_DEPTH];          /* lane l's sums, LANE-1-l cycles late */
#if FPGA_PERSISTENT
  FPGA_FOR_EACH_LAYER(FPGA_LAYER_CONV)
  const int outputs = d[FD_OUTPUTS], kvecs = d[FD_KVECS];
#endif
  bool done_ring[SYS_DEPTH];                          /* lane 0 finished a pixel then */
  int acc[LANE_NUM][ACC_DEPTH];
  data_vec chain[LANE_NUM];      /* chain[l]: the data vector lane l multiplies this cycle */
  bool last_chain[LANE_NUM];     /* ... and whether it is its pixel's last */
#pragma unroll
  for (int l = 0; l < LANE_NUM; ++l) {
    last_chain[l] = false;
#pragma unroll
    for (int v = 0; v < VEC_SIZE; ++v) chain[l].v[v] = 0;
#pragma unroll
    for (int s = 0; s < ACC_DEPTH; ++s) acc[l][s] = 0;
  }
#pragma unroll
  for (int s = 0; s < SYS_DEPTH; ++s) done_ring[s] = false;

  const long steps = (long)outputs * kvecs;
  const long cycles = steps + LANE_NUM - 1;
  int k = 0, ptr = 0;
  for (long i = 0; i < cycles; ++i) {
    const bool in = i < steps;
    data_vec d = chain[LANE_NUM - 1];     /* any value: drain cycles multiply zero weights */
    weight_vec w;
    if (in) {
      d = read_channel_intel(data_ch);
      w = read_channel_intel(weight_ch);
    } else {
#pragma unroll
      for (int l = 0; l < LANE_NUM; ++l)
#pragma unroll
        for (int v = 0; v < VEC_SIZE; ++v) w.lane[l].v[v] = 0;
    }
    const bool last = in && k == kvecs - 1;
#pragma unroll
    for (int l = LANE_NUM - 1; l > 0; --l) {
      chain[l] = chain[l - 1];
      last_chain[l] = last_chain[l - 1];
    }
    chain[0] = d;
    last_chain[0] = last;
#pragma unroll
    for (int l = 0; l < LANE_NUM; ++l) {
      weight_ring[l][ptr] = w.lane[l];
      const data_vec wl = weight_ring[l][(ptr - l) & SYS_MASK];
      int dot = 0;
#pragma unroll
      for (int v = 0; v < VEC_SIZE; ++v) dot += (int)chain[l].v[v] * (int)wl.v[v];
      const int sum = acc[l][ACC_DEPTH - 1] + dot;
#pragma unroll
      for (int s = ACC_DEPTH - 1; s > 0; --s) acc[l][s] = acc[l][s - 1];
      acc[l][0] = sum;
      int total = 0;
      if (last_chain[l]) { /* this lane's pixel is done: fold, restart from zero */
#pragma unroll
        for (int s = 0; s < ACC_DEPTH; ++s) {
          total += acc[l][s];
          acc[l][s] = 0;
        }
      }
      sum_ring[l][ptr] = total;
    }
    done_ring[ptr] = last_chain[0];
    /* lane 0 finished LANE_NUM - 1 cycles ago: every lane of that pixel has finished now */
    if (done_ring[(ptr - (LANE_NUM - 1)) & SYS_MASK] && i >= LANE_NUM - 1) {
      acc_vec out;
#pragma unroll
      for (int l = 0; l < LANE_NUM; ++l)
        out.lane[l] = sum_ring[l][(ptr - (LANE_NUM - 1 - l)) & SYS_MASK];
      write_channel_intel(acc_ch, out);
    }
    ptr = (ptr + 1) & SYS_MASK;
    if (in) k = last ? 0 : k + 1;
  }
#if FPGA_PERSISTENT
  FPGA_END_LAYERS
#endif
}
#endif

/* One lane's requantization, in the modes compiled in (FPGA_CONV_*). With one mode there is
 * no run-time choice: use_f32 is not read. With FPGA_CONV_RESIDUAL every layer takes the add
 * datapath; a layer without a residual adds a side of 0 (its side input reads the zero
 * point, and the host passes a residual multiplier that scales 0 to 0), the same bits. */
inline char fpga_conv_requantize(int value, int multiplier, int shift, int side,
                                 int residual_zero_point, int residual_multiplier,
                                 int residual_shift, int zero_point, int lo, int hi,
                                 int use_f32) {
#if FPGA_CONV_RESIDUAL
  const char fixed = accel_requantize_add(value, multiplier, shift, side, residual_zero_point,
                                          residual_multiplier, residual_shift, zero_point, lo, hi);
#elif FPGA_CONV_FIXED
  const char fixed = accel_requantize(value, multiplier, shift, zero_point, lo, hi);
#endif
#if FPGA_CONV_F32
  const char f32 = accel_requantize_f32(value, multiplier, shift, zero_point, lo, hi);
#endif
#if FPGA_CONV_FIXED && FPGA_CONV_F32
  return use_f32 ? f32 : fixed;   /* a bitstream with both: two datapaths per lane */
#elif FPGA_CONV_F32
  return f32;
#else
  return fixed;
#endif
}

/* The per-layer mode argument reaches the lanes only in a bitstream with both datapaths. */
#if FPGA_CONV_FIXED && FPGA_CONV_F32
#define FPGA_CONV_SELECT(requant_f32) (requant_f32)
#else
#define FPGA_CONV_SELECT(requant_f32) 0
#endif

__attribute__((max_global_work_dim(0)))
#if FPGA_PERSISTENT
__kernel void fpga_conv_epilogue(FPGA_ACTIVATIONS const char* restrict activations,
                                 __global const int* restrict int_arena,
                                 __global const fpga_descriptor* restrict layers,
                                 const int num_layers) {
  FPGA_FOR_EACH_LAYER(FPGA_LAYER_CONV)
  __global const int* restrict bias = int_arena + d[FD_BIAS_BASE];
  __global const int* restrict multipliers = int_arena + d[FD_MULT_BASE];
  __global const int* restrict shifts = int_arena + d[FD_SHIFT_BASE];
  FPGA_ACTIVATIONS const char* restrict residual = activations + d[FD_RESIDUAL_BASE];
  const int groups = d[FD_GROUPS], pixels = d[FD_PIXELS];
  const int out_channels_padded = d[FD_OUT_CHANNELS_PADDED];
  const int output_zero_point = d[FD_OUTPUT_ZERO_POINT], lo = d[FD_LO], hi = d[FD_HI];
  const int has_residual = d[FD_HAS_RESIDUAL], residual_stride = d[FD_RESIDUAL_STRIDE];
  const int residual_zero_point = d[FD_RESIDUAL_ZERO_POINT];
  const int residual_multiplier = d[FD_RESIDUAL_MULTIPLIER];
  const int residual_shift = d[FD_RESIDUAL_SHIFT];
#if FPGA_CONV_FIXED && FPGA_CONV_F32  /* the mode select exists only with both datapaths */
  const int requant_f32 = d[FD_REQUANT_F32];
#endif
#else
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
#endif
  /* EPILOGUE_STEPS cycles per output vector, EPILOGUE_LANES lanes each: the requantize
   * datapaths are EPILOGUE_LANES wide, not LANE_NUM (the core spends kvecs >= EPILOGUE_STEPS
   * cycles on each vector, so the narrow epilogue keeps up; the estimator charges any layer
   * where it does not). The sums shift down and the results shift in at the top, so every
   * lane's datapath always reads lane 0..EPILOGUE_LANES-1: no lane multiplexer.
   * The per-channel parameters are read where they are used: EPILOGUE_LANES consecutive
   * words, one wide cached load per step. (Copying them into private arrays once per group
   * is what a board build would do, but Intel's FPGA emulator 2025.0 then returns stale
   * values at random, so the portable form is kept.) */
  const long steps = (long)groups * pixels * EPILOGUE_STEPS;
  int p = 0, r = 0;
  int c0 = 0;                                   /* g * LANE_NUM + r * EPILOGUE_LANES */
  int group_c = 0;                              /* g * LANE_NUM */
  int res_base = 0;                             /* p * residual_stride + c0 */
  int res_pixel = 0;                            /* p * residual_stride + g * LANE_NUM */
  acc_vec acc;
  result_vec out;
  for (long i = 0; i < steps; ++i) {
    if (r == 0) acc = read_channel_intel(acc_ch);
    char part[EPILOGUE_LANES];
#pragma unroll
    for (int e = 0; e < EPILOGUE_LANES; ++e) {
      const int c = c0 + e;
      const int value = acc.lane[e] + bias[c];
#if FPGA_CONV_RESIDUAL
      const int side = (has_residual && c < out_channels_padded) ? residual[res_base + e]
                                                                 : residual_zero_point;
#else
      const int side = residual_zero_point;
#endif
      part[e] = fpga_conv_requantize(value, multipliers[c], shifts[c], side,
                                     residual_zero_point, residual_multiplier, residual_shift,
                                     output_zero_point, lo, hi, FPGA_CONV_SELECT(requant_f32));
    }
#pragma unroll
    for (int l = 0; l < LANE_NUM - EPILOGUE_LANES; ++l) {
      acc.lane[l] = acc.lane[l + EPILOGUE_LANES];
      out.lane[l] = out.lane[l + EPILOGUE_LANES];
    }
#pragma unroll
    for (int e = 0; e < EPILOGUE_LANES; ++e) out.lane[LANE_NUM - EPILOGUE_LANES + e] = part[e];
    c0 += EPILOGUE_LANES;
    res_base += EPILOGUE_LANES;
    if (++r == EPILOGUE_STEPS) {    /* the vector is done */
      r = 0;
      write_channel_intel(result_ch, out);
      c0 = group_c;
      res_pixel += residual_stride;
      if (++p == pixels) { p = 0; group_c += LANE_NUM; c0 = group_c; res_pixel = group_c; }
      res_base = res_pixel;
    }
  }
#if FPGA_PERSISTENT
  FPGA_END_LAYERS
#endif
}

/* Aligned OUT_STORE_BYTES-wide stores (out_vec), out_stride_units and out_offset_units in
 * those units. Every store unit of a lane group below out_channels_padded is written whole;
 * the units past it (the last group of a layer whose padded channels are not a multiple of
 * LANE_NUM) are not: one predicate per unit, fixed for the whole group. */
__attribute__((max_global_work_dim(0)))
#if FPGA_PERSISTENT
__kernel void fpga_conv_writer(FPGA_ACTIVATIONS out_vec* restrict activations,
                               __global const fpga_descriptor* restrict layers,
                               const int num_layers) {
  FPGA_FOR_EACH_LAYER(FPGA_LAYER_CONV)
  FPGA_ACTIVATIONS out_vec* restrict output = activations + d[FD_OUT_BASE];
  const int groups = d[FD_GROUPS], pixels = d[FD_PIXELS];
  const int out_channels_padded = d[FD_OUT_CHANNELS_PADDED];
  const int out_stride_units = d[FD_OUT_STRIDE_UNITS];
  const int out_offset_units = d[FD_OUT_OFFSET_UNITS];
#else
__kernel void fpga_conv_writer(__global out_vec* restrict output, const int groups,
                               const int pixels, const int out_channels_padded,
                               const int out_stride_units, const int out_offset_units) {
#endif
  int p = 0;
  int base = out_offset_units;               /* (p * out_stride + out_offset + g * LANE) / unit */
  int group_base = out_offset_units;         /* (out_offset + g * LANE) / unit */
  int left = out_channels_padded / OUT_STORE_BYTES;   /* units from this group on */
  int units = min(OUT_STORES, left);                   /* this group's */
  for (int i = 0; i < groups * pixels; ++i) {
    const result_vec r = read_channel_intel(result_ch);
#pragma unroll
    for (int u = 0; u < OUT_STORES; ++u) {
      out_vec o;
#pragma unroll
      for (int b = 0; b < OUT_STORE_BYTES; ++b) o.v[b] = r.lane[u * OUT_STORE_BYTES + b];
      if (u < units) output[base + u] = o;
    }
    base += out_stride_units;
    if (++p == pixels) {
      p = 0;
      group_base += OUT_STORES; base = group_base;
      left -= OUT_STORES; units = min(OUT_STORES, left);
    }
  }
#if FPGA_PERSISTENT
  /* The layer is in memory: tell the next layer's reader (fpga_descriptor.h). */
  mem_fence(CLK_GLOBAL_MEM_FENCE | CLK_CHANNEL_MEM_FENCE);
  if (d[FD_SIGNAL] == FPGA_LAYER_CONV) write_channel_intel(conv_to_conv_token, layer);
  if (d[FD_SIGNAL] == FPGA_LAYER_POOL) write_channel_intel(conv_to_pool_token, layer);
  FPGA_END_LAYERS
#endif
}

#endif /* ACCEL_FPGA */
