/* What the layer's two kernel sources (_native.c, _basis.c) share: vectors of 16 floats, the flat
 * multi-tap filter and the register-blocked products. Built into one library (see _native.py). */
#ifndef PUSHPULL_LAYER_KERNELS_H
#define PUSHPULL_LAYER_KERNELS_H
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX(a, b) ((a) > (b) ? (a) : (b))
#define MAX_TAPS 1024
#define G 9 /* kernel taps per register block (a 3x3 kernel is one block) */

/* 16 floats; aligned(4) makes unaligned loads and stores through it legal. GCC and Clang map it
 * onto AVX-512, AVX2 or SSE registers, whichever -march allows. */
typedef float v16 __attribute__((vector_size(64), aligned(4)));

static inline v16 load(const float *p) { return *(const v16 *)p; }
static inline void store(float *p, v16 v) { *(v16 *)p = v; }

/* the team size of the last parallel region, for pp_last_team (tests check it follows the request) */
extern int pp_team;

static inline void record_team(void) {
    if (omp_get_thread_num() == 0) pp_team = omp_get_num_threads();
}

typedef struct {
    const float *src;
    float c;
} tap;

/* dst[t] = sum_k taps[k].c * taps[k].src[t] for t in [0, len) */
static inline void multi_tap(float *restrict dst, int64_t len, const tap *taps, int ntaps) {
    int64_t t = 0;
    for (; t + 64 <= len; t += 64) { /* four independent accumulators hide the FMA latency */
        v16 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
        for (int k = 0; k < ntaps; k++) {
            const float *s = taps[k].src + t;
            const float c = taps[k].c;
            a0 += c * load(s), a1 += c * load(s + 16), a2 += c * load(s + 32), a3 += c * load(s + 48);
        }
        store(dst + t, a0), store(dst + t + 16, a1), store(dst + t + 32, a2), store(dst + t + 48, a3);
    }
    for (; t + 16 <= len; t += 16) {
        v16 a0 = {0};
        for (int k = 0; k < ntaps; k++) a0 += taps[k].c * load(taps[k].src + t);
        store(dst + t, a0);
    }
    for (; t < len; t++) {
        float acc = 0.0f;
        for (int k = 0; k < ntaps; k++) acc += taps[k].c * taps[k].src[t];
        dst[t] = acc;
    }
}

/* y[j][p] = sum_c wt[c][j] x[c][p] for the G taps j of one block, p in [0, hw): 48 pixels at a time
 * (27 accumulators), so every broadcast weight feeds three multiply-adds */
static inline void products(float *restrict y, const float *restrict x, const float *restrict wt, int64_t cin,
                     int64_t hw) {
    int64_t p = 0;
    for (; p + 48 <= hw; p += 48) {
        v16 a[G][3];
        for (int j = 0; j < G; j++) a[j][0] = a[j][1] = a[j][2] = (v16){0};
        for (int64_t c = 0; c < cin; c++) {
            const float *xc = x + c * hw + p;
            const v16 x0 = load(xc), x1 = load(xc + 16), x2 = load(xc + 32);
            for (int j = 0; j < G; j++) {
                const float wj = wt[c * G + j];
                a[j][0] += wj * x0, a[j][1] += wj * x1, a[j][2] += wj * x2;
            }
        }
        for (int j = 0; j < G; j++)
            store(y + j * hw + p, a[j][0]), store(y + j * hw + p + 16, a[j][1]), store(y + j * hw + p + 32, a[j][2]);
    }
    for (; p + 16 <= hw; p += 16) {
        v16 a[G];
        for (int j = 0; j < G; j++) a[j] = (v16){0};
        for (int64_t c = 0; c < cin; c++) {
            const v16 x0 = load(x + c * hw + p);
            for (int j = 0; j < G; j++) a[j] += wt[c * G + j] * x0;
        }
        for (int j = 0; j < G; j++) store(y + j * hw + p, a[j]);
    }
    for (; p < hw; p++)
        for (int j = 0; j < G; j++) {
            float acc = 0.0f;
            for (int64_t c = 0; c < cin; c++) acc += wt[c * G + j] * x[c * hw + p];
            y[j * hw + p] = acc;
        }
}

#endif
