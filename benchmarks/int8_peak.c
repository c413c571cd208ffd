/* The machine's int8 multiply-accumulate peak, measured: every thread runs independent
 * chains of the widest int8 dot-product instruction the compiler targets (-march=native):
 * AVX-512 VNNI vpdpbusd (64 MACs), else AVX-VNNI (32 MACs), else AVX2 vpmaddubsw +
 * vpmaddwd + vpaddd (32 MACs in three instructions). Prints GOPS (2 ops per MAC): the
 * best of BURSTS short bursts per thread, summed over threads, so that a shared machine's
 * time slicing (which also spares the short kernel launches it is compared with) does not
 * count against the peak. */
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>

#define CHAINS 12
#define ITERS 200000L /* per burst: 2.4M instructions, about a millisecond */
#define BURSTS 200

#if defined(__AVX512VNNI__) && defined(__AVX512BW__)
typedef __m512i vec;
#define MACS_PER_OP 64
#define SPLAT(v) _mm512_set1_epi8(v)
#define ZERO() _mm512_setzero_si512()
#define STEP(acc, a, b) _mm512_dpbusd_epi32(acc, a, b)
#define FIRST32(v) _mm512_cvtsi512_si32(v)
#define ADD(a, b) _mm512_add_epi32(a, b)
#define NAME "avx512-vnni vpdpbusd zmm"
#elif defined(__AVXVNNI__)
typedef __m256i vec;
#define MACS_PER_OP 32
#define SPLAT(v) _mm256_set1_epi8(v)
#define ZERO() _mm256_setzero_si256()
#define STEP(acc, a, b) _mm256_dpbusd_avx_epi32(acc, a, b)
#define FIRST32(v) _mm256_cvtsi256_si32(v)
#define ADD(a, b) _mm256_add_epi32(a, b)
#define NAME "avx-vnni vpdpbusd ymm"
#else
typedef __m256i vec;
#define MACS_PER_OP 32
#define SPLAT(v) _mm256_set1_epi8(v)
#define ZERO() _mm256_setzero_si256()
#define STEP(acc, a, b) \
  _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(a, b), _mm256_set1_epi16(1)))
#define FIRST32(v) _mm256_cvtsi256_si32(v)
#define ADD(a, b) _mm256_add_epi32(a, b)
#define NAME "avx2 vpmaddubsw+vpmaddwd+vpaddd ymm"
#endif

int main(void) {
  long checksum = 0;
  double total_rate = 0.0;
#pragma omp parallel reduction(+ : checksum, total_rate)
  {
    vec acc[CHAINS];
    vec a = SPLAT(3), b = SPLAT(-5);
    for (int i = 0; i < CHAINS; ++i) acc[i] = ZERO();
    double best = 0.0;
    for (int burst = 0; burst < BURSTS; ++burst) {
      const double start = omp_get_wtime();
      for (long it = 0; it < ITERS; ++it) {
        /* Unrolled, so the chains live in registers (a rolled loop keeps them in memory and
           times store-to-load forwarding: a quarter of the VNNI rate). The empty asm after
           each step hides that every chain multiplies the same operands: without it gcc
           computes AVX2's products once for all 12 chains. */
#pragma GCC unroll 16
        for (int i = 0; i < CHAINS; ++i) {
          acc[i] = STEP(acc[i], a, b);
          __asm__ volatile("" : "+x"(a), "+x"(b));
        }
      }
      const double rate = 2.0 * MACS_PER_OP * CHAINS * ITERS / (omp_get_wtime() - start);
      if (rate > best) best = rate;
    }
    vec sum = acc[0];
    for (int i = 1; i < CHAINS; ++i) sum = ADD(sum, acc[i]);
    checksum += FIRST32(sum);
    total_rate += best;
  }
  printf("%.1f %d %s %ld\n", total_rate / 1e9, omp_get_max_threads(), NAME, checksum);
  return 0;
}
