/* conv_knobs.h: what conv.cl and winograd.cl share (both include it first).
 *   - the epilogue knobs, their defaults and rules: X86_PAIR_MAC (1: vpmaddwd pairs where
 *     the target has AVX-512BW or AVX2, see below; 0: never), PAIR_MAC_EMULATE (1: the pair
 *     path in plain C), ACCEL_CPU_ISA (the host's cap), HAS_RESIDUAL (1: fused residual add), REQUANT_F32
 *     (1: onnxruntime's float32 requantization, no residual add);
 *   - ACCEL_PAIR_MAC: whether the x86 pair path is on for this compiler and target;
 *   - X86_QUAD_MAC (1: vpdpbusd quads where the target has AVX-512 VNNI; 0: never),
 *     QUAD_MAC_EMULATE (1: the quad path in plain C) and ACCEL_QUAD_MAC, its switch.
 * (Each kernel keeps its own epilogue loop: the same loop as an inline function taking
 * private arrays halved conv.cl's speed on PoCL's 1x1 layers.) */
#ifndef ACCEL_CONV_KNOBS_H
#define ACCEL_CONV_KNOBS_H
#include "quant.h"

#ifndef X86_PAIR_MAC
#define X86_PAIR_MAC 1
#endif
#ifndef HAS_RESIDUAL
#define HAS_RESIDUAL 0
#endif
#ifndef REQUANT_F32
#define REQUANT_F32 0
#endif
#if X86_PAIR_MAC != 0 && X86_PAIR_MAC != 1
#error "X86_PAIR_MAC must be 0 or 1"
#endif
#if HAS_RESIDUAL != 0 && HAS_RESIDUAL != 1
#error "HAS_RESIDUAL must be 0 or 1"
#endif
#if REQUANT_F32 != 0 && REQUANT_F32 != 1
#error "REQUANT_F32 must be 0 or 1"
#endif
#if REQUANT_F32 && HAS_RESIDUAL
#error "REQUANT_F32 has no fused residual add"
#endif

#define COUT_BLOCK 16  /* output channels per work-item: one int lane each */

/* The x86 pair path: acc (16 int lanes) += for each lane i, a[2i]*b[2i] + a[2i+1]*b[2i+1]
 * (vpmaddwd's semantics, exact: the products of 16-bit values summed in 32 bits), as
 *   - one vpmaddwd zmm where the target has AVX-512BW (PoCL on AVX-512 hosts),
 *   - two vpmaddwd ymm where it has AVX2 (PoCL on AVX2-only hosts),
 *   - plain C with PAIR_MAC_EMULATE=1, on any clang target: the same indexing, so the pair
 *     path's packing is tested bit-exact on every host, whatever its instruction set.
 *   - two vpmaddwd ymm through the LLVM intrinsic bound by an asm label, where the compiler
 *     hides its target but takes LLVM intrinsics (Intel's CPU runtime: the host sets
 *     ACCEL_LLVM_X86=1 there; used at the AVX2 level, the one measured).
 * ACCEL_CPU_ISA (set by the host from accel.isa: 0 baseline, 2 AVX2, 3 AVX-512, 4 AVX-512
 * VNNI) caps the variant, so ACCEL_CPU_ISA=avx2 on an AVX-512 host takes the AVX2 one. */
#ifndef ACCEL_CPU_ISA
#define ACCEL_CPU_ISA 4
#endif
#ifndef PAIR_MAC_EMULATE
#define PAIR_MAC_EMULATE 0
#endif
#if PAIR_MAC_EMULATE != 0 && PAIR_MAC_EMULATE != 1
#error "PAIR_MAC_EMULATE must be 0 or 1"
#endif

#ifndef ACCEL_LLVM_X86
#define ACCEL_LLVM_X86 0
#endif

#if X86_PAIR_MAC && defined(__clang__) && \
    (PAIR_MAC_EMULATE || (defined(__AVX512BW__) && ACCEL_CPU_ISA >= 3) || \
     (defined(__AVX2__) && ACCEL_CPU_ISA >= 2) || (ACCEL_LLVM_X86 && ACCEL_CPU_ISA == 2))
#define ACCEL_PAIR_MAC 1
typedef short accel_short32 __attribute__((ext_vector_type(32)));
#define ACCEL_IOTA32 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, \
                     20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31
#define ACCEL_EVEN16 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30
#define ACCEL_ODD16 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31
#define ACCEL_LO16 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15
#define ACCEL_HI16 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31

#if PAIR_MAC_EMULATE
#define ACCEL_PAIR_MAC_VARIANT 1 /* emulated */
/* Each product fits int32; their sum wraps modulo 2^32 as vpmaddwd's does (only
 * 2 x (-32768)^2 can), so it is added unsigned. */
inline int16 accel_pmaddwd(accel_short32 a, accel_short32 b) {
  const int16 even = convert_int16(__builtin_shufflevector(a, a, ACCEL_EVEN16)) *
                     convert_int16(__builtin_shufflevector(b, b, ACCEL_EVEN16));
  const int16 odd = convert_int16(__builtin_shufflevector(a, a, ACCEL_ODD16)) *
                    convert_int16(__builtin_shufflevector(b, b, ACCEL_ODD16));
  return as_int16(as_uint16(even) + as_uint16(odd));
}
#elif defined(__AVX512BW__) && ACCEL_CPU_ISA >= 3
#define ACCEL_PAIR_MAC_VARIANT 3 /* AVX-512BW */
#define accel_pmaddwd(a, b) __builtin_ia32_pmaddwd512((a), (b))
#elif ACCEL_LLVM_X86 && !defined(__AVX2__)
#define ACCEL_PAIR_MAC_VARIANT 2 /* AVX2, by the LLVM intrinsic */
int8 accel_llvm_pmaddwd256(short16 a, short16 b) __asm__("llvm.x86.avx2.pmadd.wd");
inline int16 accel_pmaddwd(accel_short32 a, accel_short32 b) {
  const int8 lo = accel_llvm_pmaddwd256(__builtin_shufflevector(a, a, ACCEL_LO16),
                                        __builtin_shufflevector(b, b, ACCEL_LO16));
  const int8 hi = accel_llvm_pmaddwd256(__builtin_shufflevector(a, a, ACCEL_HI16),
                                        __builtin_shufflevector(b, b, ACCEL_HI16));
  return (int16)(lo, hi);
}
#else
#define ACCEL_PAIR_MAC_VARIANT 2 /* AVX2 */
inline int16 accel_pmaddwd(accel_short32 a, accel_short32 b) {
  const int8 lo = __builtin_ia32_pmaddwd256(__builtin_shufflevector(a, a, ACCEL_LO16),
                                            __builtin_shufflevector(b, b, ACCEL_LO16));
  const int8 hi = __builtin_ia32_pmaddwd256(__builtin_shufflevector(a, a, ACCEL_HI16),
                                            __builtin_shufflevector(b, b, ACCEL_HI16));
  return (int16)(lo, hi);
}
#endif
#else
#define ACCEL_PAIR_MAC 0
#define ACCEL_PAIR_MAC_VARIANT 0 /* the portable path */
#endif

/* The x86 quad path (VNNI): acc (16 int lanes) += for each lane i, the sum over t < 4 of
 * u[4i+t] * s[4i+t], u unsigned and s signed bytes (vpdpbusd's semantics: exact, the sum
 * added modulo 2^32), as
 *   - one vpdpbusd zmm through the LLVM intrinsic bound by an asm label on Intel's CPU
 *     runtime (ACCEL_LLVM_X86=1) when the host is AVX-512 VNNI (ACCEL_CPU_ISA 4; the host
 *     then asks that runtime for the cascadelake target, accel/_icd.py);
 *   - (PoCL on VNNI hosts keeps the AVX-512BW pair path: its builtin route, a target-attribute
 *     helper per tile, is not written yet);
 *   - plain C with QUAD_MAC_EMULATE=1, on any target: the same operands, so the quad packing,
 *     the input quads and their byte sums are tested bit-exact on hosts without VNNI.
 * accel_dpbusd4 is the same on 4 lanes (vpdpbusd xmm): conv.cl sums its pixels' input bytes
 * with it. conv.cl takes the quad path when CIN_STEP is a multiple of 4, on weights the host
 * packed for it (QUAD_PACKED, accel/ops/conv.py's quad_mac). */
#ifndef X86_QUAD_MAC
#define X86_QUAD_MAC 1
#endif
#ifndef QUAD_MAC_EMULATE
#define QUAD_MAC_EMULATE 0
#endif
#if X86_QUAD_MAC != 0 && X86_QUAD_MAC != 1
#error "X86_QUAD_MAC must be 0 or 1"
#endif
#if QUAD_MAC_EMULATE != 0 && QUAD_MAC_EMULATE != 1
#error "QUAD_MAC_EMULATE must be 0 or 1"
#endif

#if X86_QUAD_MAC && defined(__clang__) && \
    (QUAD_MAC_EMULATE || (ACCEL_CPU_ISA >= 4 && ACCEL_LLVM_X86))
#define ACCEL_QUAD_MAC_AVAILABLE 1
typedef char accel_char64 __attribute__((ext_vector_type(64)));
typedef uchar accel_uchar64 __attribute__((ext_vector_type(64)));
#define ACCEL_QUAD_BYTES(t) t, t + 4, t + 8, t + 12, t + 16, t + 20, t + 24, t + 28, t + 32, \
                            t + 36, t + 40, t + 44, t + 48, t + 52, t + 56, t + 60

#if QUAD_MAC_EMULATE
#define ACCEL_QUAD_MAC_VARIANT 1 /* emulated */
inline int4 accel_dpbusd4(int4 acc, int4 u, int4 s) {
  const uchar16 ub = as_uchar16(u);
  const char16 sb = as_char16(s);
  const int4 p0 = convert_int4(ub.s048c) * convert_int4(sb.s048c);
  const int4 p1 = convert_int4(ub.s159d) * convert_int4(sb.s159d);
  const int4 p2 = convert_int4(ub.s26ae) * convert_int4(sb.s26ae);
  const int4 p3 = convert_int4(ub.s37bf) * convert_int4(sb.s37bf);
  return as_int4(as_uint4(acc) + as_uint4(p0 + p1 + p2 + p3));
}
inline int16 accel_dpbusd(int16 acc, int16 u, int16 s) {
  const accel_uchar64 ub = __builtin_astype(u, accel_uchar64);
  const accel_char64 sb = __builtin_astype(s, accel_char64);
  const int16 p0 = convert_int16(__builtin_shufflevector(ub, ub, ACCEL_QUAD_BYTES(0))) *
                   convert_int16(__builtin_shufflevector(sb, sb, ACCEL_QUAD_BYTES(0)));
  const int16 p1 = convert_int16(__builtin_shufflevector(ub, ub, ACCEL_QUAD_BYTES(1))) *
                   convert_int16(__builtin_shufflevector(sb, sb, ACCEL_QUAD_BYTES(1)));
  const int16 p2 = convert_int16(__builtin_shufflevector(ub, ub, ACCEL_QUAD_BYTES(2))) *
                   convert_int16(__builtin_shufflevector(sb, sb, ACCEL_QUAD_BYTES(2)));
  const int16 p3 = convert_int16(__builtin_shufflevector(ub, ub, ACCEL_QUAD_BYTES(3))) *
                   convert_int16(__builtin_shufflevector(sb, sb, ACCEL_QUAD_BYTES(3)));
  return as_int16(as_uint16(acc) + as_uint16(p0 + p1 + p2 + p3));
}
#else
#define ACCEL_QUAD_MAC_VARIANT 2 /* VNNI, by the LLVM intrinsic */
/* The intrinsic's byte operands are <16 x i32> up to clang 21 and <64 x i8> from 22 on. */
#if __clang_major__ >= 22
int16 accel_llvm_dpbusd512(int16 acc, accel_char64 u, accel_char64 s)
    __asm__("llvm.x86.avx512.vpdpbusd.512");
#define accel_dpbusd(acc, u, s) accel_llvm_dpbusd512((acc), __builtin_astype((u), accel_char64), \
                                                     __builtin_astype((s), accel_char64))
int4 accel_llvm_dpbusd128(int4 acc, char16 u, char16 s) __asm__("llvm.x86.avx512.vpdpbusd.128");
#define accel_dpbusd4(acc, u, s) accel_llvm_dpbusd128((acc), as_char16(u), as_char16(s))
#else
int16 accel_llvm_dpbusd512(int16 acc, int16 u, int16 s) __asm__("llvm.x86.avx512.vpdpbusd.512");
#define accel_dpbusd(acc, u, s) accel_llvm_dpbusd512((acc), (u), (s))
int4 accel_llvm_dpbusd128(int4 acc, int4 u, int4 s) __asm__("llvm.x86.avx512.vpdpbusd.128");
#define accel_dpbusd4(acc, u, s) accel_llvm_dpbusd128((acc), (u), (s))
#endif
#endif
#else
#define ACCEL_QUAD_MAC_AVAILABLE 0
#define ACCEL_QUAD_MAC_VARIANT 0 /* no quad path */
#endif

#endif /* ACCEL_CONV_KNOBS_H */
