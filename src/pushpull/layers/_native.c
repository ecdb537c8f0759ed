/* Kernels of the push-pull layer's native CPU path (see _native.py).
 *
 * Both convolutions use the same weights k, so their matrix work is shared: per image and
 * output channel o, the products Y_ab = k[o,:,a,b] . x (one map per kernel tap) give
 *   push(y,x)     = b + sum_ab Y_ab(y + a - pt, x + b - pl)
 *   pullconv(y,x) = b + sum_ab sum_ij Ah[i,a] Aw[j,b] Y_ab(y + i - qt, x + j - ql)
 * (Y is zero outside the image), and the layer's output is
 *   ReLU(push) - alpha * ReLU(-pullconv)      or both rectified maps (dual output).
 * float32, NCHW, stride 1, dilation 1, one group, symmetric zero padding, pull >= push.
 *
 * Each plane of Y is copied into a zero-margined scratch grid, so that every shift is a
 * constant offset in the flattened grid: the filtering is then "dst = sum_k c_k src_k" over
 * long flat ranges (multi_tap), with the sums held in vector registers. Values computed in
 * the margin columns are never read back. The products are register-blocked over G taps.
 *
 * g[] = {n, cout, kh, kw, h, w, ph, pw, ho, wo, pt, pl, qt, ql, cin}. The forward keeps the
 * rectified maps in push_r / pull_r for the backward (NULL: not needed). wt: (cout, groups, cin,
 * G), the weights k[o, c, a, b] with the kh*kw taps zero-padded to groups*G. Both entry points
 * return 0, or 1 when a thread could not allocate its scratch memory (nothing is computed then).
 */
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
static inline float hsum(v16 v) {
    float s = 0.0f;
    for (int l = 0; l < 16; l++) s += v[l];
    return s;
}

/* the team size of the last parallel region, for pp_last_team (tests check it follows the request) */
static int last_team;

static void record_team(void) {
    if (omp_get_thread_num() == 0) last_team = omp_get_num_threads();
}

/* how many threads the last kernel call ran with */
int pp_last_team(void) { return last_team; }

typedef struct {
    const float *src;
    float c;
} tap;

/* dst[t] = sum_k taps[k].c * taps[k].src[t] for t in [0, len) */
static void multi_tap(float *restrict dst, int64_t len, const tap *taps, int ntaps) {
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
static void products(float *restrict y, const float *restrict x, const float *restrict wt, int64_t cin,
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

/* gx[c][p] += sum_j wt[c][j] gy[j][p]: the products' adjoint for the input */
static void products_adjoint_x(float *restrict gx, const float *restrict gy, const float *restrict wt, int64_t cin,
                               int64_t hw) {
    int64_t p = 0;
    for (; p + 32 <= hw; p += 32) {
        v16 d[G][2];
        for (int j = 0; j < G; j++) d[j][0] = load(gy + j * hw + p), d[j][1] = load(gy + j * hw + p + 16);
        for (int64_t c = 0; c < cin; c++) {
            v16 a0 = load(gx + c * hw + p), a1 = load(gx + c * hw + p + 16);
            for (int j = 0; j < G; j++) a0 += wt[c * G + j] * d[j][0], a1 += wt[c * G + j] * d[j][1];
            store(gx + c * hw + p, a0), store(gx + c * hw + p + 16, a1);
        }
    }
    for (; p < hw; p++)
        for (int64_t c = 0; c < cin; c++) {
            float acc = gx[c * hw + p];
            for (int j = 0; j < G; j++) acc += wt[c * G + j] * gy[j * hw + p];
            gx[c * hw + p] = acc;
        }
}

/* gw[c][j] += sum_p gy[j][p] x[c][p]: the products' adjoint for the weights. Three channels at a
 * time, so that every load of gy feeds three multiply-adds (27 accumulators in registers). */
static void products_adjoint_w(float *restrict gw, const float *restrict gy, const float *restrict x, int64_t cin,
                               int64_t hw) {
    int64_t c = 0;
    for (; c + 3 <= cin; c += 3) {
        v16 a[3][G];
        for (int j = 0; j < G; j++) a[0][j] = a[1][j] = a[2][j] = (v16){0};
        const float *x0 = x + c * hw, *x1 = x0 + hw, *x2 = x1 + hw;
        int64_t p = 0;
        for (; p + 16 <= hw; p += 16) {
            const v16 u0 = load(x0 + p), u1 = load(x1 + p), u2 = load(x2 + p);
            for (int j = 0; j < G; j++) {
                const v16 d = load(gy + j * hw + p);
                a[0][j] += d * u0, a[1][j] += d * u1, a[2][j] += d * u2;
            }
        }
        for (int i = 0; i < 3; i++)
            for (int j = 0; j < G; j++) {
                float s = hsum(a[i][j]);
                for (int64_t q = p; q < hw; q++) s += gy[j * hw + q] * x[(c + i) * hw + q];
                gw[(c + i) * G + j] += s;
            }
    }
    for (; c < cin; c++) {
        v16 a[G];
        for (int j = 0; j < G; j++) a[j] = (v16){0};
        int64_t p = 0;
        for (; p + 16 <= hw; p += 16) {
            const v16 u = load(x + c * hw + p);
            for (int j = 0; j < G; j++) a[j] += load(gy + j * hw + p) * u;
        }
        for (int j = 0; j < G; j++) {
            float s = hsum(a[j]);
            for (int64_t q = p; q < hw; q++) s += gy[j * hw + q] * x[c * hw + q];
            gw[c * G + j] += s;
        }
    }
}

int pp_forward(const int64_t *g, const float *x, const float *wt, const float *ah, const float *aw,
               const float *bias, const float *alpha, int dual, float *out, float *push_r, float *pull_r,
               int nthreads) {
    const int64_t n = g[0], cout = g[1], kh = g[2], kw = g[3], h = g[4], w = g[5], ph = g[6], pw = g[7];
    const int64_t ho = g[8], wo = g[9], pt = g[10], pl = g[11], qt = g[12], ql = g[13], cin = g[14];
    const int64_t hw = h * w, groups = (kh * kw + G - 1) / G;
    const int64_t hp = h + 2 * qt, wp = w + 2 * ql, grid = hp * wp; /* Y's zero-margined grid */
    const int64_t span = (ho - 1) * wp + wo;                         /* output rows on that grid */
    int failed = 0;
#pragma omp parallel num_threads(nthreads)
    {
        /* the products, their kh*kw grids, kh row-filtered grids Z_a, the push and pull sums */
        record_team();
        float *y = malloc(sizeof(float) * groups * G * hw);
        float *yp = calloc((size_t)((kh * kw + kh) * grid + 2 * ho * wp), sizeof(float));
        float *z = yp + kh * kw * grid, *push = z + kh * grid, *pull = push + ho * wp;
        tap taps[MAX_TAPS];
        if (!y || !yp) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(static)
        for (int64_t no = 0; no < n * cout; no++) {
            if (!y || !yp) continue;
            const int64_t i_n = no / cout, o = no % cout;
            for (int64_t gi = 0; gi < groups; gi++)
                products(y + gi * G * hw, x + i_n * cin * hw, wt + (o * groups + gi) * cin * G, cin, hw);
            for (int64_t ab = 0; ab < kh * kw; ab++)
                for (int64_t r = 0; r < h; r++)
                    memcpy(yp + ab * grid + (r + qt) * wp + ql, y + ab * hw + r * w, sizeof(float) * w);
            int nt = 0;
            for (int64_t a = 0; a < kh; a++)
                for (int64_t b = 0; b < kw; b++)
                    taps[nt++] = (tap){yp + (a * kw + b) * grid + (a + qt - pt) * wp + b + ql - pl, 1.0f};
            multi_tap(push, span, taps, nt);
            for (int64_t a = 0; a < kh; a++) { /* Z_a = sum_b Y_ab filtered along rows by Aw[:, b] */
                nt = 0;
                for (int64_t b = 0; b < kw; b++)
                    for (int64_t j = 0; j < pw; j++)
                        if (aw[j * kw + b] != 0.0f)
                            taps[nt++] = (tap){yp + (a * kw + b) * grid + qt * wp + j, aw[j * kw + b]};
                /* only rows qt .. qt+h-1 hold the image; the others stay zero */
                multi_tap(z + a * grid + qt * wp, (h - 1) * wp + wo, taps, nt);
            }
            nt = 0;
            for (int64_t a = 0; a < kh; a++) /* then along columns by Ah[:, a] */
                for (int64_t i = 0; i < ph; i++)
                    if (ah[i * kh + a] != 0.0f) taps[nt++] = (tap){z + a * grid + i * wp, ah[i * kh + a]};
            multi_tap(pull, span, taps, nt);
            const float b0 = bias ? bias[o] : 0.0f, al = alpha[o];
            for (int64_t t = 0; t < span; t++) { /* rectified in place: ReLU(push), ReLU(-pullconv) */
                const float s = push[t] + b0, q = pull[t] + b0;
                push[t] = s > 0.0f ? s : 0.0f, pull[t] = q < 0.0f ? -q : 0.0f;
            }
            float *o_push = dual ? out + (i_n * 2 * cout + o) * ho * wo : out + no * ho * wo;
            float *o_pull = o_push + cout * ho * wo;
            const size_t row = sizeof(float) * wo;
            for (int64_t r = 0; r < ho; r++) {
                const float *p = push + r * wp, *m = pull + r * wp;
                const int64_t t = r * wo;
                if (push_r) memcpy(push_r + no * ho * wo + t, p, row), memcpy(pull_r + no * ho * wo + t, m, row);
                if (dual) {
                    memcpy(o_push + t, p, row), memcpy(o_pull + t, m, row);
                } else {
                    for (int64_t c = 0; c < wo; c++) o_push[t + c] = p[c] - al * m[c];
                }
            }
        }
        free(yp);
        free(y);
    }
    return failed;
}

/* The backward's geometry: the output-gradient grids get margins wide enough for every adjoint shift. */
typedef struct {
    int64_t cout, kh, kw, h, w, ph, pw, ho, wo, pt, pl, qt, ql, cin, hw, my, mx, wg, grid, span;
} backward_geometry;

static backward_geometry backward_read(const int64_t *g) {
    backward_geometry b = {g[1], g[2], g[3], g[4], g[5], g[6], g[7], g[8], g[9], g[10], g[11], g[12], g[13], g[14]};
    b.hw = b.h * b.w;
    b.my = MAX(0, MAX(b.ph - 1 - b.qt, b.kh - 1 - b.pt)), b.mx = MAX(0, MAX(b.pw - 1 - b.ql, b.kw - 1 - b.pl));
    b.wg = b.wo + 2 * b.mx, b.grid = (b.ho + 2 * b.my) * b.wg;
    b.span = (b.h - 1) * b.wg + b.w;
    return b;
}

/* floats of one thread's scratch for map_gradients: grids of push and pull, kh grids U_a, one wide plane */
static size_t backward_scratch(const backward_geometry *b) { return (size_t)(2 * b->grid + (b->kh + 1) * b->h * b->wg); }

/* gy (kh*kw, hw): the gradient of the maps Y_ab of plane no = (image, o), from the output gradient
 * and the rectified maps; also that plane's sums for the bias and alpha gradients. */
static void map_gradients(const backward_geometry *b, int64_t no, const float *grad, const float *push_r,
                          const float *pull_r, const float *ah, const float *aw, const float *alpha, int dual,
                          float *gy, float *gbias, float *galpha, float *scratch) {
    const int64_t cout = b->cout, kh = b->kh, kw = b->kw, h = b->h, w = b->w, ho = b->ho, wo = b->wo;
    const int64_t my = b->my, mx = b->mx, wg = b->wg, i_n = no / cout, o = no % cout;
    float *g1 = scratch, *g2 = g1 + b->grid, *u = g2 + b->grid, *wide = u + kh * h * wg;
    const float *push = push_r + no * ho * wo, *pull = pull_r + no * ho * wo;
    const float *gr_push = dual ? grad + (i_n * 2 * cout + o) * ho * wo : grad + no * ho * wo;
    const float *gr_pull = dual ? gr_push + cout * ho * wo : gr_push;
    const float al = dual ? -1.0f : alpha[o];
    float sb = 0.0f, sa = 0.0f;
    for (int64_t r = 0; r < ho; r++)
#pragma omp simd reduction(+ : sb, sa) /* vectorised: the sums may be reassociated */
        for (int64_t c = 0; c < wo; c++) {
            const int64_t t = r * wo + c, s = (r + my) * wg + c + mx;
            const float d1 = push[t] > 0.0f ? gr_push[t] : 0.0f;
            const float d2 = pull[t] > 0.0f ? al * gr_pull[t] : 0.0f; /* d loss / d pullconv */
            g1[s] = d1, g2[s] = d2;
            sb += d1 + d2;
            sa += -gr_pull[t] * pull[t];
        }
    if (gbias) gbias[no] = sb;
    if (galpha) galpha[no] = sa;
    tap taps[MAX_TAPS];
    int nt;
    for (int64_t a = 0; a < kh; a++) { /* U_a: the adjoint of the column filter */
        nt = 0;
        for (int64_t i = 0; i < b->ph; i++)
            if (ah[i * kh + a] != 0.0f) taps[nt++] = (tap){g2 + (b->qt - i + my) * wg, ah[i * kh + a]};
        multi_tap(u + a * h * wg, h * wg, taps, nt);
    }
    for (int64_t a = 0; a < kh; a++)
        for (int64_t bb = 0; bb < kw; bb++) { /* the row filter's adjoint, plus the push's shift */
            nt = 0;
            taps[nt++] = (tap){g1 + (b->pt - a + my) * wg + b->pl - bb + mx, 1.0f};
            for (int64_t j = 0; j < b->pw; j++)
                if (aw[j * kw + bb] != 0.0f) taps[nt++] = (tap){u + a * h * wg + b->ql - j + mx, aw[j * kw + bb]};
            multi_tap(wide, b->span, taps, nt);
            float *gab = gy + (a * kw + bb) * b->hw;
            for (int64_t r = 0; r < h; r++) memcpy(gab + r * w, wide + r * wg, sizeof(float) * w);
        }
}

/* gx: (n, cin, h, w) or NULL; gw: (nthreads, cout, groups, cin, G) per-thread sums, or NULL;
 * gbias / galpha: (n, cout) partial sums, or NULL. The products' adjoints are done here, a plane at a
 * time (pays for narrow inputs; pp_backward_maps leaves them to BLAS). */
int pp_backward(const int64_t *g, const float *x, const float *wt, const float *grad, const float *push_r,
                const float *pull_r, const float *ah, const float *aw, const float *alpha, int dual, float *gx,
                float *gw, float *gbias, float *galpha, int nthreads) {
    const backward_geometry b = backward_read(g);
    const int64_t n = g[0], cout = b.cout, cin = b.cin, hw = b.hw, groups = (b.kh * b.kw + G - 1) / G;
    int failed = 0;
#pragma omp parallel num_threads(nthreads)
    {
        record_team();
        float *scratch = malloc(sizeof(float) * (backward_scratch(&b) + groups * G * hw));
        float *gy = scratch + backward_scratch(&b);
        float *gw_t = gw ? gw + (int64_t)omp_get_thread_num() * cout * groups * cin * G : NULL;
        if (scratch) {
            memset(scratch, 0, sizeof(float) * (backward_scratch(&b) + groups * G * hw)); /* margins, padded taps */
        } else {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(static)
        for (int64_t i_n = 0; i_n < n; i_n++) {
            if (!scratch) continue;
            const float *x_n = x + i_n * cin * hw;
            float *gx_n = gx ? gx + i_n * cin * hw : NULL;
            if (gx_n) memset(gx_n, 0, sizeof(float) * cin * hw);
            for (int64_t o = 0; o < cout; o++) {
                map_gradients(&b, i_n * cout + o, grad, push_r, pull_r, ah, aw, alpha, dual, gy, gbias, galpha,
                              scratch);
                for (int64_t gi = 0; gi < groups; gi++) {
                    const float *wt_o = wt + (o * groups + gi) * cin * G;
                    if (gx_n) products_adjoint_x(gx_n, gy + gi * G * hw, wt_o, cin, hw);
                    if (gw_t) products_adjoint_w(gw_t + (o * groups + gi) * cin * G, gy + gi * G * hw, x_n, cin, hw);
                }
            }
        }
        free(scratch);
    }
    return failed;
}

/* gy (n1 - n0, cout, kh*kw, hw): the maps' gradients of images n0 .. n1-1, from which the caller gets
 * the input and weight gradients as two BLAS products (gx = k^T gy, gk = gy x^T); gbias / galpha as
 * in pp_backward. */
int pp_backward_maps(const int64_t *g, int64_t n0, int64_t n1, const float *grad, const float *push_r,
                     const float *pull_r, const float *ah, const float *aw, const float *alpha, int dual, float *gy,
                     float *gbias, float *galpha, int nthreads) {
    const backward_geometry b = backward_read(g);
    int failed = 0;
#pragma omp parallel num_threads(nthreads)
    {
        record_team();
        float *scratch = calloc(backward_scratch(&b), sizeof(float));
        if (!scratch) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(static)
        for (int64_t no = n0 * b.cout; no < n1 * b.cout; no++)
            if (scratch)
                map_gradients(&b, no, grad, push_r, pull_r, ah, aw, alpha, dual,
                              gy + (no - n0 * b.cout) * b.kh * b.kw * b.hw, gbias, galpha, scratch);
        free(scratch);
    }
    return failed;
}

/* The input-side basis filtering of the pull (see _basis.py): for every input plane,
 *   xb[a][b][i][j] = sum_s sum_t Ah[s,a] Aw[t,b] x[i*sh + s*dh - top][j*sw + t*dw - left]
 * (x is zero outside the plane), so that the pull response is the push weights applied to the
 * kh*kw planes xb[a][b] of every channel. The columns are first split into sw phases
 * (xq[r][row][m] = x[row][r + sw*m - left]), which makes every tap of the strided, dilated
 * horizontal filter a constant offset in a phase plane: the sums are flat multi_tap calls.
 *
 * q[] = {planes, h, w, kh, kw, ph, pw, ho, wo, top, left, sh, sw, dh, dw}. */
typedef struct {
    int64_t planes, h, w, kh, kw, ph, pw, ho, wo, top, left, sh, sw, dh, dw, wq, reach;
} basis_geometry;

static basis_geometry basis_read(const int64_t *q) {
    basis_geometry b = {q[0], q[1], q[2], q[3], q[4], q[5], q[6], q[7], q[8], q[9], q[10], q[11], q[12], q[13], q[14], 0, 0};
    b.reach = (b.pw - 1) * b.dw / b.sw; /* the largest in-phase offset of a horizontal tap */
    b.wq = b.wo + b.reach;              /* phase row length: every tap of every output stays in its row */
    return b;
}

/* the (phase, in-phase offset) that horizontal tap t reads */
static inline int64_t tap_phase(const basis_geometry *b, int64_t t) { return t * b->dw % b->sw; }
static inline int64_t tap_shift(const basis_geometry *b, int64_t t) { return t * b->dw / b->sw; }

/* rows the filtering reads: the image's rows with the zero padding the outputs reach */
static int64_t filter_rows(const basis_geometry *b) { return (b->ho - 1) * b->sh + (b->ph - 1) * b->dh + 1; }

/* the scratch floats filter_plane needs: the column phases of x, the vertically filtered maps, one row map */
static int64_t filter_scratch(const basis_geometry *b) {
    return b->sw * filter_rows(b) * b->wq + b->kh * b->sw * b->ho * b->wq + b->ho * b->wq;
}

/* the kh*kw basis-filtered planes of one input plane xp into dst, each ho*wo, pitch floats apart. The
 * column phases hold the padding as zero rows, so with stride 1 a vertical pass is one flat sum. */
/* xq[r][y][m] = x[y - top][r + sw*m - left], zero outside: the column phases of one plane, with its padding */
static void phase_rows(const basis_geometry *b, const float *xp, float *xq) {
    const int64_t rows = filter_rows(b), phase = rows * b->wq;
    for (int64_t r = 0; r < b->sw; r++)
        for (int64_t y = 0; y < rows; y++) {
            float *d = xq + r * phase + y * b->wq;
            const int64_t src = y - b->top;
            if (src < 0 || src >= b->h) {
                memset(d, 0, sizeof(float) * b->wq);
            } else if (b->sw == 1) {
                const int64_t lo = MAX(0, b->left), hi = b->w + b->left < b->wq ? b->w + b->left : b->wq;
                memset(d, 0, sizeof(float) * b->wq);
                if (hi > lo) memcpy(d + lo, xp + src * b->w + lo - b->left, sizeof(float) * (hi - lo));
            } else {
                for (int64_t m = 0; m < b->wq; m++) {
                    const int64_t c = r + b->sw * m - b->left;
                    d[m] = c >= 0 && c < b->w ? xp[src * b->w + c] : 0.0f;
                }
            }
        }
}

static void filter_plane(const basis_geometry *b, const float *xp, const float *ah, const float *aw, float *dst,
                         int64_t pitch, float *scratch) {
    const int64_t rows = filter_rows(b), phase = rows * b->wq, vplane = b->ho * b->wq;
    float *xq = scratch, *v = xq + b->sw * phase, *row = v + b->kh * b->sw * vplane;
    tap taps[MAX_TAPS];
    phase_rows(b, xp, xq);
    for (int64_t a = 0; a < b->kh; a++) /* v[a][r][i] = sum_s Ah[s,a] xq[r][i*sh + s*dh] */
        for (int64_t r = 0; r < b->sw; r++)
            for (int64_t i = 0; i < (b->sh == 1 ? 1 : b->ho); i++) {
                int nt = 0;
                for (int64_t s = 0; s < b->ph; s++)
                    if (ah[s * b->kh + a] != 0.0f)
                        taps[nt++] = (tap){xq + r * phase + (i * b->sh + s * b->dh) * b->wq, ah[s * b->kh + a]};
                multi_tap(v + (a * b->sw + r) * vplane + i * b->wq, b->sh == 1 ? vplane : b->wq, taps, nt);
            }
    for (int64_t a = 0; a < b->kh; a++) /* then along rows: xb[a][b] = sum_t Aw[t,b] v[a] shifted */
        for (int64_t c = 0; c < b->kw; c++) {
            int nt = 0;
            for (int64_t t = 0; t < b->pw; t++)
                if (aw[t * b->kw + c] != 0.0f)
                    taps[nt++] = (tap){v + (a * b->sw + tap_phase(b, t)) * vplane + tap_shift(b, t), aw[t * b->kw + c]};
            multi_tap(row, (b->ho - 1) * b->wq + b->wo, taps, nt);
            float *d = dst + (a * b->kw + c) * pitch;
            for (int64_t i = 0; i < b->ho; i++) memcpy(d + i * b->wo, row + i * b->wq, sizeof(float) * b->wo);
        }
}

/* the push's kh*kw shifted copies of one input plane (stride, dilation, zero padding; b's ph, pw are
 * ignored) into dst, each ho*wo, pitch floats apart: what filter_plane gives with identity matrices. On the
 * plane's padded column phases (phase_rows, in scratch: filter_scratch floats) every row of every copy is one
 * contiguous run. */
static void shift_plane(const basis_geometry *b, const float *xp, float *dst, int64_t pitch, float *scratch) {
    const int64_t phase = filter_rows(b) * b->wq;
    phase_rows(b, xp, scratch);
    for (int64_t a = 0; a < b->kh; a++)
        for (int64_t c = 0; c < b->kw; c++) {
            const float *src = scratch + tap_phase(b, c) * phase + a * b->dh * b->wq + tap_shift(b, c);
            float *d = dst + (a * b->kw + c) * pitch;
            for (int64_t i = 0; i < b->ho; i++) {
                const float *s = src + i * b->sh * b->wq;
#pragma omp simd
                for (int64_t j = 0; j < b->wo; j++) d[i * b->wo + j] = s[j];
            }
        }
}

int pp_basis_forward(const int64_t *q, const float *x, const float *ah, const float *aw, float *out, int nthreads) {
    const basis_geometry b = basis_read(q);
    int failed = 0;
#pragma omp parallel num_threads(nthreads)
    {
        record_team();
        float *scratch = malloc(sizeof(float) * filter_scratch(&b));
        if (!scratch) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(static)
        for (int64_t pl = 0; pl < b.planes; pl++)
            if (scratch)
                filter_plane(&b, x + pl * b.h * b.w, ah, aw, out + pl * b.kh * b.kw * b.ho * b.wo, b.ho * b.wo, scratch);
        free(scratch);
    }
    return failed;
}

/* Inference of a narrow layer, one image at a time in the thread's caches (see _basis.py): the push
 * planes (x at the kh*kw taps of the push, with its stride, dilation and zero padding, qa) and the
 * pull's basis planes (qb) side by side in rows of
 * 2*ho*wo; the products of blocks of G output channels with them give both responses at once, which
 * are rectified and combined. m[] = {n, cin, cout, groups}; wt: (groups, blocks, cin/groups*kh*kw, G),
 * each group's weights k[o, c, a, b] transposed, its outputs zero-padded to blocks*G. */
int pp_planes_infer(const int64_t *m, const int64_t *qa, const int64_t *qb, const float *x, const float *wt,
                    const float *ah, const float *aw, const float *bias,
                    const float *alpha, int dual, float *out, int nthreads) {
    const basis_geometry pa = basis_read(qa), pb = basis_read(qb);
    const int64_t n = m[0], cin = m[1], cout = m[2], groups = m[3], cpg = cin / groups, opg = cout / groups;
    const int64_t taps = pa.kh * pa.kw, hw = pa.h * pa.w, hwo = pa.ho * pa.wo, row = 2 * hwo;
    const int64_t blocks = (opg + G - 1) / G, nk = cpg * taps;
    int failed = 0;
#pragma omp parallel num_threads(nthreads)
    {
        record_team();
        const int64_t extra = MAX(filter_scratch(&pb), filter_scratch(&pa));
        float *planes = malloc(sizeof(float) * (cin * taps * row + G * row + extra));
        float *y = planes + cin * taps * row, *scratch = y + G * row;
        if (!planes) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(static)
        for (int64_t i_n = 0; i_n < n; i_n++) {
            if (!planes) continue;
            for (int64_t c = 0; c < cin; c++) {
                const float *xp = x + (i_n * cin + c) * hw;
                shift_plane(&pa, xp, planes + c * taps * row, row, scratch);
                filter_plane(&pb, xp, ah, aw, planes + c * taps * row + hwo, row, scratch);
            }
            for (int64_t gb = 0; gb < groups * blocks; gb++) {
                const int64_t gi = gb / blocks, o0 = gi * opg + gb % blocks * G;
                products(y, planes + gi * nk * row, wt + gb * nk * G, nk, row);
                for (int64_t j = 0; j < G && o0 + j < (gi + 1) * opg; j++) {
                    const int64_t o = o0 + j;
                    const float b0 = bias ? bias[o] : 0.0f, al = alpha[o], *sp = y + j * row, *sq = sp + hwo;
                    float *o_push = out + ((dual ? 2 : 1) * i_n * cout + o) * hwo, *o_pull = o_push + cout * hwo;
                    for (int64_t t = 0; t < hwo; t++) {
                        const float s = sp[t] + b0, q = sq[t] + b0, r = s > 0.0f ? s : 0.0f, u = q < 0.0f ? -q : 0.0f;
                        if (dual)
                            o_push[t] = r, o_pull[t] = u;
                        else
                            o_push[t] = r - al * u;
                    }
                }
            }
        }
        free(planes);
    }
    return failed;
}

/* The adjoint of pp_basis_forward: gx (planes, h, w) from gxb (planes, kh, kw, ho, wo). */
int pp_basis_backward(const int64_t *q, const float *gxb, const float *ah, const float *aw, float *gx, int nthreads) {
    const basis_geometry b = basis_read(q);
    const int64_t phase = b.h * b.wq, vplane = b.ho * b.wq, grid = b.reach + vplane;
    int failed = 0;
#pragma omp parallel num_threads(nthreads)
    {
        record_team();
        /* gxb planes on zero-margined phase-row grids, the gradient of v, of xq */
        float *g = calloc((size_t)(b.kh * b.kw * grid + b.kh * b.sw * vplane + b.sw * phase), sizeof(float));
        float *gv = g + b.kh * b.kw * grid, *gq = gv + b.kh * b.sw * vplane;
        tap taps[MAX_TAPS];
        if (!g) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(static)
        for (int64_t pl = 0; pl < b.planes; pl++) {
            if (!g) continue;
            for (int64_t ab = 0; ab < b.kh * b.kw; ab++) /* margins and row tails stay zero */
                for (int64_t i = 0; i < b.ho; i++)
                    memcpy(g + ab * grid + b.reach + i * b.wq, gxb + ((pl * b.kh * b.kw + ab) * b.ho + i) * b.wo,
                           sizeof(float) * b.wo);
            for (int64_t a = 0; a < b.kh; a++) /* gv[a][r] = sum over the taps t of phase r, and b */
                for (int64_t r = 0; r < b.sw; r++) {
                    int nt = 0;
                    for (int64_t c = 0; c < b.kw; c++)
                        for (int64_t t = 0; t < b.pw; t++)
                            if (tap_phase(&b, t) == r && aw[t * b.kw + c] != 0.0f)
                                taps[nt++] = (tap){g + (a * b.kw + c) * grid + b.reach - tap_shift(&b, t),
                                                   aw[t * b.kw + c]};
                    multi_tap(gv + (a * b.sw + r) * vplane, vplane, taps, nt);
                }
            for (int64_t r = 0; r < b.sw; r++) /* gq[r][y] = sum over (a, s, i) with i*sh + s*dh - top = y */
                for (int64_t y = 0; y < b.h; y++) {
                    int nt = 0;
                    for (int64_t a = 0; a < b.kh; a++)
                        for (int64_t s = 0; s < b.ph; s++) {
                            const int64_t e = y + b.top - s * b.dh;
                            if (e >= 0 && e % b.sh == 0 && e / b.sh < b.ho && ah[s * b.kh + a] != 0.0f)
                                taps[nt++] = (tap){gv + (a * b.sw + r) * vplane + e / b.sh * b.wq, ah[s * b.kh + a]};
                        }
                    multi_tap(gq + r * phase + y * b.wq, b.wq, taps, nt);
                }
            float *gp = gx + pl * b.h * b.w;
            for (int64_t y = 0; y < b.h; y++)
                for (int64_t c = 0; c < b.w; c++) { /* columns no output reads get zero */
                    const int64_t k = c + b.left, m = k / b.sw;
                    gp[y * b.w + c] = m < b.wq ? gq[(k % b.sw) * phase + y * b.wq + m] : 0.0f;
                }
        }
        free(g);
    }
    return failed;
}

/* The stacked planes of the basis path's training (see _stacked.py): the push's shifted copies of every input
 * plane (geometry qa, as pp_planes_infer's) into push, the pull's basis planes (qb) into pull (either NULL: not
 * wanted), one parallel region for both. */
int pp_stacked_build(const int64_t *qa, const int64_t *qb, const float *x, const float *ah, const float *aw,
                     float *push, float *pull, int nthreads) {
    const basis_geometry pa = basis_read(qa), pb = basis_read(qb);
    const int64_t planes = pa.planes, hw = pa.h * pa.w, hwo = pa.ho * pa.wo, size = pa.kh * pa.kw * hwo;
    int failed = 0;
#pragma omp parallel num_threads(nthreads)
    {
        record_team();
        float *scratch = malloc(sizeof(float) * MAX(filter_scratch(&pb), filter_scratch(&pa)));
        if (!scratch) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(dynamic, 1)
        for (int64_t t = 0; t < 2 * planes; t++) {
            if (!scratch) continue;
            if (t < planes && pull) /* the costlier filterings first */
                filter_plane(&pb, x + t * hw, ah, aw, pull + t * size, hwo, scratch);
            else if (t >= planes && push)
                shift_plane(&pa, x + (t - planes) * hw, push + (t - planes) * size, hwo, scratch);
        }
        free(scratch);
    }
    return failed;
}

/* Training of the basis path on stacked planes (see _stacked.py). y = (2, n, cout, hwo): the push's and the
 * pull's pre-activations without bias. out = ReLU(push + b) - alpha ReLU(-(pull + b)), or both maps (dual);
 * mask = 1 where the push is active, + 2 where the pull is; pull_r (or NULL) the rectified pull.
 * m[] = {n, cout, hwo}. */
int pp_stacked_rectify(const int64_t *m, const float *y, const float *bias, const float *alpha, int dual, float *out,
                       uint8_t *mask, float *pull_r, int nthreads) {
    const int64_t n = m[0], cout = m[1], hwo = m[2];
#pragma omp parallel num_threads(nthreads)
    {
        record_team();
#pragma omp for schedule(static)
        for (int64_t no = 0; no < n * cout; no++) {
            const int64_t i_n = no / cout, o = no % cout;
            const float *sp = y + no * hwo, *sq = y + (n * cout + no) * hwo, b0 = bias ? bias[o] : 0.0f, al = alpha[o];
            float *o_push = out + ((dual ? 2 : 1) * i_n * cout + o) * hwo, *o_pull = o_push + cout * hwo;
            uint8_t *mk = mask + no * hwo;
            if (dual) {
#pragma omp simd
                for (int64_t t = 0; t < hwo; t++) {
                    const float s = sp[t] + b0, q = sq[t] + b0;
                    o_push[t] = s > 0.0f ? s : 0.0f, o_pull[t] = q < 0.0f ? -q : 0.0f;
                    mk[t] = (uint8_t)((s > 0.0f) | ((q < 0.0f) << 1));
                }
            } else {
#pragma omp simd
                for (int64_t t = 0; t < hwo; t++) {
                    const float s = sp[t] + b0, q = sq[t] + b0;
                    o_push[t] = (s > 0.0f ? s : 0.0f) - al * (q < 0.0f ? -q : 0.0f);
                    mk[t] = (uint8_t)((s > 0.0f) | ((q < 0.0f) << 1));
                }
            }
            if (pull_r)
                for (int64_t t = 0; t < hwo; t++) pull_r[no * hwo + t] = sq[t] + b0 < 0.0f ? -(sq[t] + b0) : 0.0f;
        }
    }
    return 0;
}

/* The adjoint of pp_stacked_rectify: g_push, g_pull (n, cout, hwo), the gradients of both pre-activations from
 * the output gradient and the mask; gbias / galpha (n, cout) partial sums (or NULL): of both, of -grad * pull_r. */
int pp_stacked_rectify_backward(const int64_t *m, const float *grad, const uint8_t *mask, const float *alpha,
                                int dual, const float *pull_r, float *g_push, float *g_pull, float *gbias,
                                float *galpha, int nthreads) {
    const int64_t n = m[0], cout = m[1], hwo = m[2];
#pragma omp parallel num_threads(nthreads)
    {
        record_team();
#pragma omp for schedule(static)
        for (int64_t no = 0; no < n * cout; no++) {
            const int64_t i_n = no / cout, o = no % cout;
            const float *gp = grad + ((dual ? 2 : 1) * i_n * cout + o) * hwo, *gq = dual ? gp + cout * hwo : gp;
            const float al = dual ? -1.0f : alpha[o];
            const uint8_t *mk = mask + no * hwo;
            float *g1 = g_push + no * hwo, *g2 = g_pull + no * hwo, sb = 0.0f, sa = 0.0f;
#pragma omp simd reduction(+ : sb)
            for (int64_t t = 0; t < hwo; t++) {
                const float d1 = mk[t] & 1 ? gp[t] : 0.0f, d2 = mk[t] & 2 ? al * gq[t] : 0.0f;
                g1[t] = d1, g2[t] = d2;
                sb += d1 + d2;
            }
            if (galpha) {
                const float *pr = pull_r + no * hwo;
#pragma omp simd reduction(+ : sa)
                for (int64_t t = 0; t < hwo; t++) sa -= gq[t] * pr[t];
                galpha[no] = sa;
            }
            if (gbias) gbias[no] = sb;
        }
    }
    return 0;
}
