/* ==================================================================================
 * conv.cl: int8 2-D convolution (and dense layers, as 1x1 convs), NDRange shape.
 *
 * One work-item computes a tile of TILE_W output pixels along a row x COUT_BLOCKS blocks of
 * 16 output channels, keeping TILE_W x COUT_BLOCKS int16 accumulators (one int lane per
 * output channel) in registers; with 2 blocks each input pair broadcast feeds two
 * multiply-adds. For
 * every tap (ky, kx) it walks the input channels CIN_STEP at a time, a pair of channels per
 * step: the weights of the pair for the 16 output channels (32 bytes) are loaded once and
 * shared by all TILE_W pixels, and each pixel's input pair is broadcast against them.
 *   - x86 with AVX-512BW or AVX2 in the compiler's target (PoCL): one vpmaddwd zmm (two
 *     ymm on AVX2) does the 32 MACs of a pair (conv_knobs.h's accel_pmaddwd); the inputs are
 *     widened 16 channels at a time and the pairs broadcast. LLVM never forms this from
 *     portable code, because one operand is a broadcast.
 *   - x86 with AVX-512 VNNI (ACCEL_CPU_ISA 4: Intel's CPU runtime asked for a VNNI target):
 *     four input channels per step, one vpdpbusd zmm per pixel and block (conv_knobs.h's
 *     accel_dpbusd): the weights, quad-packed and offset to unsigned by the host, against
 *     each pixel's four input bytes broadcast straight from memory (signed, as stored); one
 *     vpdpbusd xmm per pixel and step sums those bytes, and the epilogue takes 128 x that
 *     sum off (the weights' offset). No per-use flip or shuffle: about 71 vector uops per
 *     56 vpdpbusd at TILE_W 7 x 2 blocks, against 120 with the pair packing.
 *   - everywhere else (Intel's CPU runtime, the FPGA emulator, or -DX86_PAIR_MAC=0):
 *     ACCEL_MAC, 16 MACs per multiply (LLVM emits vpmaddwd with a zero upper half, or
 *     whatever the target has). Both paths give the same bits.
 * The pair and portable paths read the input as x + 128 (x ^ 0x80: unsigned, which is what
 * lets LLVM use vpmaddwd); the host folds the extra 128*sum(w) into the bias. The quad path
 * reads x as it is and its weights as w + 128 (see above); its bias has no 128*sum(w). The
 * epilogue applies quant.h's requantization 16 lanes at a time (quant_vec.h, both modes).
 *
 *   x        NHWC int8: pixel (n, y, x) starts at ((n*H + y)*W + x)*in_stride + in_offset
 *            and holds cin_pad (a multiple of 16) channels; the kernel reads the first
 *            cin_used (the real channel count rounded up to CIN_STEP): a 3-channel image
 *            with CIN_STEP 4 does 4/3 of the useful MACs, not 16/3.
 *   pad_row  cin_pad bytes, all equal to the input zero point zx: out-of-bounds taps read
 *            it, so the folded bias is exact at the borders.
 *   weights  int8 packed by the host as [cout_pad/16][KH][KW][cin_pad/2][16][2]: for one
 *            block of 16 output channels, tap and pair of input channels, 32 adjacent
 *            bytes hold (channel 2j, channel 2j+1) for each output channel in turn (the
 *            operand order of vpmaddwd). Padded channels are zero. With QUAD_PACKED=1 (the
 *            quad path) instead uint8 w + 128 as [cout_pad/16][KH][KW][cin_pad/4][16][4]:
 *            four input channels per output channel (vpdpbusd's order); padded ones 128.
 *   bias     int32 [cout_pad] = bias - (zx + 128)*sum(w) (QUAD_PACKED: bias - zx*sum(w)),
 *            reduced modulo 2^32. The accumulation is modulo 2^32 too and the true
 *            accumulator fits int32, so the final sum is exact.
 *   multipliers, shifts  int32 [cout_pad] (quant.h); padded channels get (2^30, 1). With
 *            REQUANT_F32=1 they hold float32 multipliers as (mantissa, shift) pairs
 *            (quant.h's accel_requantize_f32); padded channels get (2^23, 1).
 *   out      int8; pixel (n, oy, ox) at ((n*OH + oy)*OW + ox)*out_stride + out_offset, so
 *            a conv can write its channels into a slice of a concat tensor.
 *   residual int8 (only with HAS_RESIDUAL=1): pixel at (...)*res_stride, cout_pad channels,
 *            added in the epilogue with its own zero point, multiplier and shift.
 *
 * Tap (ky, kx) of output pixel (oy, ox) reads input (oy*stride_h - pad_top + ky*dilation_h,
 * ox*stride_w - pad_left + kx*dilation_w): dilation spreads the taps (SSD's fc6: 3x3,
 * dilation 6) at the cost of a 3x3 kernel, not of its zero-inflated 13x13.
 *
 * NDRange: global (cout_pad/16/COUT_BLOCKS, ceil(OW/TILE_W), N*OH); work-items past OW
 * compute from the pad row and skip their stores.
 *
 * Knobs (-D, defaults below; per-device values in kernels/tuning.json):
 *   TILE_W        output pixels per work-item (accumulator registers)
 *   CIN_STEP      input channels per unrolled inner step: 2, 4, 8 or 16
 *   COUT_BLOCKS   blocks of 16 output channels per work-item: 1 or 2 (2 needs cout_pad
 *                 divisible by 32; the host picks it per layer, accel/ops/conv.py)
 *   X86_PAIR_MAC  1: the vpmaddwd pair path where the target has AVX-512BW or AVX2; 0: never
 *   PAIR_MAC_EMULATE  1: the pair path in plain C (tests its indexing on any host)
 *   X86_QUAD_MAC  1: the vpdpbusd quad path where the host has AVX-512 VNNI (CIN_STEP 4, 8
 *                 or 16); it wins over the pair path; 0: never
 *   QUAD_MAC_EMULATE  1: the quad path in plain C (tests its operands on any host)
 *   QUAD_PACKED   set by the host, not a caller: 1 where it packed the weights for the quad
 *                 path (accel/ops/conv.py's quad_mac); a build whose path disagrees fails
 *   HAS_RESIDUAL  1: fused residual add in the epilogue
 *   REQUANT_F32   1: onnxruntime's float32 requantization (accel_requantize_f32), for QDQ
 *                 models; 0: the fixed-point contract. No residual add in this mode.
 * ================================================================================== */
#include "conv_knobs.h"
#include "quant_vec.h"

#ifndef TILE_W
#define TILE_W 8
#endif
#ifndef CIN_STEP
#define CIN_STEP 16
#endif
#ifndef COUT_BLOCKS
#define COUT_BLOCKS 1
#endif

/* Impossible knob values fail the build instead of reading out of bounds: the inner step
 * walks channel pairs, and cin rounded up to CIN_STEP must stay within the 16-aligned
 * padded channels (accel/ops/conv.py checks the same before building). */
#if TILE_W < 1
#error "TILE_W must be at least 1"
#endif
#if CIN_STEP != 2 && CIN_STEP != 4 && CIN_STEP != 8 && CIN_STEP != 16
#error "CIN_STEP must be 2, 4, 8 or 16"
#endif
#if COUT_BLOCKS != 1 && COUT_BLOCKS != 2
#error "COUT_BLOCKS must be 1 or 2"
#endif

/* The quad (VNNI) path walks four input channels per step. */
#if ACCEL_QUAD_MAC_AVAILABLE && CIN_STEP % 4 == 0
#define ACCEL_QUAD_MAC 1
#else
#define ACCEL_QUAD_MAC 0
#endif
#if defined(QUAD_PACKED) && QUAD_PACKED != ACCEL_QUAD_MAC
#error "QUAD_PACKED: the host packed the weights for the other path (accel/ops/conv.py quad_mac)"
#endif

#if ACCEL_QUAD_MAC
/* A pixel's CIN_STEP input bytes as 16 (zero-filled), for the 4-lane byte sum. */
#if CIN_STEP == 16
#define ACCEL_STEP_BYTES(p) vload16(0, (p))
#elif CIN_STEP == 8
#define ACCEL_STEP_BYTES(p) (char16)(vload8(0, (p)), (char8)0)
#else
#define ACCEL_STEP_BYTES(p) (char16)(vload4(0, (p)), (char4)0, (char8)0)
#endif
#endif

/* The portable path, one input channel over the 16 output channels: acc += (x + 128) * w.
 * With one operand of the 32-bit multiply known to be in [0, 2^15) and the other
 * sign-extended from 8 bits, LLVM emits vpmaddwd instead of vpmulld. */
#define ACCEL_MAC(acc, xval, wvec) \
  ((acc) += convert_int16(wvec) * (int)(uchar)((xval) ^ 0x80))

__kernel void conv2d_nhwc(__global const char* restrict x,
                          __global const char* restrict pad_row,
                          __global const char* restrict weights,
                          __global const int* restrict bias,
                          __global const int* restrict multipliers,
                          __global const int* restrict shifts,
                          __global char* restrict out,
                          __global const char* restrict residual,
                          const int in_height, const int in_width, const int cin_pad,
                          const int cin_used,
                          const int in_stride, const int in_offset,
                          const int out_height, const int out_width,
                          const int out_stride, const int out_offset, const int res_stride,
                          const int kernel_h, const int kernel_w,
                          const int stride_h, const int stride_w,
                          const int pad_top, const int pad_left,
                          const int dilation_h, const int dilation_w,
                          const int output_zero_point, const int lo, const int hi,
                          const int residual_zero_point, const int residual_multiplier,
                          const int residual_shift) {
  const int block0 = get_global_id(0) * COUT_BLOCKS;
  const int ox0 = get_global_id(1) * TILE_W;
  const int row = get_global_id(2);  /* n * out_height + oy */
  const int n = row / out_height;
  const int oy = row - n * out_height;

  int16 acc[COUT_BLOCKS][TILE_W];
#pragma unroll
  for (int b = 0; b < COUT_BLOCKS; ++b) {
    const int16 bias_vec = vload16(0, bias + (block0 + b) * COUT_BLOCK);
#pragma unroll
    for (int p = 0; p < TILE_W; ++p) acc[b][p] = bias_vec;
  }

#if ACCEL_QUAD_MAC
  int4 x_sums[TILE_W];  /* each pixel's input bytes read, in 4 partial sums */
#pragma unroll
  for (int p = 0; p < TILE_W; ++p) x_sums[p] = 0;
#endif
  const int tap_bytes = cin_pad * COUT_BLOCK;
  const size_t block_bytes = (size_t)kernel_h * kernel_w * tap_bytes;  /* one block's weights */
  const __global char* w_tap = weights + (size_t)block0 * block_bytes;
  for (int ky = 0; ky < kernel_h; ++ky) {
    const int iy = oy * stride_h - pad_top + ky * dilation_h;
    const bool row_in = iy >= 0 && iy < in_height;
    const size_t row_base = ((size_t)n * in_height + iy) * in_width;
    for (int kx = 0; kx < kernel_w; ++kx, w_tap += tap_bytes) {
      /* Each pixel's input for this tap: its own bytes, or the zero-point row. */
      const __global char* x_tap[TILE_W];
#pragma unroll
      for (int p = 0; p < TILE_W; ++p) {
        const int ix = (ox0 + p) * stride_w - pad_left + kx * dilation_w;
        x_tap[p] = (row_in && ix >= 0 && ix < in_width)
                       ? x + (row_base + ix) * in_stride + in_offset
                       : pad_row;
      }
      for (int c = 0; c < cin_used; c += CIN_STEP) {
        const __global char* w = w_tap + c * COUT_BLOCK;
#if ACCEL_QUAD_MAC
#pragma unroll
        for (int p = 0; p < TILE_W; ++p)
          x_sums[p] = accel_dpbusd4(x_sums[p], (int4)0x01010101,
                                    as_int4(ACCEL_STEP_BYTES(x_tap[p] + c)));
#pragma unroll
        for (int k = 0; k < CIN_STEP; k += 4) {
          /* Channels c + k .. c + k + 3 of each block's 16 output channels: 64 bytes. */
          int16 wq[COUT_BLOCKS];
#pragma unroll
          for (int b = 0; b < COUT_BLOCKS; ++b)
            wq[b] = vload16(0, (const __global int*)(w + b * block_bytes + k * COUT_BLOCK));
#pragma unroll
          for (int p = 0; p < TILE_W; ++p) {
            const int16 x_quad = (int16)as_int(vload4(0, x_tap[p] + c + k));
#pragma unroll
            for (int b = 0; b < COUT_BLOCKS; ++b)
              acc[b][p] = accel_dpbusd(acc[b][p], wq[b], x_quad);
          }
        }
#else
#if ACCEL_PAIR_MAC && CIN_STEP == 16
        /* Each pixel's 16 input channels, flipped to unsigned and widened to 8 pairs of
         * 16-bit values (one pair per 32-bit lane), broadcast pair by pair below. */
        uint8 xpairs[TILE_W];
#pragma unroll
        for (int p = 0; p < TILE_W; ++p) {
          const uchar16 xu = as_uchar16(vload16(0, x_tap[p] + c)) ^ (uchar16)0x80;
          xpairs[p] = as_uint8(convert_ushort16(xu));
        }
#endif
#pragma unroll
        for (int k = 0; k < CIN_STEP; k += 2) {
          /* One channel pair: 16 output channels x (channel c + k, channel c + k + 1), for
           * each of the work-item's blocks of output channels. */
          char16 wa[COUT_BLOCKS], wb[COUT_BLOCKS];
#pragma unroll
          for (int b = 0; b < COUT_BLOCKS; ++b) {
            wa[b] = vload16(0, w + b * block_bytes + k * COUT_BLOCK);
            wb[b] = vload16(1, w + b * block_bytes + k * COUT_BLOCK);
          }
#if ACCEL_PAIR_MAC
          accel_short32 wv[COUT_BLOCKS];
#pragma unroll
          for (int b = 0; b < COUT_BLOCKS; ++b)
            wv[b] = __builtin_convertvector(__builtin_shufflevector(wa[b], wb[b], ACCEL_IOTA32),
                                            accel_short32);
#pragma unroll
          for (int p = 0; p < TILE_W; ++p) {
#if CIN_STEP == 16
            const uint pair = xpairs[p][k / 2];
#else
            const uint pair = (uint)(uchar)(x_tap[p][c + k] ^ 0x80) |
                              (uint)(uchar)(x_tap[p][c + k + 1] ^ 0x80) << 16;
#endif
            const accel_short32 x_pair = __builtin_astype((uint16)pair, accel_short32);
#pragma unroll
            for (int b = 0; b < COUT_BLOCKS; ++b)
              acc[b][p] += accel_pmaddwd(wv[b], x_pair);
          }
#else
#pragma unroll
          for (int b = 0; b < COUT_BLOCKS; ++b) {
            const char16 w0 = (char16)(wa[b].even, wb[b].even);
            const char16 w1 = (char16)(wa[b].odd, wb[b].odd);
#pragma unroll
            for (int p = 0; p < TILE_W; ++p) {
              ACCEL_MAC(acc[b][p], x_tap[p][c + k], w0);
              ACCEL_MAC(acc[b][p], x_tap[p][c + k + 1], w1);
            }
          }
#endif
        }
#endif /* ACCEL_QUAD_MAC */
      }
    }
  }

#if ACCEL_QUAD_MAC
  /* The weights were offset by 128: take 128 x each pixel's input sum off (modulo 2^32). */
#pragma unroll
  for (int p = 0; p < TILE_W; ++p) {
    const uint offset = 128u * as_uint(x_sums[p].s0 + x_sums[p].s1 + x_sums[p].s2 + x_sums[p].s3);
#pragma unroll
    for (int b = 0; b < COUT_BLOCKS; ++b) acc[b][p] = as_int16(as_uint16(acc[b][p]) - offset);
  }
#endif

  /* Epilogue, block by block: requantize (+ residual), clamp, store 16 channels per pixel,
   * in vector types (quant_vec.h: a loop over quant.h's scalar functions stays scalar). The
   * per-lane parameters are read once, outside the pixel loop. */
#pragma unroll
  for (int b = 0; b < COUT_BLOCKS; ++b) {
    const int cout0 = (block0 + b) * COUT_BLOCK;
    const int16 m = vload16(0, multipliers + cout0), s = vload16(0, shifts + cout0);
    for (int p = 0; p < TILE_W; ++p) {
      const int ox = ox0 + p;
      if (ox >= out_width) break;
      const size_t pixel = ((size_t)n * out_height + oy) * out_width + ox;
      __global char* o = out + pixel * out_stride + out_offset + cout0;
#if HAS_RESIDUAL
      const char16 r = vload16(0, residual + pixel * res_stride + cout0);
      accel_store16(accel_requantize_add16(acc[b][p], m, s, r, residual_zero_point,
                                           residual_multiplier, residual_shift,
                                           output_zero_point, lo, hi), o);
#elif REQUANT_F32
      accel_store16(accel_requantize_f32_16(acc[b][p], m, s, output_zero_point, lo, hi), o);
#else
      accel_store16(accel_requantize16(acc[b][p], m, s, output_zero_point, lo, hi), o);
#endif
    }
  }
}
