/* numpy's PCG64 draws without numpy's per-value call overhead (loaded by _sequence_native.py).
 *
 * The kernels step the live state of a numpy PCG64 bit generator in place (its address from
 * ``BitGenerator.ctypes.state_address``), so the Generator carries on from where they stop as if
 * it had drawn the values itself:
 * - pp_pcg64_doubles: Generator.random's next_double values.
 * - pp_pcg64_normals / pp_pcg64_normals_f: Generator.standard_normal (float64 / float32). numpy's
 *   ziggurat returns straight away for ~99 % of draws: when the layer's 52 (23) random bits lie below
 *   its bound ki, the value is bits * wi. Those draws are done here with ki and wi as numpy has them
 *   (read off the installed numpy's own draws, see _sequence_native.py); for every other draw the
 *   state is put back as it was before the draw and numpy's own random_standard_normal(_f) makes
 *   it, so the rare branches (the tail, the wedges) are numpy's code, not a copy of it.
 * The library checks every kernel against numpy when it is loaded.
 */
#include "_sequences.h"

typedef unsigned __int128 u128;

typedef struct {
    u128 state, inc;
} pcg64_random;

typedef struct {  /* numpy's pcg64_state */
    pcg64_random *pcg;
    int has_uint32;
    uint32_t uinteger;
} pcg64_state;

typedef struct {  /* the head of numpy's bitgen_t */
    void *state;
} bitgen;

typedef double (*normal_fn)(bitgen *);
typedef float (*normal_f_fn)(bitgen *);

/* numpy's -x where the sign bit is 1, without a branch on a random bit (x * -1 is exactly -x) */
static const double sign_of[2] = {1.0, -1.0};
static const float sign_of_f[2] = {1.0f, -1.0f};

#define PCG64_MULTIPLIER (((u128)2549297995355413924ULL << 64) + 4865540595714422341ULL)

/* one step of PCG64 (128-bit LCG, then XSL-RR of the new state) */
static inline uint64_t pcg64_next(u128 *s, u128 inc) {
    uint64_t hi, lo;
    unsigned rot;
    *s = *s * PCG64_MULTIPLIER + inc;
    hi = (uint64_t)(*s >> 64);
    lo = (uint64_t)*s;
    rot = (unsigned)(hi >> 58);
    lo ^= hi;
    return (lo >> rot) | (lo << ((64 - rot) & 63));
}

void pp_pcg64_doubles(pcg64_state *st, int64_t n, double *out) {
    u128 s = st->pcg->state, inc = st->pcg->inc;
    for (int64_t i = 0; i < n; i++) out[i] = (double)(pcg64_next(&s, inc) >> 11) * (1.0 / 9007199254740992.0);
    st->pcg->state = s;
}

void pp_pcg64_normals(bitgen *gen, normal_fn numpy_normal, const uint64_t *ki, const double *wi, int64_t n,
                      double *out) {
    pcg64_state *st = (pcg64_state *)gen->state;
    u128 s = st->pcg->state, inc = st->pcg->inc;
    for (int64_t i = 0; i < n; i++) {
        u128 before = s;
        uint64_t r = pcg64_next(&s, inc);
        int idx = (int)(r & 0xff);
        uint64_t rabs = (r >> 9) & 0x000fffffffffffffULL;
        double x = (double)(int64_t)rabs * wi[idx];  /* rabs < 2^52: the signed conversion is exact */
        if (rabs < ki[idx]) {
            out[i] = x * sign_of[(r >> 8) & 1];
            continue;
        }
        st->pcg->state = before;
        out[i] = numpy_normal(gen);
        s = st->pcg->state;
    }
    st->pcg->state = s;
}

/* float32: each 64-bit step gives two 32-bit draws, the low half first (numpy's next_uint32) */
void pp_pcg64_normals_f(bitgen *gen, normal_f_fn numpy_normal, const uint32_t *ki, const float *wi, int64_t n,
                        float *out) {
    pcg64_state *st = (pcg64_state *)gen->state;
    u128 s = st->pcg->state, inc = st->pcg->inc;
    int has = st->has_uint32;
    uint32_t kept = st->uinteger;
    for (int64_t i = 0; i < n; i++) {
        u128 before = s;
        int had = has;
        uint32_t kept_before = kept, r;
        if (has) {
            r = kept;
            has = 0;
        } else {
            uint64_t next = pcg64_next(&s, inc);
            r = (uint32_t)next;
            kept = (uint32_t)(next >> 32);
            has = 1;
        }
        {
            int idx = (int)(r & 0xff);
            uint32_t rabs = (r >> 9) & 0x0007fffffU;
            float x = (float)rabs * wi[idx];
            if (rabs < ki[idx]) {
                out[i] = x * sign_of_f[(r >> 8) & 1];
                continue;
            }
        }
        st->pcg->state = before;
        st->has_uint32 = had;
        st->uinteger = kept_before;
        out[i] = numpy_normal(gen);
        s = st->pcg->state;
        has = st->has_uint32;
        kept = st->uinteger;
    }
    st->pcg->state = s;
    st->has_uint32 = has;
    st->uinteger = kept;
}
