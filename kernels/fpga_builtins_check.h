/* ==================================================================================
 * fpga_builtins_check.h: declarations of the Intel FPGA SDK's OpenCL extensions for clang.
 *
 * Used ONLY by tools/fpga-syntax-check.sh, which runs clang's strict OpenCL C 1.2 front end
 * with -DINTELFPGA_CL -include this file, so the FPGA shape of the kernels is type-checked
 * on any machine (a board build is not the first place a typo shows). Never included by a
 * real build: aoc and the FPGA emulator know these natively.
 *
 *   ACCEL_SYNTAX_CHECK       defined, so kernels can leave out aoc-only pragmas (ivdep)
 *   cl_intel_channels        registered as an extension clang knows, so the kernels' own
 *                            "#pragma OPENCL EXTENSION cl_intel_channels : enable" is checked
 *   channel T name attr;     a program-scope extern __constant T (readable, any type)
 *   depth(N), max_global_work_dim(N)   attributes clang lacks: expand to nothing
 *   CLK_CHANNEL_MEM_FENCE    the mem_fence flag for channel calls (a value of its own)
 *   read_channel_intel(ch)   the channel's value, of its element type
 *   write_channel_intel(ch, v)  a compile error ("array size is negative") unless v has the
 *                            channel's element type
 * ================================================================================== */
#ifndef ACCEL_FPGA_BUILTINS_CHECK_H
#define ACCEL_FPGA_BUILTINS_CHECK_H

/* Tells the kernels that clang, not aoc, is reading (aoc-only pragmas such as ivdep are
 * left out: clang would reject them as unknown). */
#define ACCEL_SYNTAX_CHECK 1

#pragma OPENCL EXTENSION cl_intel_channels : begin
#pragma OPENCL EXTENSION cl_intel_channels : end

#define channel extern __constant
#define depth(n)
#define max_global_work_dim(n)

/* ((void)0, x) is an rvalue: its type has no address space or const qualifier. */
#define read_channel_intel(ch) ((void)0, (ch))
#define write_channel_intel(ch, value)                                                    \
  ((void)sizeof(char[__builtin_types_compatible_p(__typeof__(((void)0, (ch))),             \
                                                  __typeof__(((void)0, (value)))) ? 1 : -1]))

/* The fence flag that orders channel calls against memory operations (aoc's). */
#define CLK_CHANNEL_MEM_FENCE 0x10

#endif /* ACCEL_FPGA_BUILTINS_CHECK_H */
