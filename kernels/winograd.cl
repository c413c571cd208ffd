/* ==================================================================================
 * winograd.cl: int8 3x3 stride-1 convolution as integer Winograd F(2x2, 3x3), NDRange
 * shape, for the CPU OpenCL runtimes (the FPGA pipeline keeps the direct conv of
 * fpga_conv.cl; the FPGA emulator runs this file only to check it).
 *
 * Exact, not approximate: every transform is an integer matrix, so the int32 result is the
 * direct conv's accumulator bit for bit (accel/ops/winograd.py has the maths and its numpy
 * model). Per 4x4 input tile x (stride 2) and 2x2 output tile, with G2 = 2G:
 *   V  = B^T x B          int16, |V| <= 512; out-of-bounds taps read the pad row (x = zx)
 *   M  = sum over input channels of U' * V, U' = G2 g G2^T from the host (int16, = 4U)
 *   Y' = A^T M A = 4 x sum(x * w);   acc = (Y' >> 2) + bias'
 * The zero point never enters the loop: B^T J B (J all ones) is 4 at position (1, 1) and 0
 * elsewhere, and U'(1, 1) = sum(g), so subtracting zx from every tap is the same as the
 * bias fold bias' = bias - zx * sum(w) that conv.cl uses, done by the host. Then conv.cl's
 * epilogue (quant.h). M and Y' are summed as unsigned ints (modulo 2^32, defined
 * behaviour): Y' mod 2^32 is exact whenever the true Y' fits int32, which the host checks
 * from the weights (winograd.py, overflow_ineligibility). 16 multiplies per 2x2 outputs and
 * input channel instead of 36.
 *
 * One fused kernel, no intermediate buffers (V and M never leave the work-item): separate
 * transform kernels would write and read V, 16 int16 per 4 input pixels (8x the input's
 * bytes), and M, 16 int32 per 4 outputs, through memory for every layer. A work-item owns
 * TILES tiles along an output row pair x 16 output channels. The 16 tile positions are done
 * one row of the 4x4 domain at a time (4 passes over the input channels), so a pass keeps
 * TILES x 4 accumulators (16 for TILES 4) in registers instead of TILES x 16, and each U'
 * load is shared by the TILES tiles; a pass reads the 2 input rows its V row needs and
 * folds its M row into Y' (4 vectors per tile) at its end. The inner loop is then what
 * conv.cl's is (broadcast, vpmaddwd, add), 2.25x fewer times: on PoCL it issues about 2.6-2.9
 * G vpmaddwd/s per core, near the 3 G/s of int8_peak.c's vpdpbusd (conv.cl: about 1.8 G/s).
 *   - x86 with AVX-512BW or AVX2 (PoCL): as conv.cl's X86_PAIR_MAC path, one vpmaddwd zmm
 *     (two ymm) per channel pair and position: U' (16 outputs x the pair, int16) against the V pair broadcast.
 *   - everywhere else (Intel's CPU runtime, the FPGA emulator, -DX86_PAIR_MAC=0): portable
 *     int16 x int products, 16 outputs per multiply. Both paths give the same bits.
 *
 *   x        NHWC int8 as in conv.cl: pixel (n, y, x) at ((n*H + y)*W + x)*in_stride +
 *            in_offset, cin_pad (multiple of 16) channels, all read (padded input channels
 *            meet zero weights).
 *   pad_row  cin_pad bytes equal to zx (out-of-bounds taps, so x - zx = 0).
 *   weights  U', int16 [cout_pad/16][4 rows][cin_pad/2][4 columns][16 outputs][2 inputs]:
 *            a pass (row) reads one contiguous stream; for one channel pair, 4 x 64 bytes
 *            hold the 4 positions' (channel 2j, 2j+1) per output channel (vpmaddwd order).
 *   bias     int32 [cout_pad] = bias - zx * sum(w), reduced modulo 2^32 (see above).
 *   multipliers, shifts, out, residual, REQUANT_F32: exactly as conv.cl.
 *
 * NDRange: global (ceil(ceil(OW/2) / TILES), N * ceil(OH/2), cout_pad/16), the output
 * channel block slowest: work-items that run one after the other share their U' (up to
 * 256 KiB per block, 3.6x conv.cl's int8 weights) in cache instead of each streaming it
 * from memory (7x7x512 has 8 MiB of U': with the block fastest it measured no faster than
 * conv.cl, with it slowest 1.2-1.3x faster). A partial tile
 * (odd OH or OW, or a row's last work-item) computes from the pad row and skips its
 * stores.
 *
 * Knobs (-D, defaults below; per-device values in kernels/tuning.json, whose winograd.cl
 * entry also holds the scheduler's WINOGRAD switch, which is not a -D knob):
 *   TILES         2x2 output tiles per work-item along the row
 *   X86_PAIR_MAC  1: the vpmaddwd pair path where the target has AVX-512BW or AVX2; 0: never
 *   PAIR_MAC_EMULATE  1: the pair path in plain C (tests its indexing on any host)
 *   HAS_RESIDUAL  1: fused residual add in the epilogue
 *   REQUANT_F32   1: onnxruntime's float32 requantization (quant.h), no residual
 * ================================================================================== */
#include "conv_knobs.h"
#include "quant_vec.h"

#ifndef TILES
#define TILES 2
#endif

#if TILES < 1
#error "TILES must be at least 1"
#endif

#define IN_COLS (2 * TILES + 2)   /* input columns under TILES overlapping 4-wide tiles */
#define PAIR_SHORTS (4 * 32)      /* U' shorts per channel pair in a row: 4 positions */

/* B^T's rows (and B's columns) as a + s*b of two inputs: row 0 = d0 - d2, 1 = d1 + d2,
 * 2 = d2 - d1, 3 = d1 - d3. */
#define ACCEL_BT(i, d0, d1, d2, d3) \
  ((i) == 0 ? (d0) - (d2) : (i) == 1 ? (d1) + (d2) : (i) == 2 ? (d2) - (d1) : (d1) - (d3))

__kernel void winograd_conv3x3_nhwc(__global const char* restrict x,
                                    __global const char* restrict pad_row,
                                    __global const short* restrict weights,
                                    __global const int* restrict bias,
                                    __global const int* restrict multipliers,
                                    __global const int* restrict shifts,
                                    __global char* restrict out,
                                    __global const char* restrict residual,
                                    const int in_height, const int in_width, const int cin_pad,
                                    const int in_stride, const int in_offset,
                                    const int out_height, const int out_width,
                                    const int out_stride, const int out_offset,
                                    const int res_stride, const int pad_top,
                                    const int pad_left, const int output_zero_point,
                                    const int lo, const int hi,
                                    const int residual_zero_point,
                                    const int residual_multiplier, const int residual_shift) {
  const int ox0 = get_global_id(0) * (2 * TILES);
  const int row = get_global_id(1);  /* n * tiles_y + tile row */
  const int block = get_global_id(2);
  const int tiles_y = (out_height + 1) / 2;
  const int n = row / tiles_y;
  const int oy0 = (row - n * tiles_y) * 2;
  const int cout0 = block * COUT_BLOCK;

  /* The 4 x IN_COLS input pixels of the work-item's tiles: their bytes, or the pad row. */
  const __global char* pixel[4][IN_COLS];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int iy = oy0 - pad_top + i;
    const bool row_in = iy >= 0 && iy < in_height;
    const size_t row_base = ((size_t)n * in_height + iy) * in_width;
#pragma unroll
    for (int j = 0; j < IN_COLS; ++j) {
      const int ix = ox0 - pad_left + j;
      pixel[i][j] = (row_in && ix >= 0 && ix < in_width)
                        ? x + (row_base + ix) * in_stride + in_offset
                        : pad_row;
    }
  }

  /* Y' per tile: outputs (0,0), (0,1), (1,0), (1,1), summed modulo 2^32. */
  uint16 y[TILES][4];
#pragma unroll
  for (int t = 0; t < TILES; ++t)
#pragma unroll
    for (int q = 0; q < 4; ++q) y[t][q] = (uint16)0;

  /* U' of this block of output channels: 16 positions x cin_pad x 16 outputs. */
  const __global short* w_block = weights + (size_t)block * 16 * cin_pad * COUT_BLOCK;
#pragma unroll
  for (int r = 0; r < 4; ++r) {
    /* Pass r: row r of V (from 2 input rows) against row r of U', into row r of M. */
    uint16 m[TILES][4];
#pragma unroll
    for (int t = 0; t < TILES; ++t)
#pragma unroll
      for (int q = 0; q < 4; ++q) m[t][q] = (uint16)0;
    const __global short* w_row = w_block + (size_t)r * (cin_pad / 2) * PAIR_SHORTS;
    for (int c = 0; c < cin_pad; c += 16) {
      /* Row r of B^T x for every input column, 16 channels in int16 lanes. */
      short16 e[IN_COLS];
#pragma unroll
      for (int j = 0; j < IN_COLS; ++j) {
#define ACCEL_D(i) convert_short16(vload16(0, pixel[i][j] + c))
        if (r == 0) e[j] = ACCEL_D(0) - ACCEL_D(2);
        else if (r == 1) e[j] = ACCEL_D(1) + ACCEL_D(2);
        else if (r == 2) e[j] = ACCEL_D(2) - ACCEL_D(1);
        else e[j] = ACCEL_D(1) - ACCEL_D(3);
#undef ACCEL_D
      }
      /* ... times B: row r of V for each tile (columns 2t .. 2t+3). */
#if ACCEL_PAIR_MAC
      uint8 v[TILES][4];
#pragma unroll
      for (int t = 0; t < TILES; ++t)
#pragma unroll
        for (int q = 0; q < 4; ++q)
          v[t][q] = as_uint8(ACCEL_BT(q, e[2 * t], e[2 * t + 1], e[2 * t + 2], e[2 * t + 3]));
#else
      short v[TILES][4][16];
#pragma unroll
      for (int t = 0; t < TILES; ++t)
#pragma unroll
        for (int q = 0; q < 4; ++q)
          vstore16(ACCEL_BT(q, e[2 * t], e[2 * t + 1], e[2 * t + 2], e[2 * t + 3]), 0, v[t][q]);
#endif
      const __global short* w_c = w_row + (size_t)(c / 2) * PAIR_SHORTS;
#pragma unroll
      for (int q = 0; q < 4; ++q) {
#pragma unroll
        for (int k = 0; k < 8; ++k) {
          const __global short* w_pair = w_c + k * PAIR_SHORTS + q * 32;
          const short16 wa = vload16(0, w_pair), wb = vload16(1, w_pair);
#if ACCEL_PAIR_MAC
          const accel_short32 wv = __builtin_shufflevector(wa, wb, ACCEL_IOTA32);
#pragma unroll
          for (int t = 0; t < TILES; ++t)
            m[t][q] += as_uint16(accel_pmaddwd(
                wv, __builtin_astype((uint16)v[t][q][k], accel_short32)));
#else
          /* Channel 2k and 2k+1 of the pair, each over the 16 output channels. */
          const int16 w0 = convert_int16((short16)(wa.even, wb.even));
          const int16 w1 = convert_int16((short16)(wa.odd, wb.odd));
#pragma unroll
          for (int t = 0; t < TILES; ++t)
            m[t][q] += as_uint16(w0 * (int)v[t][q][2 * k] + w1 * (int)v[t][q][2 * k + 1]);
#endif
        }
      }
    }
    /* Fold row r of M into Y' = A^T M A: (M A)[r] = (m0 + m1 + m2, m1 - m2 - m3), added to
     * Y' row 0 with A^T[0][r] = (1, 1, 1, 0) and row 1 with A^T[1][r] = (0, 1, -1, -1). */
#pragma unroll
    for (int t = 0; t < TILES; ++t) {
      const uint16 ma0 = m[t][0] + m[t][1] + m[t][2], ma1 = m[t][1] - m[t][2] - m[t][3];
      if (r < 3) {
        y[t][0] += ma0;
        y[t][1] += ma1;
      }
      if (r == 1) {
        y[t][2] += ma0;
        y[t][3] += ma1;
      } else if (r >= 2) {
        y[t][2] -= ma0;
        y[t][3] -= ma1;
      }
    }
  }

  /* Epilogue: Y' / 4 + bias, then conv.cl's requantize (+ residual), clamp, store 16
   * channels per output pixel inside the image; 16 lanes at a time (quant_vec.h). */
  const uint16 bias_vec = as_uint16(vload16(0, bias + cout0));
  const int16 mult = vload16(0, multipliers + cout0), shift = vload16(0, shifts + cout0);
#pragma unroll
  for (int t = 0; t < TILES; ++t) {
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      const int oy = oy0 + q / 2, ox = ox0 + 2 * t + q % 2;
      if (oy >= out_height || ox >= out_width) continue;
      const size_t opix = ((size_t)n * out_height + oy) * out_width + ox;
      /* Y' / 4 is exact (an arithmetic shift of a multiple of 4); + bias' modulo 2^32. */
      const int16 acc = as_int16(as_uint16(as_int16(y[t][q]) >> 2) + bias_vec);
      __global char* o = out + opix * out_stride + out_offset + cout0;
#if HAS_RESIDUAL
      const char16 res = vload16(0, residual + opix * res_stride + cout0);
      accel_store16(accel_requantize_add16(acc, mult, shift, res, residual_zero_point,
                                           residual_multiplier, residual_shift,
                                           output_zero_point, lo, hi), o);
#elif REQUANT_F32
      accel_store16(accel_requantize_f32_16(acc, mult, shift, output_zero_point, lo, hi), o);
#else
      accel_store16(accel_requantize16(acc, mult, shift, output_zero_point, lo, hi), o);
#endif
    }
  }
}
