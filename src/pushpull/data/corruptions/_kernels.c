/* The corruptions' filter, resampling and copy loops that numpy can only do in many passes (or not at
 * all); their per-pixel colour and tone steps are in _pixels.c.
 *
 * Each kernel does the same floating-point operations in the same order as the numpy code it
 * replaces (compiled with -ffp-contract=off: no fused multiply-adds), so the results are
 * bit-identical; tests/test_corruption_kernels.py holds every kernel to its numpy twin.
 * Images are contiguous (H, W, C) arrays; a call handles one image, or a batch where the
 * signature says `images`.
 */

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* One vector register of doubles (GCC/Clang vector extension; each lane the same IEEE operations): 8 with
 * AVX-512, 4 with AVX, 2 otherwise. The blocks of 32 doubles below are NB of them: held as four 64-byte
 * vectors, GCC spilled them to the stack on AVX2 (the Gaussian ran at 0.6x scipy's scalar loop). */
#if defined(__AVX512F__)
#define VD 8
#elif defined(__AVX__)
#define VD 4
#else
#define VD 2
#endif
#define NB (32 / VD)
typedef double vd __attribute__((vector_size(VD * 8)));

static inline vd loadd(const double *p) {
    vd v;
    memcpy(&v, p, sizeof v);
    return v;
}
/* Glass blur's sequential copies: x[r, q] = x[r + dy, q + dx] in the reference's visiting order
 * (rows, then columns, from size - delta down to delta + 1), offsets (iterations, positions, 2)
 * as drawn: [..., 0] = dx, [..., 1] = dy. */
void pp_glass_copies(uint8_t *x, int64_t h, int64_t w, int64_t c, int64_t delta, int64_t iterations,
                     const int64_t *offsets) {
    for (int64_t it = 0; it < iterations; it++) {
        for (int64_t r = h - delta; r > delta; r--) {
            for (int64_t q = w - delta; q > delta; q--, offsets += 2) {
                const uint8_t *src = x + ((r + offsets[1]) * w + q + offsets[0]) * c;
                uint8_t *dst = x + (r * w + q) * c;
                for (int64_t k = 0; k < c; k++) dst[k] = src[k];
            }
        }
    }
}
/* ImageMagick's motion blur on Q16 quanta: out = ClampToQuantum(sum_i k[i] * 257 x[shift_i]) // 257,
 * summed in tap order (from 0.0), edge pixels repeated: rows clamped, columns padded by width (every
 * |offset| < width). Each output row runs in blocks of 32 values held in vector registers. */
int pp_motion_blur(const uint8_t *x, int64_t h, int64_t w, int64_t c, const double *kernel, int64_t width,
                   const int64_t *dy, const int64_t *dx, uint8_t *out) {
    const int64_t n = w * c, rowlen = (w + 2 * width) * c;
    double *padded = malloc(sizeof(double) * (size_t)(h * rowlen)), acc[32];
    if (!padded) return -1;
    for (int64_t r = 0; r < h; r++) {
        for (int64_t q = 0; q < w + 2 * width; q++) {
            int64_t sq = q - width < 0 ? 0 : (q - width >= w ? w - 1 : q - width);
            for (int64_t k = 0; k < c; k++) padded[r * rowlen + q * c + k] = x[(r * w + sq) * c + k] * 257.0;
        }
    }
    for (int64_t r = 0; r < h; r++) {
        uint8_t *o = out + r * n;
        for (int64_t j0 = 0; j0 < n; j0 += 32) {
            vd a[NB];
            for (int v = 0; v < NB; v++) a[v] = (vd){0};
            const int64_t m = n - j0 < 32 ? n - j0 : 32;
            for (int64_t i = 0; i < width; i++) {
                const int64_t sr = r + dy[i] < 0 ? 0 : (r + dy[i] >= h ? h - 1 : r + dy[i]);
                const double *s = padded + sr * rowlen + (width + dx[i]) * c + j0, ki = kernel[i];
                if (m == 32) {
                    for (int v = 0; v < NB; v++) a[v] += ki * loadd(s + v * VD);
                    continue;
                }
                memcpy(acc, a, sizeof a);
                for (int64_t e = 0; e < m; e++) acc[e] += ki * s[e];
                memcpy(a, acc, sizeof a);
            }
            memcpy(acc, a, sizeof a);
            for (int64_t e = 0; e < m; e++) {
                double q = floor(acc[e] + 0.5);
                q = q < 0.0 ? 0.0 : (q > 65535.0 ? 65535.0 : q);
                o[j0 + e] = (uint8_t)(q / 257.0);
            }
        }
    }
    free(padded);
    return 0;
}

/* One clipped zoom added to out (float32): out[k, l] += float32(((r0[x0] wx0 + r0[x1] wx1) + r1[x0] wx0)
 * + r1[x1] wx1) with r0 = x[top + y0[k]] wy0[k], r1 = x[top + y1[k]] wy1[k] (double), columns
 * offset by left; scipy zoom(order=1)'s taps, as blur.clipped_zoom computes them. A source row's
 * two column gathers are kept while consecutive output rows read it (two slots). */
int pp_zoom_add(const float *x, int64_t w, int64_t c, int64_t top, int64_t left, int64_t crop_w,
                int64_t out_h, const int64_t *y0, const int64_t *y1, const double *wy0, const double *wy1,
                int64_t out_w, const int64_t *x0, const int64_t *x1, const double *wx0, const double *wx1,
                float *out) {
    (void)crop_w;
    const int64_t n = out_w * c; /* one output row, flattened over (column, channel) */
    double *u = malloc(sizeof(double) * (size_t)(2 * n));
    float *slots = malloc(sizeof(float) * (size_t)(4 * n));
    int64_t *taps = malloc(sizeof(int64_t) * (size_t)(2 * n));
    if (!u || !slots || !taps) {
        free(u), free(slots), free(taps);
        return -1;
    }
    double *u0 = u, *u1 = u + n;
    int64_t *t0 = taps, *t1 = taps + n, held[2] = {-1, -1};
    for (int64_t l = 0; l < out_w; l++) {
        for (int64_t ch = 0; ch < c; ch++) {
            t0[l * c + ch] = x0[l] * c + ch, t1[l * c + ch] = x1[l] * c + ch;
            u0[l * c + ch] = wx0[l], u1[l * c + ch] = wx1[l];
        }
    }
    for (int64_t k = 0; k < out_h; k++) {
        const float *g[2][2]; /* [row y0 / y1][column tap x0 / x1] */
        int64_t want[2] = {y0[k], y1[k]}, keep = -1;
        for (int64_t r = 0; r < 2; r++) {
            int64_t s = held[0] == want[r] ? 0 : (held[1] == want[r] ? 1 : -1);
            if (s < 0) {
                s = keep == 0 ? 1 : (keep == 1 ? 0 : (held[0] == want[1 - r] ? 1 : 0));
                const float *a = x + ((top + want[r]) * w + left) * c;
                float *d0 = slots + s * 2 * n, *d1 = d0 + n;
                for (int64_t m = 0; m < n; m++) d0[m] = a[t0[m]], d1[m] = a[t1[m]];
                held[s] = want[r];
            }
            keep = s;
            g[r][0] = slots + s * 2 * n, g[r][1] = slots + s * 2 * n + n;
        }
        const double v0 = wy0[k], v1 = wy1[k];
        float *o = out + k * n;
        for (int64_t m = 0; m < n; m++) {
            double t = ((double)g[0][0][m] * v0) * u0[m];
            t += ((double)g[0][1][m] * v0) * u1[m];
            t += ((double)g[1][0][m] * v1) * u0[m];
            t += ((double)g[1][1][m] * v1) * u1[m];
            o[m] += (float)t;
        }
    }
    free(u), free(slots), free(taps);
    return 0;
}
/* scipy.ndimage's map_coordinate for mode 'reflect' (1.6 and later): a point, or a tap's index,
 * outside the axis, mapped into it. */
static double reflect_point(double in, int64_t len) {
    if (in < 0) {
        if (len <= 1) return 0;
        int64_t sz2 = 2 * len;
        if (in < -sz2) in = sz2 * (int64_t)(-in / sz2) + in;
        return in < -len ? in + sz2 : (in > -1e-15 ? 1e-15 : -in) - 1;
    }
    if (in > len - 1) {
        if (len <= 1) return 0;
        int64_t sz2 = 2 * len;
        in -= sz2 * (int64_t)(in / sz2);
        if (in >= len) in = sz2 - in - 1;
    }
    return in;
}

/* One axis of scipy's order-1 interpolation: the two taps (reflected at the edges) and weights.
 * Returns 0 where scipy would use the constant value (never for 'reflect', kept for fidelity). */
static int linear_taps(double coord, int64_t len, int64_t *t0, int64_t *t1, double *w0, double *w1) {
    double cc = reflect_point(coord, len);
    if (!(cc > -1.0)) return 0;
    double fl = floor(cc);
    int64_t start = (int64_t)fl;
    *t0 = start, *t1 = start + 1;
    if (start < 0 || start + 1 >= len) {
        *t0 = (int64_t)reflect_point((double)start, len);
        *t1 = (int64_t)reflect_point((double)(start + 1), len);
    }
    *w0 = 1.0 - (cc - fl);
    *w1 = 1.0 - *w0;
    return 1;
}

/* map_coordinates(image, [rows + dy, cols + dx, channels], order=1, mode='reflect') of a float32
 * (H, W, C) image with per-pixel float32 displacements (H, W): scipy sums the 2 x 2 x 2 taps in
 * C order of ((value * w_row) * w_col) * w_channel; the channel coordinate is whole, so its second
 * tap has weight 0 and adds +0 (left out here). */
void pp_map_reflect(const float *img, int64_t h, int64_t w, int64_t c, const float *dx, const float *dy,
                    float *out) {
    for (int64_t i = 0; i < h; i++) {
        for (int64_t j = 0; j < w; j++) {
            int64_t y0, y1, x0, x1;
            double wy0, wy1, wx0, wx1;
            float *o = out + (i * w + j) * c;
            if (!linear_taps((double)i + (double)dy[i * w + j], h, &y0, &y1, &wy0, &wy1)
                || !linear_taps((double)j + (double)dx[i * w + j], w, &x0, &x1, &wx0, &wx1)) {
                for (int64_t k = 0; k < c; k++) o[k] = 0.0f;
                continue;
            }
            const float *a = img + (y0 * w + x0) * c, *b = img + (y0 * w + x1) * c;
            const float *d = img + (y1 * w + x0) * c, *e = img + (y1 * w + x1) * c;
            for (int64_t k = 0; k < c; k++) {
                double t = 0.0;
                t += ((double)a[k] * wy0) * wx0;
                t += ((double)b[k] * wy0) * wx1;
                t += ((double)d[k] * wy1) * wx0;
                t += ((double)e[k] * wy1) * wx1;
                o[k] = (float)t;
            }
        }
    }
}

enum { TAP_BLOCK = 32 };
_Static_assert(TAP_BLOCK == NB * VD, "a block of taps is NB vectors");

/* y[i] = rows[0][i] fw[0] + sum_{j=-r..-1} (rows[j][i] + rows[-j][i]) fw[j] for i < n, the taps in that
 * order (rows: the line's samples at offsets -r..r, each shifted by `at`). Blocks of TAP_BLOCK outputs
 * stay in NB vector registers across the taps. */
static void symmetric_taps(double *y, const double *const *rows, int64_t at, const double *fw, int64_t radius,
                           int64_t n) {
    int64_t i0 = 0;
    for (; i0 + TAP_BLOCK <= n; i0 += TAP_BLOCK) {
        const double *c = rows[0] + at + i0;
        vd acc[NB];
        for (int v = 0; v < NB; v++) acc[v] = loadd(c + v * VD) * fw[0];
        for (int64_t j = -radius; j < 0; j++) {
            const double *a = rows[j] + at + i0, *b = rows[-j] + at + i0, wj = fw[j];
            for (int v = 0; v < NB; v++) acc[v] += (loadd(a + v * VD) + loadd(b + v * VD)) * wj;
        }
        memcpy(y + i0, acc, sizeof acc);
    }
    for (int64_t i = i0; i < n; i++) {
        double acc = rows[0][at + i] * fw[0];
        for (int64_t j = -radius; j < 0; j++) acc += (rows[j][at + i] + rows[-j][at + i]) * fw[j];
        y[i] = acc;
    }
}

/* scipy.ndimage.correlate1d of float64 lines with a symmetric odd kernel (the Gaussian's), as
 * NI_Correlate1D sums it: out = x[l] w[r] + sum_{j=-r..-1} (x[l+j] + x[l-j]) w[r+j], in that order.
 * The array is (outer, len, inner) with the lines along len; edges: mode 0 'nearest' (repeat),
 * mode 1 'reflect' (period 2 len: abcddcba|abcd|dcbaabcd, as scipy's line buffer extends it).
 * Wide rows (inner >= 64) are read in place, in strips of TAP_BLOCK columns (a strip's rows under the
 * kernel stay in the L1 cache); narrow ones are copied once per outer index into an extended block, so
 * the sums run over len * inner contiguous values (and out may be in). */
int pp_correlate_symmetric(const double *in, double *out, int64_t outer, int64_t len, int64_t inner,
                           const double *weights, int64_t radius, int64_t mode) {
    int64_t ext_len = len + 2 * radius, wide = inner >= 64;
    int64_t *src = malloc(sizeof(int64_t) * (size_t)ext_len);
    double *ext = wide ? NULL : malloc(sizeof(double) * (size_t)(ext_len * inner));
    const double **rows = malloc(sizeof(double *) * (size_t)ext_len);
    if (!src || (!wide && !ext) || !rows) {
        free(ext), free(src), free(rows);
        return -1;
    }
    for (int64_t e = 0; e < ext_len; e++) {
        int64_t i = e - radius;
        if (mode == 0) {
            src[e] = i < 0 ? 0 : (i >= len ? len - 1 : i);
        } else {
            int64_t m = i % (2 * len);
            m = m < 0 ? m + 2 * len : m;
            src[e] = m < len ? m : 2 * len - 1 - m;
        }
    }
    const double *fw = weights + radius;
    for (int64_t o = 0; o < outer; o++) {
        const double *x = in + o * len * inner;
        double *y = out + o * len * inner;
        if (wide) {
            for (int64_t e = 0; e < ext_len; e++) rows[e] = x + src[e] * inner;
            for (int64_t i0 = 0; i0 < inner; i0 += TAP_BLOCK) {
                const int64_t n = inner - i0 < TAP_BLOCK ? inner - i0 : TAP_BLOCK;
                for (int64_t l = 0; l < len; l++)
                    symmetric_taps(y + l * inner + i0, rows + l + radius, i0, fw, radius, n);
            }
            continue;
        }
        for (int64_t e = 0; e < ext_len; e++) {
            for (int64_t i = 0; i < inner; i++) ext[e * inner + i] = x[src[e] * inner + i];
            rows[e] = ext + e * inner;
        }
        symmetric_taps(y, rows + radius, 0, fw, radius, len * inner);
    }
    free(ext), free(src), free(rows);
    return 0;
}

/* One level of the diamond-square plasma fractal on a (size, size) map, step the level's grid
 * spacing: the square centres, then the left and top edge midpoints, each the reference's
 * wibbled mean sum / 4 + wibble * u with its numpy sums ((a + b) + (c + d), rolls wrapping around)
 * and the level's uniform draws u (square, left, top grids; (size / step)^2 each, row-major). */
void pp_plasma_level(double *map, int64_t size, int64_t step, double wibble, const double *u_square,
                     const double *u_left, const double *u_top) {
    const int64_t k = size / step, half = step / 2, row = step * size;
    for (int64_t i = 0; i < k; i++) { /* grid row i: corners on map row i * step, centres half below */
        const double *c0 = map + i * row, *c1 = map + (i + 1 == k ? 0 : i + 1) * row;
        double *centre = map + i * row + half * size + half;
        for (int64_t j = 0; j < k; j++) {
            const int64_t a = j * step, b = (j + 1 == k ? 0 : j + 1) * step;
            double sum = (c0[a] + c1[a]) + (c0[b] + c1[b]);
            centre[j * step] = sum / 4 + wibble * u_square[i * k + j];
        }
    }
    for (int64_t i = 0; i < k; i++) {
        const double *c0 = map + i * row, *c1 = map + (i + 1 == k ? 0 : i + 1) * row;
        const int64_t up = i == 0 ? k - 1 : i - 1; /* the centre row above, wrapping */
        const double *e0 = map + i * row + half * size + half, *e1 = map + up * row + half * size + half;
        double *left = map + i * row + half, *top = map + i * row + half * size;
        for (int64_t j = 0; j < k; j++) {
            const int64_t a = j * step, b = (j + 1 == k ? 0 : j + 1) * step, p = (j == 0 ? k - 1 : j - 1) * step;
            double l = (e0[a] + e1[a]) + (c0[a] + c0[b]);
            double t = (e0[a] + e0[p]) + (c0[a] + c1[a]);
            left[a] = l / 4 + wibble * u_left[i * k + j];
            top[a] = t / 4 + wibble * u_top[i * k + j];
        }
    }
}
