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

/* PCG64's output of a state: XSL-RR (the halves' xor, rotated by the top 6 bits) */
static inline uint64_t xsl_rr(u128 s) {
    uint64_t hi = (uint64_t)(s >> 64), lo = (uint64_t)s ^ hi;
    unsigned rot = (unsigned)(hi >> 58);
    return (lo >> rot) | (lo << ((64 - rot) & 63));
}

/* one step of PCG64: the 128-bit LCG, then the new state's output */
static inline uint64_t pcg64_next(u128 *s, u128 inc) {
    *s = *s * PCG64_MULTIPLIER + inc;
    return xsl_rr(*s);
}

static inline double next_double(uint64_t output) {
    return (double)(output >> 11) * (1.0 / 9007199254740992.0);
}

/* Four states a step apart, each jumping four steps at a time (s -> A4 s + C4, A4 = a^4, C4 = c (a^3 + a^2 + a + 1)):
 * the same sequence, with four independent multiply chains in flight instead of one. */
void pp_pcg64_doubles(void *state, int64_t n, double *out) {
    pcg64_state *st = (pcg64_state *)state;
    const u128 a = PCG64_MULTIPLIER, inc = st->pcg->inc, a2 = a * a, a4 = a2 * a2, c4 = inc * (a2 * a + a2 + a + 1);
    u128 lane[4], last = st->pcg->state;  /* lane[k]: the state that gives output i + k; last: the one before i */
    int64_t i = 0;
    lane[0] = last * a + inc;
    for (int k = 1; k < 4; k++) lane[k] = lane[k - 1] * a + inc;
    for (; i + 4 <= n; i += 4) {
        for (int k = 0; k < 4; k++) out[i + k] = next_double(xsl_rr(lane[k]));
        last = lane[3];
        for (int k = 0; k < 4; k++) lane[k] = lane[k] * a4 + c4;
    }
    for (int k = 0; i + k < n; k++) {
        out[i + k] = next_double(xsl_rr(lane[k]));
        last = lane[k];
    }
    st->pcg->state = last;
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
