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
 * G), the weights k[o, c, a, b] with the kh*kw taps zero-padded to groups*G. The entry points
 * return 0, or 1 when a thread could not allocate its scratch memory (nothing is computed then).
 */
#include "_kernels.h"

/* the adjoints' blocks: XV pixel vectors of the G map gradients held while the input channels
 * stream past XC at a time; for the weights, three channels by WT taps of accumulators (WT divides G) */
#if NREG >= 32
#define XV 2
#define XC 1
#define WT 9
#else
#define XV 1
#define XC 4
#define WT 3
#endif

int pp_team;

/* how many threads the last kernel call ran with */
int pp_last_team(void) { return pp_team; }

/* gx[c][p] += sum_j wt[c][j] gy[j][p]: the products' adjoint for the input, the planes of gx and gy
 * gpitch and ypitch floats apart (see skewed_pitch in _kernels.h). XC channels at a time keep XC
 * independent chains of multiply-adds in flight. */
static void products_adjoint_x(float *restrict gx, int64_t gpitch, const float *restrict gy, int64_t ypitch,
                               const float *restrict wt, int64_t cin, int64_t hw) {
    int64_t p = 0;
    for (; p + XV * VW <= hw; p += XV * VW) {
        vf d[G][XV];
        for (int j = 0; j < G; j++)
            for (int v = 0; v < XV; v++) d[j][v] = load(gy + j * ypitch + p + v * VW);
        int64_t c = 0;
        for (; c + XC <= cin; c += XC) {
            vf a[XC][XV];
            for (int i = 0; i < XC; i++)
                for (int v = 0; v < XV; v++) a[i][v] = load(gx + (c + i) * gpitch + p + v * VW);
            for (int j = 0; j < G; j++)
                for (int i = 0; i < XC; i++)
                    for (int v = 0; v < XV; v++) a[i][v] += wt[(c + i) * G + j] * d[j][v];
            for (int i = 0; i < XC; i++)
                for (int v = 0; v < XV; v++) store(gx + (c + i) * gpitch + p + v * VW, a[i][v]);
        }
        for (; c < cin; c++) {
            vf a[XV];
            for (int v = 0; v < XV; v++) a[v] = load(gx + c * gpitch + p + v * VW);
            for (int j = 0; j < G; j++)
                for (int v = 0; v < XV; v++) a[v] += wt[c * G + j] * d[j][v];
            for (int v = 0; v < XV; v++) store(gx + c * gpitch + p + v * VW, a[v]);
        }
    }
    for (; p < hw; p++)
        for (int64_t c = 0; c < cin; c++) {
            float acc = gx[c * gpitch + p];
            for (int j = 0; j < G; j++) acc += wt[c * G + j] * gy[j * ypitch + p];
            gx[c * gpitch + p] = acc;
        }
}

/* gw[c][j] += sum_p gy[j][p] x[c][p]: the products' adjoint for the weights, gy's planes ypitch floats
 * apart. Three channels at a time, so that every load of gy feeds three multiply-adds (3 x WT
 * accumulators in registers). */
static void products_adjoint_w(float *restrict gw, const float *restrict gy, int64_t ypitch, const float *restrict x,
                               int64_t cin, int64_t hw) {
    int64_t c = 0;
    for (; c + 3 <= cin; c += 3)
        for (int j0 = 0; j0 < G; j0 += WT) {
            vf a[3][WT];
            for (int j = 0; j < WT; j++) a[0][j] = a[1][j] = a[2][j] = (vf){0};
            const float *x0 = x + c * hw, *x1 = x0 + hw, *x2 = x1 + hw;
            int64_t p = 0;
            for (; p + VW <= hw; p += VW) {
                const vf u0 = load(x0 + p), u1 = load(x1 + p), u2 = load(x2 + p);
                for (int j = 0; j < WT; j++) {
                    const vf d = load(gy + (j0 + j) * ypitch + p);
                    a[0][j] += d * u0, a[1][j] += d * u1, a[2][j] += d * u2;
                }
            }
            for (int i = 0; i < 3; i++)
                for (int j = 0; j < WT; j++) {
                    float s = hsum(a[i][j]);
                    for (int64_t q = p; q < hw; q++) s += gy[(j0 + j) * ypitch + q] * x[(c + i) * hw + q];
                    gw[(c + i) * G + j0 + j] += s;
                }
        }
    for (; c < cin; c++) {
        vf a[G];
        for (int j = 0; j < G; j++) a[j] = (vf){0};
        int64_t p = 0;
        for (; p + VW <= hw; p += VW) {
            const vf u = load(x + c * hw + p);
            for (int j = 0; j < G; j++) a[j] += load(gy + j * ypitch + p) * u;
        }
        for (int j = 0; j < G; j++) {
            float s = hsum(a[j]);
            for (int64_t q = p; q < hw; q++) s += gy[j * ypitch + q] * x[c * hw + q];
            gw[c * G + j] += s;
        }
    }
}

/* planes no of images n0 .. n1-1: the products from x and wt, or (maps not NULL) read from maps,
 * (n1 - n0, cout, kh*kw, hw) */
static int forward_planes(const int64_t *g, int64_t n0, int64_t n1, const float *x, const float *wt,
                          const float *maps, const float *ah, const float *aw, const float *bias, const float *alpha,
                          int dual, float *out, float *push_r, float *pull_r, int nthreads) {
    const int64_t cout = g[1], kh = g[2], kw = g[3], h = g[4], w = g[5], ph = g[6], pw = g[7];
    const int64_t ho = g[8], wo = g[9], pt = g[10], pl = g[11], qt = g[12], ql = g[13], cin = g[14];
    const int64_t hw = h * w, groups = (kh * kw + G - 1) / G;
    const int64_t hp = h + 2 * qt, wp = w + 2 * ql, grid = hp * wp; /* Y's zero-margined grid */
    const int64_t span = (ho - 1) * wp + wo;                         /* output rows on that grid */
    int failed = 0;
#pragma omp parallel num_threads(nthreads)
    {
        /* the products, their kh*kw grids, kh row-filtered grids Z_a, the push and pull sums */
        record_team();
        float *y = maps ? NULL : malloc(sizeof(float) * groups * G * hw);
        float *yp = calloc((size_t)((kh * kw + kh) * grid + 2 * ho * wp), sizeof(float));
        float *z = yp + kh * kw * grid, *push = z + kh * grid, *pull = push + ho * wp;
        tap taps[MAX_TAPS];
        const int ok = (maps || y) && yp;
        if (!ok) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(static)
        for (int64_t no = n0 * cout; no < n1 * cout; no++) {
            if (!ok) continue;
            const int64_t i_n = no / cout, o = no % cout;
            const float *ys = maps ? maps + (no - n0 * cout) * kh * kw * hw : y;
            if (!maps)
                for (int64_t gi = 0; gi < groups; gi++)
                    products(y + gi * G * hw, x + i_n * cin * hw, wt + (o * groups + gi) * cin * G, cin, hw, hw);
            for (int64_t ab = 0; ab < kh * kw; ab++)
                for (int64_t r = 0; r < h; r++)
                    memcpy(yp + ab * grid + (r + qt) * wp + ql, ys + ab * hw + r * w, sizeof(float) * w);
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

int pp_forward(const int64_t *g, const float *x, const float *wt, const float *ah, const float *aw,
               const float *bias, const float *alpha, int dual, float *out, float *push_r, float *pull_r,
               int nthreads) {
    return forward_planes(g, 0, g[0], x, wt, NULL, ah, aw, bias, alpha, dual, out, push_r, pull_r, nthreads);
}

/* the forward of images n0 .. n1-1 from their products computed by the caller (BLAS, for wide inputs):
 * maps (n1 - n0, cout, kh*kw, hw) */
int pp_forward_maps(const int64_t *g, int64_t n0, int64_t n1, const float *maps, const float *ah, const float *aw,
                    const float *bias, const float *alpha, int dual, float *out, float *push_r, float *pull_r,
                    int nthreads) {
    return forward_planes(g, n0, n1, NULL, NULL, maps, ah, aw, bias, alpha, dual, out, push_r, pull_r, nthreads);
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

/* gy (kh*kw planes of hw, ypitch floats apart): the gradient of the maps Y_ab of plane no = (image, o),
 * from the output gradient and the rectified maps; also that plane's sums for the bias and alpha gradients. */
static void map_gradients(const backward_geometry *b, int64_t no, const float *grad, const float *push_r,
                          const float *pull_r, const float *ah, const float *aw, const float *alpha, int dual,
                          float *gy, int64_t ypitch, float *gbias, float *galpha, float *scratch) {
    const int64_t cout = b->cout, kh = b->kh, kw = b->kw, h = b->h, w = b->w, ho = b->ho, wo = b->wo;
    const int64_t my = b->my, mx = b->mx, wg = b->wg, i_n = no / cout, o = no % cout;
    float *g1 = scratch, *g2 = g1 + b->grid, *u = g2 + b->grid, *wide = u + kh * h * wg;
    const float *push = push_r + no * ho * wo, *pull = pull_r + no * ho * wo;
    const float *gr_push = dual ? grad + (i_n * 2 * cout + o) * ho * wo : grad + no * ho * wo;
    const float *gr_pull = dual ? gr_push + cout * ho * wo : gr_push;
    const float al = dual ? -1.0f : alpha[o];
    /* vectors written out: GCC left this loop scalar on AVX2 (a conditional product it would not if-convert) */
    const vf zero = {0};
    vf vb = zero, va = zero;
    float sb = 0.0f, sa = 0.0f;
    for (int64_t r = 0; r < ho; r++) {
        const float *rp = push + r * wo, *rq = pull + r * wo, *gp = gr_push + r * wo, *gq = gr_pull + r * wo;
        float *d1 = g1 + (r + my) * wg + mx, *d2 = g2 + (r + my) * wg + mx; /* d loss / d push, d pullconv */
        int64_t c = 0;
        for (; c + VW <= wo; c += VW) {
            const vf p = load(rp + c), q = load(rq + c), g = load(gq + c);
            const vf e1 = (vf)((vi)(p > zero) & (vi)load(gp + c)), e2 = (vf)((vi)(q > zero) & (vi)(al * g));
            store(d1 + c, e1), store(d2 + c, e2);
            vb += e1 + e2, va -= g * q;
        }
        for (; c < wo; c++) {
            const float e1 = rp[c] > 0.0f ? gp[c] : 0.0f, e2 = rq[c] > 0.0f ? al * gq[c] : 0.0f;
            d1[c] = e1, d2[c] = e2;
            sb += e1 + e2, sa -= gq[c] * rq[c];
        }
    }
    sb += hsum(vb), sa += hsum(va);
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
            float *gab = gy + (a * kw + bb) * ypitch;
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
        /* zeroed: the grids' margins, and gy's planes of padded taps; then the input gradient of one image */
        const int64_t gpitch = skewed_pitch(hw); /* of the gradients' planes */
        float *scratch = calloc(backward_scratch(&b) + groups * G * gpitch + (gx ? cin * gpitch : 0), sizeof(float));
        float *gy = scratch + backward_scratch(&b), *gx_s = gy + groups * G * gpitch;
        float *gw_t = gw ? gw + (int64_t)omp_get_thread_num() * cout * groups * cin * G : NULL;
        if (!scratch) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(static)
        for (int64_t i_n = 0; i_n < n; i_n++) {
            if (!scratch) continue;
            const float *x_n = x + i_n * cin * hw;
            float *gx_n = gx ? gx + i_n * cin * hw : NULL;
            if (gx_n) memset(gx_s, 0, sizeof(float) * cin * gpitch);
            for (int64_t o = 0; o < cout; o++) {
                map_gradients(&b, i_n * cout + o, grad, push_r, pull_r, ah, aw, alpha, dual, gy, gpitch, gbias, galpha,
                              scratch);
                for (int64_t gi = 0; gi < groups; gi++) {
                    const float *wt_o = wt + (o * groups + gi) * cin * G;
                    const float *gy_g = gy + gi * G * gpitch;
                    if (gx_n) products_adjoint_x(gx_s, gpitch, gy_g, gpitch, wt_o, cin, hw);
                    if (gw_t) products_adjoint_w(gw_t + (o * groups + gi) * cin * G, gy_g, gpitch, x_n, cin, hw);
                }
            }
            if (gx_n)
                for (int64_t c = 0; c < cin; c++) memcpy(gx_n + c * hw, gx_s + c * gpitch, sizeof(float) * hw);
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
                              gy + (no - n0 * b.cout) * b.kh * b.kw * b.hw, b.hw, gbias, galpha, scratch);
        free(scratch);
    }
    return failed;
}
