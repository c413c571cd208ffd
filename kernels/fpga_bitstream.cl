/* ==================================================================================
 * fpga_bitstream.cl: every FPGA pipeline in one program, the unit aoc compiles into one
 * .aocx. A board holds one bitstream at a time, so the conv and pool pipelines must live in
 * the same program (their channels and types have distinct names); the emulator runs this
 * same program, so it tests exactly what a board would load.
 *
 *   aoc -DVEC_SIZE=16 -DLANE_NUM=16 kernels/fpga_bitstream.cl -o accel.aocx   (a board build)
 *
 * The knobs are those of fpga_conv.cl (VEC_SIZE, LANE_NUM, WIN_BUF_SIZE, WEIGHT_BUF_SIZE,
 * STREAM_DEPTH, RESULT_DEPTH, EPILOGUE_STEPS, FPGA_SYSTOLIC, FPGA_PERSISTENT (the layer
 * descriptor table, fpga_descriptor.h), the FPGA_CONV_* modes) and
 * fpga_pool.cl (POOL_DEPTH, the FPGA_POOL_* modes); their one source is accel/fpga/design.py
 * (FpgaDesign.defines()).
 *
 *   fpga_config  writes the knobs the host's data layout depends on into config[0..4]
 *                (VEC_SIZE, LANE_NUM, WIN_BUF_SIZE, WEIGHT_BUF_SIZE, the compiled-in modes
 *                as design.py's MODE_BITS, FPGA_PERSISTENT as its PERSISTENT_BIT), so the
 *                host can refuse a bitstream built with other knobs than its design (which
 *                would compute garbage, not fail) and say which modes a bitstream carries. Run once per program (accel/ops/fpga.py).
 * ================================================================================== */
#include "fpga_conv.cl"
#include "fpga_pool.cl"

#if ACCEL_FPGA
/* config[0..4] in accel/ops/fpga.py's order (CONFIG_WORDS there). */
__attribute__((max_global_work_dim(0)))
__kernel void fpga_config(__global int* restrict config) {
  config[0] = VEC_SIZE;
  config[1] = LANE_NUM;
  config[2] = WIN_BUF_SIZE;
  config[3] = WEIGHT_BUF_SIZE;
  config[4] = FPGA_CONV_FIXED | FPGA_CONV_RESIDUAL << 1 | FPGA_CONV_F32 << 2 |
              FPGA_POOL_FIXED << 3 | FPGA_POOL_F32 << 4 | FPGA_POOL_AVG_F32 << 5 |
              FPGA_PERSISTENT << 6;
}
#endif /* ACCEL_FPGA */
