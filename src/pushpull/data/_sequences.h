/* What the -P sequence kernels (_sequence_noise.c, _sequence_warps.c, _sequence_draws.c) share; one library (see
 * _sequence_native.py). */
#ifndef PUSHPULL_SEQUENCES_H
#define PUSHPULL_SEQUENCES_H
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* AVX2 where the CPU has it: wider vectors, the same IEEE operations (no FMA: -ffp-contract=off) */
#if defined(__x86_64__) && defined(__GNUC__)
#define WIDE __attribute__((target_clones("avx2", "default")))
#else
#define WIDE
#endif

/* uint8(255 * clip(t, 0, 1)) as numpy computes it, for a t that is not NaN: the clip as a max then a min (-0 and 0
 * give the same byte), the conversion through int32 (t * 255 lies in [0, 255]). Loops of these vectorise: the
 * library is built with -fno-trapping-math, which lets the compiler turn the selections into vector max / min (the
 * same values; only floating-point exception flags, which nothing reads, may differ). */
static inline uint8_t clipped_byte_f(float t) {
    t = t > 0.0f ? t : 0.0f;
    t = t < 1.0f ? t : 1.0f;
    return (uint8_t)(int32_t)(t * 255.0f);
}

static inline uint8_t clipped_byte(double t) {
    t = t > 0.0 ? t : 0.0;
    t = t < 1.0 ? t : 1.0;
    return (uint8_t)(int32_t)(t * 255.0);
}

/* _sequence_draws.c: Generator.random's next_double values from a numpy PCG64 state (its state_address), in place */
void pp_pcg64_doubles(void *state, int64_t n, double *out);

#endif
