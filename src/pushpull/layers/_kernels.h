/* What the layer's two kernel sources (_native.c, _basis.c) share: one vector register, the flat
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

/* One vector register: 16 floats with AVX-512, 8 with AVX, 4 otherwise; and how many the CPU has.
 * The register-blocked kernels size their blocks by these, so that their accumulators never spill
 * (27 accumulators of 16 floats fit AVX-512's 32 registers, but would take 54 of AVX2's 16). The
 * blocking only changes which values sit in registers: each sum is taken in the same order. */
#if defined(__AVX512F__)
#define VW 16
#define NREG 32
#elif defined(__AVX__)
#define VW 8
#define NREG 16
#else
#define VW 4
#define NREG 16
#endif
typedef float vf __attribute__((vector_size(VW * 4), aligned(4)));
typedef int32_t vi __attribute__((vector_size(VW * 4), aligned(4))); /* a comparison's lanes: all ones or zero */
typedef uint8_t vbytes __attribute__((vector_size(VW), aligned(1)));  /* VW bytes of a mask */

static inline vf load(const float *p) { return *(const vf *)p; }
static inline void store(float *p, vf v) { *(vf *)p = v; }

static inline float hsum(vf v) {
    float s = 0.0f;
    for (int l = 0; l < VW; l++) s += v[l];
    return s;
}

/* the team size of the last parallel region, for pp_last_team (tests check it follows the request) */
extern int pp_team;

static inline void record_team(void) {
    if (omp_get_thread_num() == 0) pp_team = omp_get_num_threads();
}

typedef struct {
    const float *src;
    float c;
} tap;

/* the flat filter's block: MT vectors of sums, enough in flight to hide the multiply-add latency */
#if NREG >= 32
#define MT 4
#else
#define MT 8
#endif

/* dst[t] = sum_k taps[k].c * taps[k].src[t] for t in [0, len) */
static inline void multi_tap(float *restrict dst, int64_t len, const tap *taps, int ntaps) {
    int64_t t = 0;
    for (; t + MT * VW <= len; t += MT * VW) {
        vf a[MT];
        for (int v = 0; v < MT; v++) a[v] = (vf){0};
        for (int k = 0; k < ntaps; k++) {
            const float *s = taps[k].src + t;
            const float c = taps[k].c;
            for (int v = 0; v < MT; v++) a[v] += c * load(s + v * VW);
        }
        for (int v = 0; v < MT; v++) store(dst + t + v * VW, a[v]);
    }
    for (; t + VW <= len; t += VW) {
        vf a0 = {0};
        for (int k = 0; k < ntaps; k++) a0 += taps[k].c * load(taps[k].src + t);
        store(dst + t, a0);
    }
    for (; t < len; t++) {
        float acc = 0.0f;
        for (int k = 0; k < ntaps; k++) acc += taps[k].c * taps[k].src[t];
        dst[t] = acc;
    }
}

/* the products' blocks: PT taps x PV pixel vectors of accumulators, with PV pixel vectors and a
 * broadcast weight beside them; PT divides G */
#if NREG >= 32
#define PT 9
#define PV 3
#else
#define PT 3
#define PV 4
#endif

/* A plane pitch of at least len floats at which no two of eight consecutive planes lie a multiple of
 * 4 KB apart, give or take 64 bytes. At such strides (a 32x32 plane is exactly 4 KB) a kernel that walks
 * the planes at one pixel meets the cache's associativity and the CPU's 4K aliasing: its loads collide
 * in one cache set, or are taken for reloads of the pending stores to another plane, and stall. */
static inline int64_t skewed_pitch(int64_t len) {
    for (int64_t pitch = len;; pitch += 16) {
        int clear = 1;
        for (int64_t k = 1; k <= 8 && clear; k++) {
            const int64_t r = k * pitch * (int64_t)sizeof(float) % 4096;
            clear = r >= 64 && r <= 4096 - 64;
        }
        if (clear) return pitch;
    }
}

/* y[j][p] = sum_c wt[c][j] x[c][p] for the G taps j of one block, p in [0, hw), the planes of x and y
 * pitch floats apart: PV vectors of pixels and PT taps at a time, so every broadcast weight feeds PV
 * multiply-adds and every pixel vector PT */
static inline void products(float *restrict y, const float *restrict x, const float *restrict wt, int64_t cin,
                            int64_t hw, int64_t pitch) {
    int64_t p = 0;
    for (; p + PV * VW <= hw; p += PV * VW)
        for (int j0 = 0; j0 < G; j0 += PT) {
            vf a[PT][PV];
            for (int j = 0; j < PT; j++)
                for (int v = 0; v < PV; v++) a[j][v] = (vf){0};
            for (int64_t c = 0; c < cin; c++) {
                vf xv[PV];
                for (int v = 0; v < PV; v++) xv[v] = load(x + c * pitch + p + v * VW);
                for (int j = 0; j < PT; j++) {
                    const float wj = wt[c * G + j0 + j];
                    for (int v = 0; v < PV; v++) a[j][v] += wj * xv[v];
                }
            }
            for (int j = 0; j < PT; j++)
                for (int v = 0; v < PV; v++) store(y + (j0 + j) * pitch + p + v * VW, a[j][v]);
        }
    for (; p + VW <= hw; p += VW) {
        vf a[G];
        for (int j = 0; j < G; j++) a[j] = (vf){0};
        for (int64_t c = 0; c < cin; c++) {
            const vf x0 = load(x + c * pitch + p);
            for (int j = 0; j < G; j++) a[j] += wt[c * G + j] * x0;
        }
        for (int j = 0; j < G; j++) store(y + j * pitch + p, a[j]);
    }
    for (; p < hw; p++)
        for (int j = 0; j < G; j++) {
            float acc = 0.0f;
            for (int64_t c = 0; c < cin; c++) acc += wt[c * G + j] * x[c * pitch + p];
            y[j * pitch + p] = acc;
        }
}

#endif
