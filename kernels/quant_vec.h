/* quant_vec.h: quant.h's fixed-point requantization on 16 lanes at once (one block of 16
 * channels), for the NDRange kernels' epilogues. The same integer operations as
 * accel_requantize / accel_requantize_add, so the same bits; written in vector types
 * because CPU compilers leave a loop over the scalar functions scalar (a 64-bit product and
 * a per-lane shift for every lane: on an AVX2 host that cost more than the MACs of a 1x1
 * conv with 64 input channels). */
#ifndef ACCEL_QUANT_VEC_H
#define ACCEL_QUANT_VEC_H
#include "quant.h"

/* accel_scale on 8 lanes: round(value * multiplier / 2^shift), half up, in 64 bits. */
inline long8 accel_scale8(long8 value, int8 multiplier, int8 shift) {
  const long8 product = value * convert_long8(multiplier);
  return (product + ((long8)1 << convert_long8(shift - 1))) >> convert_long8(shift);
}

inline char8 accel_clamp8_i8(long8 value, int lo, int hi) {
  return convert_char8(clamp(value, (long8)lo, (long8)hi));
}

/* The high word of value * multiplier + 2^(shift-1) on 8 lanes: its floor over 2^32, which
 * fits int32 for shift in [32, 62] (|product| < 2^62, so the result lies in [-2^30, 2^30 +
 * 2^29]). The first step of accel_scale8 where the rest can stay in 32 bits. */
inline int8 accel_scale8_high(int8 value, int8 multiplier, int8 shift) {
  const long8 rounded = convert_long8(value) * convert_long8(multiplier) +
                        ((long8)1 << convert_long8(shift - 1));
  return convert_int8(rounded >> 32);
}

/* accel_scale on 16 lanes whose shifts are all in [32, 62], the rest in 32 bits:
 * floor(floor(x / 2^32) / 2^(S-32)) == floor(x / 2^S), so an int32 arithmetic shift by
 * S - 32 (in [0, 30]) of accel_scale8_high finishes it. Same bits as accel_scale8. */
inline int16 accel_scale16_s32(int16 value, int16 multiplier, int16 shift) {
  const int16 high = (int16)(accel_scale8_high(value.lo, multiplier.lo, shift.lo),
                             accel_scale8_high(value.hi, multiplier.hi, shift.hi));
  return high >> (shift - 32);
}

/* An int32 vector to int8 in [lo, hi]. The bounds are splatted by hand: clamp(int16, int,
 * int) is valid OpenCL C (the integer clamp's sgentype form), but Oclgrind (21.10; the same
 * code is in its 26.03.1 source) evaluates the integer clamp/min/max with scalar bounds
 * wrongly, reading a scalar argument as if it were a vector (only lane 0 comes out right). */
inline char16 accel_clamp16_i8(int16 value, int lo, int hi) {
  return convert_char16(clamp(value, (int16)lo, (int16)hi));
}

/* accel_requantize on 16 lanes. Where every shift is at least 32 (real multipliers below
 * 1/2: nearly every block of a layer), only the product and its rounding stay in 64 bits
 * (accel_scale16_s32); AVX2 has no 64-bit arithmetic shift or 64-bit min/max, which the
 * 64-bit path below emulates in several instructions each. */
inline char16 accel_requantize16(int16 acc, int16 multiplier, int16 shift, int zero_point,
                                 int lo, int hi) {
  if (all(shift >= 32)) {
    return accel_clamp16_i8(accel_scale16_s32(acc, multiplier, shift) + zero_point, lo, hi);
  }
  const long8 a = accel_scale8(convert_long8(acc.lo), multiplier.lo, shift.lo) + zero_point;
  const long8 b = accel_scale8(convert_long8(acc.hi), multiplier.hi, shift.hi) + zero_point;
  return (char16)(accel_clamp8_i8(a, lo, hi), accel_clamp8_i8(b, lo, hi));
}

/* accel_requantize_add on 16 lanes: the residual's multiplier and shift are per tensor. */
inline char16 accel_requantize_add16(int16 acc, int16 multiplier, int16 shift, char16 residual,
                                     int residual_zero_point, int residual_multiplier,
                                     int residual_shift, int zero_point, int lo, int hi) {
  const int16 side_value = convert_int16(residual) - residual_zero_point;
  if (all(shift >= 32) && residual_shift >= 32) {
    /* the 32-bit path for both terms: each below 2^30 + 2^29 in magnitude, the side term
     * below 2^8, so their sum with the zero point fits int32 */
    const int16 main = accel_scale16_s32(acc, multiplier, shift);
    const int16 side = accel_scale16_s32(side_value, (int16)residual_multiplier,
                                         (int16)residual_shift);
    return accel_clamp16_i8(main + side + zero_point, lo, hi);
  }
  const int8 side_multiplier = (int8)residual_multiplier, side_shift = (int8)residual_shift;
  const long8 a = accel_scale8(convert_long8(acc.lo), multiplier.lo, shift.lo) +
                  accel_scale8(convert_long8(side_value.lo), side_multiplier, side_shift) +
                  zero_point;
  const long8 b = accel_scale8(convert_long8(acc.hi), multiplier.hi, shift.hi) +
                  accel_scale8(convert_long8(side_value.hi), side_multiplier, side_shift) +
                  zero_point;
  return (char16)(accel_clamp8_i8(a, lo, hi), accel_clamp8_i8(b, lo, hi));
}

/* accel_requantize_f32 on 16 lanes, in float32 itself: convert_float16_rte rounds acc to 24
 * significant bits half to even, the float32 product is correctly rounded (OpenCL requires
 * it of `*`), rint rounds half to even: the integer emulation's three steps, so the same bits.
 * m = mantissa * 2^-shift lies in [2^-39, 2^23): a normal float32, built exactly from its bit
 * fields (exponent 150 - shift); products stay below 2^54, far from overflow and from
 * subnormals. The clamp happens in float32 (lo - z, hi - z are small integers) so that no
 * conversion overflows. CPU compilers vectorize this; the integer emulation (for FPGA
 * boards, where float costs DSPs and logic) they leave lane by lane. */
inline char16 accel_requantize_f32_16(int16 acc, int16 mantissa, int16 shift, int zero_point,
                                      int lo, int hi) {
  const float16 m = as_float16(((150 - shift) << 23) | (mantissa & 0x7FFFFF));
  const float16 y = rint(convert_float16_rte(acc) * m);
  const float16 bounded = clamp(y, (float)(lo - zero_point), (float)(hi - zero_point));
  return convert_char16(convert_int16(bounded) + zero_point);
}

/* 16 bytes to out[0..15] as one vector store. PoCL's vstore16 of a char16 came out as 16
 * byte stores (as many instructions as a fast requantization); a plain store through a
 * pointer to a 1-byte-aligned char16 is one unaligned vector store. x86 targets only (PoCL's
 * compiler defines __SSE2__ there): an under-aligned vector type is a clang extension that
 * other OpenCL compilers need not take, and elsewhere vstore16 is already one store. */
#if defined(__clang__) && defined(__SSE2__)
typedef char16 accel_char16_unaligned __attribute__((aligned(1)));
#define accel_store16(value, out) (*(__global accel_char16_unaligned*)(out) = (value))
#else
#define accel_store16(value, out) vstore16((value), 0, (out))
#endif

#endif /* ACCEL_QUANT_VEC_H */
