/* conv_knobs.h: what conv.cl and winograd.cl share (both include it first).
 *   - the epilogue knobs, their defaults and rules: X86_PAIR_MAC (1: the vpmaddwd builtin
 *     where the target has AVX-512BW), HAS_RESIDUAL (1: fused residual add), REQUANT_F32
 *     (1: onnxruntime's float32 requantization, no residual add);
 *   - ACCEL_PAIR_MAC: whether the x86 pair path is on for this compiler and target.
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

/* The x86 pair path: a clang builtin, so only where the target has AVX-512BW. */
#if X86_PAIR_MAC && defined(__AVX512BW__) && defined(__clang__)
#define ACCEL_PAIR_MAC 1
typedef short accel_short32 __attribute__((ext_vector_type(32)));
#define ACCEL_IOTA32 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, \
                     20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31
#else
#define ACCEL_PAIR_MAC 0
#endif

#endif /* ACCEL_CONV_KNOBS_H */
