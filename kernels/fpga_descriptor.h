/* ==================================================================================
 * fpga_descriptor.h: the layer descriptor table of the persistent FPGA pipeline
 * (FPGA_PERSISTENT, accel/fpga/design.py FpgaDesign.persistent).
 *
 * With FPGA_PERSISTENT the conv and pool kernels are launched once per segment of
 * consecutive pipeline layers, not once per layer: each kernel loops over the segment's
 * table (num_layers entries of FD_WORDS int32 words, built at bind time by
 * accel/ops/fpga.py, whose DESCRIPTOR_FIELDS list these names in this order) and runs
 * the layers of its pipeline in turn, skipping the others. Every activation lives in one
 * arena buffer and every parameter in one of three arenas (weight vectors, int32, float32):
 * the *_base words are offsets into them, in units of the pointer they index.
 *
 * Ordering without the host: a layer's reader (fpga_conv_reader or fpga_pool) must not
 * read what the previous layer's writer is still writing. The writer, after its last store,
 * fences global memory and channels (mem_fence(CLK_GLOBAL_MEM_FENCE |
 * CLK_CHANNEL_MEM_FENCE), Intel's Programming Guide on ordering channel and memory
 * operations) and sends a token to the next layer's reader; that reader loads its weights,
 * then waits for the token (FD_WAIT names the writer) before its first activation load.
 * A writer signals at most one reader and a reader waits on at most one writer, so each
 * token channel holds at most one token. Each channel has one writing and one reading
 * kernel (aoc's rule), hence four: conv or pool writer -> conv or pool reader.
 * The activation pointers are volatile: another kernel of the same launch writes them,
 * so aoc must not put a cache in front of their loads (Intel's Best Practices Guide).
 * ================================================================================== */
#ifndef ACCEL_FPGA_DESCRIPTOR_H
#define ACCEL_FPGA_DESCRIPTOR_H

#ifndef FPGA_PERSISTENT
#define FPGA_PERSISTENT 0
#endif

#define FPGA_LAYER_NONE (-1)
#define FPGA_LAYER_CONV 0
#define FPGA_LAYER_POOL 1

#define FD_WORDS 64  /* words per descriptor (a power of two: the index is a shift) */
#define FD_KIND 0                  /* FPGA_LAYER_CONV or FPGA_LAYER_POOL */
#define FD_WAIT 1                  /* the writer whose token the reader awaits, or NONE */
#define FD_SIGNAL 2                /* the reader the writer signals, or NONE */
#define FD_IN_BASE 3               /* input tensor, in the reader's vectors */
#define FD_WEIGHTS_BASE 4          /* conv weights, in weight vectors */
#define FD_BATCH 5
#define FD_IN_HEIGHT 6
#define FD_IN_WIDTH 7
#define FD_IN_CHANNELS 8           /* pool: the padded channel count */
#define FD_IN_STRIDE_VECS 9
#define FD_IN_OFFSET_VECS 10
#define FD_OUT_HEIGHT 11
#define FD_OUT_WIDTH 12
#define FD_KERNEL_H 13
#define FD_KERNEL_W 14
#define FD_STRIDE_H 15
#define FD_STRIDE_W 16
#define FD_DILATION_H 17
#define FD_DILATION_W 18
#define FD_PAD_TOP 19
#define FD_PAD_LEFT 20
#define FD_INPUT_ZERO_POINT 21
#define FD_GROUPS 22
#define FD_OUTPUTS 23              /* conv: groups * pixels */
#define FD_KVECS 24
#define FD_BIAS_BASE 25            /* int32 arena */
#define FD_MULT_BASE 26            /* int32 arena (conv and pool) */
#define FD_SHIFT_BASE 27           /* int32 arena (conv and pool) */
#define FD_RESIDUAL_BASE 28        /* bytes of the activation arena */
#define FD_PIXELS 29
#define FD_OUT_CHANNELS_PADDED 30
#define FD_OUTPUT_ZERO_POINT 31
#define FD_LO 32
#define FD_HI 33
#define FD_HAS_RESIDUAL 34
#define FD_RESIDUAL_STRIDE 35
#define FD_RESIDUAL_ZERO_POINT 36
#define FD_RESIDUAL_MULTIPLIER 37
#define FD_RESIDUAL_SHIFT 38
#define FD_REQUANT_F32 39
#define FD_OUT_BASE 40             /* output tensor, in the writer's store units */
#define FD_OUT_STRIDE_UNITS 41
#define FD_OUT_OFFSET_UNITS 42
#define FD_IS_MAX 43
#define FD_COUNT_H0 44
#define FD_COUNT_H1 45
#define FD_COUNT_W0 46
#define FD_COUNT_W1 47
#define FD_FLOAT32_MODE 48
#define FD_DEQUANT_BASE 49         /* float32 arena */
#define FD_RECIP_BASE 50           /* float32 arena */
#define FD_OUT_SCALE 51            /* float32 bits */
#define FD_OUT_SCALE_RECIPROCAL 52 /* float32 bits */
#define FD_OFFSET 53

#if FPGA_PERSISTENT && ACCEL_FPGA
/* The completion tokens (the layer index, for debugging): writer kind -> reader kind. */
channel int conv_to_conv_token __attribute__((depth(1)));
channel int conv_to_pool_token __attribute__((depth(1)));
channel int pool_to_conv_token __attribute__((depth(1)));
channel int pool_to_pool_token __attribute__((depth(1)));
/* One table entry as one aligned struct, so a kernel copies its layer's descriptor into
 * private registers with ONE wide load (one load unit per kernel; aoc prunes the registers
 * of the words it never reads) instead of a global load site per word read (Intel's Best
 * Practices Guide: consecutive, aligned accesses coalesce into one wide LSU). The estimator
 * charges one descriptor load unit per persistent kernel (accel/fpga/estimate.py
 * PERSISTENT_KERNELS; tests/test_fpga_persistent.py counts the load sites). */
typedef struct __attribute__((aligned(64))) { int w[FD_WORDS]; } fpga_descriptor;
/* Opens a persistent kernel's loop over its segment's layers (closed by FPGA_END_LAYERS):
 * d is the layer's descriptor, a private copy; the layers of the other pipeline are
 * skipped. The kernel takes (..., __global const fpga_descriptor* restrict layers,
 * const int num_layers). */
#define FPGA_FOR_EACH_LAYER(kind)                                   \
  for (int layer = 0; layer < num_layers; ++layer) {                \
    const fpga_descriptor descriptor = layers[layer];               \
    const int* const d = descriptor.w;                              \
    if (d[FD_KIND] != (kind)) continue;
#define FPGA_END_LAYERS }
/* Activations: written and read by kernels of the same launch (no load cache). */
#define FPGA_ACTIVATIONS __global volatile
#endif

#endif /* ACCEL_FPGA_DESCRIPTOR_H */
