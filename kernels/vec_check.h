/* vec_check.h: the rule of every VEC knob (channels per work-item or per step); include it
 * after VEC's default. VEC must divide the channel alignment (16), so a work-item never
 * straddles a pixel's padded channels (accel/ops/checks.py checks the same before building). */
#if VEC < 1
#error "VEC must be at least 1"
#elif 16 % VEC != 0
#error "VEC must divide 16"
#endif
