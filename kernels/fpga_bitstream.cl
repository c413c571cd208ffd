/* ==================================================================================
 * fpga_bitstream.cl: every FPGA pipeline in one program, the unit aoc compiles into one
 * .aocx. A board holds one bitstream at a time, so the conv and pool pipelines must live in
 * the same program (their channels and types have distinct names); the emulator runs this
 * same program, so it tests exactly what a board would load.
 *
 *   aoc -DVEC_SIZE=16 -DLANE_NUM=16 kernels/fpga_bitstream.cl -o accel.aocx   (a board build)
 *
 * The knobs are those of fpga_conv.cl (VEC_SIZE, LANE_NUM, WIN_BUF_SIZE, WEIGHT_BUF_SIZE).
 * ================================================================================== */
#include "fpga_conv.cl"
#include "fpga_pool.cl"
