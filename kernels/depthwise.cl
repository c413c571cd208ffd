/* ==================================================================================
 * depthwise.cl: int8 depthwise 2-D convolution (groups == channels, one filter per
 * channel), NDRange shape.
 *
 * One work-item computes TILE_W output pixels along a row x one block of 16 channels,
 * keeping TILE_W int16 accumulators (one int lane per channel) in registers. For every tap
 * (ky, kx) the 16 weights of the block are loaded once and shared by the TILE_W pixels; each
 * pixel's 16 input channels are one vector load, multiplied lane by lane (no reduction over
 * channels: a depthwise layer does only K*K MACs per output, so what costs is the
 * instructions around the MACs: addressing, widening, the epilogue and its store).
 *   - Tiles whose taps all lie inside the row (most of them) address every tap as a
 *     constant offset from one pointer; a row above or below the image reads the pad row
 *     for all pixels (steps 0). Tiles at the left or right edge pick each pixel's pointer
 *     (its bytes or the pad row) tap by tap.
 *   - x86 with AVX2 or AVX-512BW (conv_knobs.h's pair path, X86_PAIR_MAC): two taps at
 *     once, (tap kx, tap kx+1) of each channel zipped into one 16-bit pair, so one vpmaddwd
 *     does 32 MACs (LLVM's own widening multiply leaves half of each vpmaddwd zero); an odd
 *     last tap goes alone. Elsewhere, and with X86_PAIR_MAC=0, one tap at a time. Same bits:
 *     the products and their int32 sums are exact.
 * The input is read as x + 128 (x ^ 0x80, unsigned, as conv.cl does); the host folds the
 * extra 128*sum(w) into the bias. The epilogue applies quant.h's requantization, 16 lanes
 * at a time (quant_vec.h, both requantize modes).
 *
 *   x        NHWC int8: pixel (n, y, x) starts at ((n*H + y)*W + x)*in_stride + in_offset
 *            and holds c_pad (a multiple of 16) channels.
 *   pad_row  c_pad bytes, all equal to the input zero point zx: out-of-bounds taps read
 *            it, so the folded bias is exact at the borders (as conv.cl's pad row).
 *   weights  int8 packed by the host as [c_pad/16][KH][KW][16]: one block's taps in turn,
 *            16 channels each. Padded channels are zero.
 *   bias     int32 [c_pad] = bias - (zx + 128)*sum(w), reduced modulo 2^32; the
 *            accumulation is modulo 2^32 too and the true accumulator fits int32.
 *   multipliers, shifts  int32 [c_pad] (quant.h); padded channels get (2^30, 1). With
 *            REQUANT_F32=1 they hold float32 multipliers as (mantissa, shift) pairs
 *            (quant.h's accel_requantize_f32); padded channels get (2^23, 1).
 *   out      int8; pixel (n, oy, ox) at ((n*OH + oy)*OW + ox)*out_stride + out_offset, so
 *            the layer can write its channels into a slice of a concat tensor.
 *
 * Tap (ky, kx) of output pixel (oy, ox) reads input (oy*stride_h - pad_top + ky*dilation_h,
 * ox*stride_w - pad_left + kx*dilation_w), as conv.cl.
 *
 * NDRange: global (c_pad/16, ceil(OW/TILE_W), N*OH); work-items past OW compute from the
 * pad row and skip their stores.
 *
 * Knobs (-D, defaults below; per-device values in kernels/tuning.json):
 *   TILE_W       output pixels per work-item (accumulator registers), 1 to 16
 *   X86_PAIR_MAC  1: the vpmaddwd pair path where the target has AVX-512BW or AVX2; 0: never
 *   PAIR_MAC_EMULATE  1: the pair path in plain C (tests its indexing on any device)
 *   REQUANT_F32  1: onnxruntime's float32 requantization (accel_requantize_f32), for QDQ
 *                models; 0: the fixed-point contract.
 * accel/ops/depthwise.py checks the same before building.
 * ================================================================================== */
#include "conv_knobs.h"
#include "quant_vec.h"

#ifndef TILE_W
#define TILE_W 4
#endif

#if TILE_W < 1 || TILE_W > 16
#error "TILE_W must be in 1..16"
#endif

#define CHANNEL_BLOCK 16  /* channels per work-item: one int lane each */

#if ACCEL_PAIR_MAC
/* (a0, b0, a1, b1, ...): the lanes of two 16-lane vectors zipped, vpmaddwd's pair order. */
#define ACCEL_ZIP32 0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23, \
                    8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31
/* Taps a and b of 16 channels as 32 16-bit values, a and b zipped. */
#define ACCEL_ZIP_WIDEN(a, b) \
  __builtin_convertvector(__builtin_shufflevector((a), (b), ACCEL_ZIP32), accel_short32)
#endif

/* One tap of 16 channels: acc += (x + 128) * w, x read as unsigned (x ^ 0x80). */
#define ACCEL_DW_TAP(acc, src, w) \
  ((acc) += convert_int16(as_uchar16(vload16(0, (src))) ^ (uchar16)0x80) * (w))

__kernel void depthwise2d_nhwc(__global const char* restrict x,
                               __global const char* restrict pad_row,
                               __global const char* restrict weights,
                               __global const int* restrict bias,
                               __global const int* restrict multipliers,
                               __global const int* restrict shifts,
                               __global char* restrict out,
                               const int in_height, const int in_width,
                               const int in_stride, const int in_offset,
                               const int out_height, const int out_width,
                               const int out_stride, const int out_offset,
                               const int kernel_h, const int kernel_w,
                               const int stride_h, const int stride_w,
                               const int pad_top, const int pad_left,
                               const int dilation_h, const int dilation_w,
                               const int output_zero_point, const int lo, const int hi) {
  const int block = get_global_id(0);
  const int c0 = block * CHANNEL_BLOCK;
  const int ox0 = get_global_id(1) * TILE_W;
  const int row = get_global_id(2);  /* n * out_height + oy */
  const int n = row / out_height;
  const int oy = row - n * out_height;

  int16 acc[TILE_W];
  const int16 bias_vec = vload16(0, bias + c0);
#pragma unroll
  for (int p = 0; p < TILE_W; ++p) acc[p] = bias_vec;

  const __global char* w_tap = weights + (size_t)block * kernel_h * kernel_w * CHANNEL_BLOCK;
  const __global char* pad = pad_row + c0;
  const int iy0 = oy * stride_h - pad_top;
  const int ix0 = ox0 * stride_w - pad_left;
  const size_t image_row0 = (size_t)n * in_height;
  const size_t pixel_step = (size_t)stride_w * in_stride;  /* next pixel of the tile */
  const size_t tap_step = (size_t)dilation_w * in_stride;  /* next tap along the row */
  /* Every tap of every pixel of the tile inside the row (work-items past OW included). */
  const bool columns_in =
      ix0 >= 0 && ix0 + (TILE_W - 1) * stride_w + (kernel_w - 1) * dilation_w < in_width;
  if (columns_in) {
    for (int ky = 0; ky < kernel_h; ++ky) {
      const int iy = iy0 + ky * dilation_h;
      const bool row_in = iy >= 0 && iy < in_height;
      /* A row outside the image is the pad row for every tap of every pixel. */
      const __global char* src_row =
          row_in ? x + ((image_row0 + iy) * in_width + ix0) * in_stride + in_offset + c0 : pad;
      const size_t ps = row_in ? pixel_step : 0, ts = row_in ? tap_step : 0;
      int kx = 0;
#if ACCEL_PAIR_MAC
      for (; kx + 1 < kernel_w; kx += 2, w_tap += 2 * CHANNEL_BLOCK) {
        const accel_short32 wv = ACCEL_ZIP_WIDEN(vload16(0, w_tap), vload16(1, w_tap));
        const __global char* src = src_row + kx * ts;
#pragma unroll
        for (int p = 0; p < TILE_W; ++p) {
          const uchar16 xa = as_uchar16(vload16(0, src + p * ps)) ^ (uchar16)0x80;
          const uchar16 xb = as_uchar16(vload16(0, src + p * ps + ts)) ^ (uchar16)0x80;
          acc[p] += accel_pmaddwd(wv, ACCEL_ZIP_WIDEN(xa, xb));
        }
      }
#endif
      for (; kx < kernel_w; ++kx, w_tap += CHANNEL_BLOCK) {
        const int16 w = convert_int16(vload16(0, w_tap));
        const __global char* src = src_row + kx * ts;
#pragma unroll
        for (int p = 0; p < TILE_W; ++p) ACCEL_DW_TAP(acc[p], src + p * ps, w);
      }
    }
  } else {
    /* Edge tiles: each pixel's pointer for a tap is its own bytes or the pad row. */
    for (int ky = 0; ky < kernel_h; ++ky) {
      const int iy = iy0 + ky * dilation_h;
      const bool row_in = iy >= 0 && iy < in_height;
      const __global char* src_row = x + (image_row0 + iy) * in_width * in_stride + in_offset + c0;
#define ACCEL_DW_SRC(p, kx)                                                        \
  ((row_in && ix0 + (p) * stride_w + (kx) * dilation_w >= 0 &&                     \
    ix0 + (p) * stride_w + (kx) * dilation_w < in_width)                           \
       ? src_row + (ix0 + (p) * stride_w + (kx) * dilation_w) * (size_t)in_stride \
       : pad)
      int kx = 0;
#if ACCEL_PAIR_MAC
      for (; kx + 1 < kernel_w; kx += 2, w_tap += 2 * CHANNEL_BLOCK) {
        const accel_short32 wv = ACCEL_ZIP_WIDEN(vload16(0, w_tap), vload16(1, w_tap));
#pragma unroll
        for (int p = 0; p < TILE_W; ++p) {
          const uchar16 xa = as_uchar16(vload16(0, ACCEL_DW_SRC(p, kx))) ^ (uchar16)0x80;
          const uchar16 xb = as_uchar16(vload16(0, ACCEL_DW_SRC(p, kx + 1))) ^ (uchar16)0x80;
          acc[p] += accel_pmaddwd(wv, ACCEL_ZIP_WIDEN(xa, xb));
        }
      }
#endif
      for (; kx < kernel_w; ++kx, w_tap += CHANNEL_BLOCK) {
        const int16 w = convert_int16(vload16(0, w_tap));
#pragma unroll
        for (int p = 0; p < TILE_W; ++p) ACCEL_DW_TAP(acc[p], ACCEL_DW_SRC(p, kx), w);
      }
#undef ACCEL_DW_SRC
    }
  }

  /* Epilogue: requantize, clamp, store 16 channels per pixel; in vector types (quant_vec.h):
   * with K*K MACs per output, a scalar epilogue took most of the layer's time. */
  const int16 m = vload16(0, multipliers + c0), s = vload16(0, shifts + c0);
  for (int p = 0; p < TILE_W; ++p) {
    const int ox = ox0 + p;
    if (ox >= out_width) break;
    const size_t pixel = ((size_t)n * out_height + oy) * out_width + ox;
    __global char* o = out + pixel * out_stride + out_offset + c0;
#if REQUANT_F32
    accel_store16(accel_requantize_f32_16(acc[p], m, s, output_zero_point, lo, hi), o);
#else
    accel_store16(accel_requantize16(acc[p], m, s, output_zero_point, lo, hi), o);
#endif
  }
}
