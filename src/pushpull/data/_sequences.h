/* What the -P sequence kernels (_sequence_noise.c, _sequence_warps.c) share; one library (see
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
/* _sequence_draws.c: Generator.random's next_double values from a numpy PCG64 state (its state_address), in place */
void pp_pcg64_doubles(void *state, int64_t n, double *out);

#endif

/* _sequence_draws.c: Generator.random's next_double values from a numpy PCG64 state (its state_address), in place */
void pp_pcg64_doubles(void *state, int64_t n, double *out);

#endif
