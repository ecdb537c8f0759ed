/* Kernels of the basis path (see _basis.py and _stacked.py), built into the native library. */
#include "_kernels.h"

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
    const int64_t blocks = (opg + G - 1) / G, nk = cpg * taps, pitch = skewed_pitch(row); /* rows pitch apart */
    int failed = 0;
#pragma omp parallel num_threads(nthreads)
    {
        record_team();
        const int64_t extra = MAX(filter_scratch(&pb), filter_scratch(&pa));
        float *planes = malloc(sizeof(float) * (cin * taps * pitch + G * pitch + extra));
        float *y = planes + cin * taps * pitch, *scratch = y + G * pitch;
        if (!planes) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(static)
        for (int64_t i_n = 0; i_n < n; i_n++) {
            if (!planes) continue;
            for (int64_t c = 0; c < cin; c++) {
                const float *xp = x + (i_n * cin + c) * hw;
                shift_plane(&pa, xp, planes + c * taps * pitch, pitch, scratch);
                filter_plane(&pb, xp, ah, aw, planes + c * taps * pitch + hwo, pitch, scratch);
            }
            for (int64_t gb = 0; gb < groups * blocks; gb++) {
                const int64_t gi = gb / blocks, o0 = gi * opg + gb % blocks * G;
                products(y, planes + gi * nk * pitch, wt + gb * nk * G, nk, row, pitch);
                for (int64_t j = 0; j < G && o0 + j < (gi + 1) * opg; j++) {
                    const int64_t o = o0 + j;
                    const float b0 = bias ? bias[o] : 0.0f, al = alpha[o], *sp = y + j * pitch, *sq = sp + hwo;
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
            /* vectors written out: GCC leaves the conditional loads scalar without AVX-512's masks */
            const vf zero = {0};
            vf vsb = zero;
            int64_t t = 0;
            for (; t + VW <= hwo; t += VW) {
                const vi bits = __builtin_convertvector(*(const vbytes *)(mk + t), vi);
                const vf d1 = (vf)(((bits & 1) != 0) & (vi)load(gp + t));
                const vf d2 = (vf)(((bits & 2) != 0) & (vi)(al * load(gq + t)));
                store(g1 + t, d1), store(g2 + t, d2);
                vsb += d1 + d2;
            }
            for (; t < hwo; t++) {
                const float d1 = mk[t] & 1 ? gp[t] : 0.0f, d2 = mk[t] & 2 ? al * gq[t] : 0.0f;
                g1[t] = d1, g2[t] = d2;
                sb += d1 + d2;
            }
            sb += hsum(vsb);
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
