/* ==================================================================================
 * eltwise.cl: elementwise int8 operations.
 *
 * add_sat_i8: out[i] = saturate(a[i] + b[i]) on raw int8 values. It is the smoke test of
 * every device (it touches build, buffers, scalar arguments and launch) and needs no
 * quantisation parameters.
 * ================================================================================== */

__kernel void add_sat_i8(__global const char* a, __global const char* b, __global char* out,
                         const int n) {
  const int i = get_global_id(0);
  if (i < n) out[i] = add_sat(a[i], b[i]);
}
