/* ==================================================================================
 * depthwise.cl: int8 depthwise 2-D convolution (groups == channels, one filter per
 * channel), NDRange shape.
 *
 * One work-item computes TILE_W output pixels along a row x one block of 16 channels,
 * keeping TILE_W int16 accumulators (one int lane per channel) in registers. For every tap
 * (ky, kx) the 16 weights of the block are loaded once and shared by the TILE_W pixels; each
 * pixel's 16 input channels are one vector load, multiplied lane by lane (no reduction over
 * channels: a depthwise layer does K*K MACs per output, so it is bound by memory, not MACs).
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
 * Knobs (-D, defaults below; per-device values in kernels/tuning.json, none yet):
 *   TILE_W       output pixels per work-item (accumulator registers), 1 to 16
 *   REQUANT_F32  1: onnxruntime's float32 requantization (accel_requantize_f32), for QDQ
 *                models; 0: the fixed-point contract.
 * accel/ops/depthwise.py checks the same before building.
 * ================================================================================== */
#include "quant_vec.h"

#ifndef TILE_W
#define TILE_W 4
#endif
#ifndef REQUANT_F32
#define REQUANT_F32 0
#endif

#if TILE_W < 1 || TILE_W > 16
#error "TILE_W must be in 1..16"
#endif
#if REQUANT_F32 != 0 && REQUANT_F32 != 1
#error "REQUANT_F32 must be 0 or 1"
#endif

#define CHANNEL_BLOCK 16  /* channels per work-item: one int lane each */

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
  for (int ky = 0; ky < kernel_h; ++ky) {
    const int iy = oy * stride_h - pad_top + ky * dilation_h;
    const bool row_in = iy >= 0 && iy < in_height;
    const size_t row_base = ((size_t)n * in_height + iy) * in_width;
    for (int kx = 0; kx < kernel_w; ++kx, w_tap += CHANNEL_BLOCK) {
      const int16 w = convert_int16(vload16(0, w_tap));
#pragma unroll
      for (int p = 0; p < TILE_W; ++p) {
        const int ix = (ox0 + p) * stride_w - pad_left + kx * dilation_w;
        /* This pixel's input for the tap: its own bytes, or the zero-point row. */
        const __global char* src = (row_in && ix >= 0 && ix < in_width)
                                       ? x + (row_base + ix) * in_stride + in_offset + c0
                                       : pad_row + c0;
        const uchar16 xu = as_uchar16(vload16(0, src)) ^ (uchar16)0x80;
        acc[p] += convert_int16(xu) * w;
      }
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
    vstore16(accel_requantize_f32_16(acc[p], m, s, output_zero_point, lo, hi), 0, o);
#else
    vstore16(accel_requantize16(acc[p], m, s, output_zero_point, lo, hi), 0, o);
#endif
  }
}
