/* Native kernels of the -P sequence generator (loaded by _sequence_native.py).
 *
 * Every kernel computes exactly what the numpy code it replaces computes: the same IEEE double /
 * float operations in the same order (compiled with -ffp-contract=off, never -ffast-math), the same
 * libm calls. Exactness is tested against numpy itself (tests/test_perturbations.py) and, for the
 * Poisson draws, checked again when the library is loaded. Where a kernel decides something without
 * numpy's own operation (the shot-noise thresholds), it does so only beyond doubt and otherwise asks
 * numpy's operation.
 *
 * - pp_poisson*, pp_shot_*: numpy's Generator.poisson algorithm (the multiplication method below
 *   lam = 10, Hoermann's PTRS transformed rejection from 10 on), reading its uniforms from a block of
 *   next_double() values drawn in bulk with Generator.random.
 * - pp_gaussian_frames / pp_speckle_frames: the noise frames' arithmetic after the normal draws.
 * - pp_motion_sweep: ImageMagick's motion blur of one edge-padded image at many angles.
 * - pp_hsv_factors / pp_brightness_frames, pp_gaussian_blur, pp_snow_frames, pp_water_frame,
 *   pp_running_mean, pp_convolve_columns: the other sequences' per-frame arithmetic;
 *   pp_pil_affine_bilinear and pp_perspective_map: Pillow's and OpenCV 4's warps.
 */
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

typedef struct {
    double lam, enlam, slam, loglam, a, b, invalpha, vr, log_invalpha;
} poisson_consts;

static poisson_consts consts_of(double lam) {
    poisson_consts p;
    p.lam = lam;
    p.enlam = p.slam = p.loglam = p.a = p.b = p.invalpha = p.vr = p.log_invalpha = 0.0;
    if (lam >= 10) {
        p.slam = sqrt(lam);
        p.loglam = log(lam);
        p.b = 0.931 + 2.53 * p.slam;
        p.a = -0.059 + 0.02483 * p.b;
        p.invalpha = 1.1239 + 1.1328 / (p.b - 3.4);
        p.vr = 0.9277 - 3.6224 / (p.b - 2);
        p.log_invalpha = log(p.invalpha);
    } else if (lam > 0) {
        p.enlam = exp(-lam);
    }
    return p;
}

/* log-gamma as numpy's random_loggam evaluates it (the SPECFUN series, shifted up to x0 >= 7). */
static double loggam(double x) {
    static const double a[10] = {8.333333333333333e-02, -2.777777777777778e-03, 7.936507936507937e-04,
                                 -5.952380952380952e-04, 8.417508417508418e-04, -1.917526917526918e-03,
                                 6.410256410256410e-03, -2.955065359477124e-02, 1.796443723688307e-01,
                                 -1.39243221690590e+00};
    double x0 = x, x2, gl, gl0;
    int64_t k, n = 0;
    if (x == 1.0 || x == 2.0) return 0.0;
    if (x <= 7.0) {
        n = (int64_t)(7 - x);
        x0 = x + n;
    }
    x2 = 1.0 / (x0 * x0);
    gl0 = a[9];
    for (k = 8; k >= 0; k--) {
        gl0 *= x2;
        gl0 += a[k];
    }
    gl = gl0 / x0 + 0.5 * log(2 * M_PI) + (x0 - 0.5) * log(x0) - x0;
    if (x <= 7.0) {
        for (k = 1; k <= n; k++) {
            gl -= log(x0 - 1.0);
            x0 -= 1.0;
        }
    }
    return gl;
}

/* loggam(k + 1) for small k, filled by pp_init: the same values, without their five logarithms */
#define LOGGAM_TABLE 4096
static double loggam_table[LOGGAM_TABLE];

void pp_init(void) {
    for (int64_t k = 0; k < LOGGAM_TABLE; k++) loggam_table[k] = loggam(k + 1);
}

/* (int64_t)floor(f) without a libm call (x86-64's baseline has no rounding instruction); the cast
 * itself wherever f lies outside int64 (infinite when us = 0), as numpy's code casts it. */
static inline int64_t floor_to_int(double f) {
    if (f > -9.2e18 && f < 9.2e18) {
        int64_t k = (int64_t)f;
        return (double)k > f ? k - 1 : k;
    }
    return (int64_t)floor(f);
}

/* PTRS's rejection test without its logarithms. For a rate lam >= 10 and a candidate k, numpy accepts when
 * log(V) + log(1 / alpha) - log(D) <= R(k), D = a / us^2 + b, R(k) = -lam + k log(lam) - loggam(k + 1), each side
 * rounded as numpy rounds it. In exact arithmetic that is V <= D T(k), T(k) = exp(R(k) - log(1 / alpha)); the
 * rounding of the two sides (~1e-12 relative) and of T to float (6e-8) move it by far less than PTRS_MARGIN,
 * so V below D T (1 - PTRS_MARGIN) is numpy's accept, V above D T (1 + PTRS_MARGIN) its reject, and only a V in
 * between, or a k outside the table, takes numpy's own test. */
#define PTRS_MARGIN 1e-6

typedef struct {
    const float *T;  /* T(kmin + j) for j < span; 0 where it would leave float's range (no shortcut there) */
    int64_t kmin, span;
} ptrs_table;

/* T(k) of each value's rate lam[v] for k = kmin[v] .. kmin[v] + span[v] - 1, at T + offset[v]. */
void pp_shot_thresholds(const double *lam, const int64_t *kmin, const int64_t *span, const int64_t *offset,
                        float *T) {
    for (int v = 0; v < 256; v++) {
        poisson_consts p = consts_of(lam[v]);
        for (int64_t j = 0; j < span[v]; j++) {
            int64_t k = kmin[v] + j;
            double e = -p.lam + k * p.loglam - (k < LOGGAM_TABLE ? loggam_table[k] : loggam(k + 1)) - p.log_invalpha;
            T[offset[v] + j] = (e > -80 && e < 80) ? (float)exp(e) : 0.0f;
        }
    }
}

/* One variate; reads u[*pos], u[*pos + 1], ... and advances *pos past them. Returns -1 (and leaves
 * *pos) when the block runs out before the variate is complete. tab: the rate's thresholds, or NULL. */
static inline int64_t poisson_one(const poisson_consts *p, const ptrs_table *tab, const double *u, int64_t nu,
                                  int64_t *pos) {
    int64_t i = *pos;
    if (p->lam >= 10) {
        for (;;) {
            double U, V, us;
            int64_t k;
            if (i + 2 > nu) return -1;
            U = u[i] - 0.5;
            V = u[i + 1];
            i += 2;
            us = 0.5 - fabs(U);
            k = floor_to_int((2 * p->a / us + p->b) * U + p->lam + 0.43);
            if ((us >= 0.07) && (V <= p->vr)) {
                *pos = i;
                return k;
            }
            if ((k < 0) || ((us < 0.013) && (V > us))) continue;
            if (tab) {
                uint64_t j = (uint64_t)k - (uint64_t)tab->kmin;
                double t = j < (uint64_t)tab->span ? (double)tab->T[j] : 0.0;
                if (t > 0) {
                    double bound = (p->a / (us * us) + p->b) * t;
                    if (V < bound * (1 - PTRS_MARGIN)) {
                        *pos = i;
                        return k;
                    }
                    if (V > bound * (1 + PTRS_MARGIN)) continue;
                }
            }
            if ((log(V) + p->log_invalpha - log(p->a / (us * us) + p->b)) <=
                (-p->lam + k * p->loglam - (k < LOGGAM_TABLE ? loggam_table[k] : loggam(k + 1)))) {
                *pos = i;
                return k;
            }
        }
    }
    if (p->lam == 0) return 0;
    {
        int64_t x = 0;
        double prod = 1.0;
        for (;;) {
            if (i >= nu) return -1;
            prod *= u[i++];
            if (prod > p->enlam) {
                x += 1;
            } else {
                *pos = i;
                return x;
            }
        }
    }
}

/* Generator.poisson(lam) for lam[start:n], into out[start:...] (int64), from the uniforms u[0:nu].
 * Returns how far it got (n, or the element whose uniforms ran out); *used: the uniforms consumed
 * by the elements completed. */
int64_t pp_poisson(const double *lam, int64_t start, int64_t n, const double *u, int64_t nu, int64_t *used,
                   int64_t *out) {
    int64_t e, pos = 0;
    for (e = start; e < n; e++) {
        poisson_consts p = consts_of(lam[e]);
        int64_t k = poisson_one(&p, NULL, u, nu, &pos);
        if (k < 0) break;
        out[e] = k;
    }
    *used = pos;
    return e;
}

static uint8_t shot_value(int64_t k, double level) {
    double z = (double)k / level;
    z = z < 0 ? 0 : (z > 1 ? 1 : z);
    return (uint8_t)(z * 255);
}

/* Shot-noise frames: element e (frame-major over the npix values of one clean image) is
 * uint8(255 * clip(Poisson(lam[clean[e % npix]]) / level, 0, 1)); lam: the 256 per-value rates; kmin, span,
 * offset, T: their PTRS thresholds (pp_shot_thresholds). */
int64_t pp_shot_frames(const uint8_t *clean, int64_t npix, const double *lam, double level, const int64_t *kmin,
                       const int64_t *span, const int64_t *offset, const float *T, int64_t start, int64_t n,
                       const double *u, int64_t nu, int64_t *used, uint8_t *out) {
    poisson_consts table[256];
    ptrs_table thresholds[256];
    uint8_t frame_value[1024];  /* the uint8 result of k, for the k that occur (k / level <= 1 saturates above) */
    int64_t e, pos = 0, p = start % npix, known = 1024;
    for (int v = 0; v < 256; v++) {
        table[v] = consts_of(lam[v]);
        thresholds[v].T = T + offset[v];
        thresholds[v].kmin = kmin[v];
        thresholds[v].span = span[v];
    }
    for (int64_t k = 0; k < known; k++) frame_value[k] = shot_value(k, level);
    for (e = start; e < n; e++) {
        int64_t k = poisson_one(&table[clean[p]], &thresholds[clean[p]], u, nu, &pos);
        if (k < 0) break;
        out[e] = k < known ? frame_value[k] : shot_value(k, level);
        if (++p == npix) p = 0;
    }
    *used = pos;
    return e;
}

/* Gaussian-noise frames (float32, as the reference's torch arithmetic): element e of `frames` frames of npix
 * values is uint8(255 * clip(x + level * z[e], 0, 1)), x = xv[clean[e % npix]] (the value / 255 in float32). */
WIDE void pp_gaussian_frames(const uint8_t *clean, int64_t npix, int64_t frames, const float *xv, float level,
                        const float *z, uint8_t *out) {
    for (int64_t f = 0; f < frames; f++, z += npix, out += npix) {
        for (int64_t p = 0; p < npix; p++) {
            float t = level * z[p];
            t = t + xv[clean[p]];
            t = t < 0 ? 0 : (t > 1 ? 1 : t);
            out[p] = (uint8_t)(t * 255.0f);
        }
    }
}

/* Speckle-noise frames (float64): uint8(255 * clip(x + x * (0 + level * z[e]), 0, 1)), x = xv[clean[e % npix]]. */
WIDE void pp_speckle_frames(const uint8_t *clean, int64_t npix, int64_t frames, const double *xv, double level,
                       const double *z, uint8_t *out) {
    for (int64_t f = 0; f < frames; f++, z += npix, out += npix) {
        for (int64_t p = 0; p < npix; p++) {
            double x = xv[clean[p]];
            double noise = 0.0 + level * z[p];
            double t = noise * x;
            t = t + x;
            t = t < 0 ? 0 : (t > 1 ? 1 : t);
            out[p] = (uint8_t)(t * 255);
        }
    }
}

/* scikit-image's rgb2hsv of x = rgb / 255.0 as corruptions.digital.rgb2hsv computes it (v = max, delta = max - min,
 * s = delta / v, h from the last channel equal to v, (h / 6) mod 1 as numpy's remainder; h = s = 0 where delta
 * is 0), then hsv2rgb's per-channel factors at value 1 (1, 1 - s, 1 - f s, 1 - (1 - f) s by sextant) and the value:
 * the two inputs of pp_brightness_frames. rgb: npix * 3 bytes; value: npix; factor: npix * 3. */
static const int sextant_channels[6][3] = {{0, 1, 2}, {3, 0, 2}, {2, 0, 1}, {2, 3, 0}, {1, 2, 0}, {0, 2, 3}};

void pp_hsv_factors(const uint8_t *rgb, int64_t npix, double *value, double *factor) {
    for (int64_t p = 0; p < npix; p++) {
        double r = rgb[3 * p] / 255.0, g = rgb[3 * p + 1] / 255.0, b = rgb[3 * p + 2] / 255.0;
        double v = r > g ? r : g, lo = r < g ? r : g, delta, s = 0.0, h = 0.0;
        v = v > b ? v : b;
        lo = lo < b ? lo : b;
        delta = v - lo;
        if (delta != 0.0) {
            s = delta / v;
            h = b == v ? 4.0 + (r - g) / delta : (g == v ? 2.0 + (b - r) / delta : (g - b) / delta);
            h = fmod(h / 6.0, 1.0);
            if (h < 0) h += 1.0;
            else if (h == 0) h = 0.0;
        }
        {
            double hi = floor(h * 6), f = h * 6 - hi, c[4];
            const int *which = sextant_channels[(uint8_t)hi % 6];
            c[0] = 1.0;
            c[1] = 1 - (1 - f) * s;  /* t */
            c[2] = 1 - s;            /* p */
            c[3] = 1 - f * s;        /* q */
            value[p] = v;
            for (int k = 0; k < 3; k++) factor[3 * p + k] = c[which[k]];
        }
    }
}

/* Brightness frames: uint8(clip(value + delta[t], 0, 1) * factor * 255) per channel, value (h * w) the HSV
 * value, factor (h * w * 3) what hsv2rgb gives for value 1. */
WIDE void pp_brightness_frames(const double *value, const double *factor, int64_t npix, const double *delta,
                          int64_t frames, uint8_t *out) {
    for (int64_t t = 0; t < frames; t++) {
        for (int64_t p = 0; p < npix; p++) {
            double v = value[p] + delta[t];
            v = v < 0 ? 0 : (v > 1 ? 1 : v);
            for (int b = 0; b < 3; b++) {
                double c = v * factor[p * 3 + b];
                c *= 255;
                out[(t * npix + p) * 3 + b] = (uint8_t)c;
            }
        }
    }
}

/* Four lanes of doubles / int32 (GCC and clang vector extensions: AVX2 registers in the avx2 clones);
 * v4du: the same, read from any address. */
typedef double v4d __attribute__((vector_size(32)));
typedef double v4du __attribute__((vector_size(32), aligned(8)));
typedef int32_t v4i __attribute__((vector_size(16)));

static inline uint8_t magick_char(double acc) {
    double q = floor(acc + 0.5);
    q = q < 0 ? 0 : (q > 65535 ? 65535 : q);
    return (uint8_t)(q / 257.0);
}

/* ImageMagick's motion blur of one image at T angles. padded: the image's quanta (value * 257) edge-padded
 * by pad on every side, rows of (w + 2 pad) * c doubles; dy, dx: (T, width) tap offsets; out: (T, h, w, c).
 * Each output value sums kernel[i] * tap i in tap order from 0.0 (as the numpy code), then rounds like
 * ImageMagick's Q16 -> 8-bit PNG: floor(acc + 0.5), clamp to [0, 65535], // 257. Sixteen outputs of a row
 * at a time stay in registers over all taps. Frames come in the order `order` (their tap offsets sorted, so
 * each shares the longest run of first taps with the one before): frame order[m] starts from the partial sum
 * after its first start[m] taps (width when all taps agree: the frame before's bytes), which the last frame
 * through that depth left in `saved` (keep[m, d]: frame order[m] leaves its sum after d taps there); sorted,
 * every frame in between shares those taps, so it is the same sum. Returns nonzero when its tables cannot be
 * allocated. */
WIDE int pp_motion_sweep(const double *padded, int64_t h, int64_t w, int64_t c, int64_t pad, const double *kernel,
                         int64_t width, const int64_t *dy, const int64_t *dx, int64_t frames, const int64_t *order,
                         const int64_t *start, const uint8_t *keep, uint8_t *out) {
    int64_t row = (w + 2 * pad) * c, n = w * c;
    const double **src = malloc(sizeof(double *) * (size_t)(width * frames));
    v4du *saved = malloc(sizeof(v4du) * 4 * (size_t)(width + 1));  /* v4du: malloc's alignment is enough */
    if (!src || !saved) {
        free(src);
        free(saved);
        return 1;
    }
    for (int64_t y = 0; y < h; y++) {
        int64_t j = 0;
        for (int64_t t = 0; t < frames; t++)
            for (int64_t i = 0; i < width; i++)
                src[t * width + i] = padded + (pad + y + dy[t * width + i]) * row + (pad + dx[t * width + i]) * c;
        for (; j + 16 <= n; j += 16) {
            for (int64_t m = 0; m < frames; m++) {
                const int64_t t = order[m], d0 = start[m];
                const double **taps = src + t * width;
                uint8_t *o = out + (t * h + y) * n + j;
                v4d a0 = {0, 0, 0, 0}, a1 = a0, a2 = a0, a3 = a0;
                if (d0 == width) {  /* every tap as the frame before: its bytes */
                    memcpy(o, out + (order[m - 1] * h + y) * n + j, 16);
                    continue;
                }
                if (d0 > 0) {
                    a0 = saved[4 * d0];
                    a1 = saved[4 * d0 + 1];
                    a2 = saved[4 * d0 + 2];
                    a3 = saved[4 * d0 + 3];
                }
                for (int64_t i = d0; i < width; i++) {
                    const double *p = taps[i] + j;
                    const double k = kernel[i];
                    a0 += k * *(const v4du *)p;
                    a1 += k * *(const v4du *)(p + 4);
                    a2 += k * *(const v4du *)(p + 8);
                    a3 += k * *(const v4du *)(p + 12);
                    if (keep[m * (width + 1) + i + 1]) {
                        saved[4 * (i + 1)] = a0;
                        saved[4 * (i + 1) + 1] = a1;
                        saved[4 * (i + 1) + 2] = a2;
                        saved[4 * (i + 1) + 3] = a3;
                    }
                }
                for (int b = 0; b < 4; b++) {
                    o[b] = magick_char(a0[b]);
                    o[4 + b] = magick_char(a1[b]);
                    o[8 + b] = magick_char(a2[b]);
                    o[12 + b] = magick_char(a3[b]);
                }
            }
        }
        for (; j < n; j++) {
            for (int64_t t = 0; t < frames; t++) {
                double acc = 0.0;
                for (int64_t i = 0; i < width; i++) acc += kernel[i] * src[t * width + i][j];
                out[(t * h + y) * n + j] = magick_char(acc);
            }
        }
    }
    free(src);
    free(saved);
    return 0;
}

static inline v4i bytes4(const uint8_t *p) {
    v4i r = {p[0], p[1], p[2], p[3]};
    return r;
}

typedef int64_t v4l __attribute__((vector_size(32)));

/* max(lo, min(v, hi)) of four int32 lanes, without branches */
static inline v4i clamp4(v4i v, int32_t lo, int32_t hi) {
    v4i d = v - lo;
    v = lo + (d & ~(d >> 31));
    d = v - hi;
    return hi + (d & (d >> 31));
}

/* Four output pixels' source points in PIL's bilinear affine (pp_pil_affine_bilinear): x = (cx + bx) + ax,
 * y = (cy + by) + ay (Pillow's order of the additions),
 * inside the image or not, then for inside points the fractions of (x - .5, y - .5) past their floor and the byte
 * offsets of the two columns (clamped) and two rows (row y + 1 past the last row: row y) they mix. */
static inline void affine_points(const double *cx, const double *cy, double bx, double ax, double by, double ay,
                                 double wd, double hd, int32_t wi, int32_t hi, int32_t stride, double *fx, double *fy,
                                 int32_t *x0s, int32_t *x1s, int32_t *r0s, int32_t *r1s, int32_t *inside) {
    v4d xx = *(const v4du *)cx + bx + ax, yy = *(const v4du *)cy + by + ay;
    v4l in = (xx >= 0.0) & (xx < wd) & (yy >= 0.0) & (yy < hd);
    /* outside points become 0 only to keep the int conversions defined; their pixel is black */
    xx = (v4d)((v4l)xx & in) - 0.5;
    yy = (v4d)((v4l)yy & in) - 0.5;
    v4i tx = __builtin_convertvector(xx, v4i), ty = __builtin_convertvector(yy, v4i);
    /* floor (xx, yy >= -0.5): one less where the truncation rounded up */
    v4i ix = tx + __builtin_convertvector(__builtin_convertvector(tx, v4d) > xx, v4i);
    v4i iy = ty + __builtin_convertvector(__builtin_convertvector(ty, v4d) > yy, v4i);
    v4d dx = xx - __builtin_convertvector(ix, v4d), dy = yy - __builtin_convertvector(iy, v4d);
    v4i x0 = clamp4(ix, 0, wi - 1) * 3, x1 = clamp4(ix + 1, 0, wi - 1) * 3, r0 = clamp4(iy, 0, hi - 1) * stride;
    v4i below = iy + 1 < hi;  /* iy + 1 >= 0 always */
    v4i r1 = ((iy + 1) * stride & below) | (r0 & ~below);
    v4i inl = __builtin_convertvector(in, v4i);
    memcpy(fx, &dx, sizeof dx);
    memcpy(fy, &dy, sizeof dy);
    memcpy(x0s, &x0, sizeof x0);
    memcpy(x1s, &x1, sizeof x1);
    memcpy(r0s, &r0, sizeof r0);
    memcpy(r1s, &r1, sizeof r1);
    memcpy(inside, &inl, sizeof inl);
}

/* PIL's bilinear affine transform of an RGB image (Image.transform(AFFINE, BILINEAR), fill 0), as
 * Pillow's Geometry.c computes it: the output pixel (x, y) reads the source point
 * (a0 (x + .5) + a1 (y + .5) + a2, a3 (x + .5) + a4 (y + .5) + a5), black when outside the image,
 * else the bilinear mix v = a + (b - a) d along x on rows y and y + 1 (row y + 1 repeated past the
 * last row, columns clamped), then along y, truncated to uint8. src: (h, w, 3), h * w * 3 < 2^31;
 * m: (frames, 6); out: (frames, height, width, 3), the output pixels top..top+height-1, left..left+width-1 only.
 * Per output row, first every pixel's source point, weights and byte offsets (a loop that vectorises), then
 * the mixes, the three channels (and one unused lane) side by side through the same double operations. */
WIDE int pp_pil_affine_bilinear(const uint8_t *src, int64_t h, int64_t w, const double *m, int64_t frames,
                                int64_t top, int64_t left, int64_t height, int64_t width, uint8_t *out) {
    /* a0 (x + .5) and a3 (x + .5) are the same doubles on every row: made once per frame and column;
     * the image is copied with one byte of padding, read by the unused fourth lane of the last pixel */
    int64_t lanes = (width + 3) / 4 * 4;
    double *cols = calloc(4 * (size_t)lanes, sizeof(double));
    int32_t *offs = malloc(sizeof(int32_t) * 5 * (size_t)lanes);
    uint8_t *img = malloc((size_t)(h * w * 3 + 1));
    const double wd = (double)w, hd = (double)h;
    const int32_t wi = (int32_t)w, hi = (int32_t)h, stride = (int32_t)(w * 3);
    if (!cols || !offs || !img) {
        free(cols);
        free(offs);
        free(img);
        return 1;
    }
    double *cx = cols, *cy = cols + lanes, *fx = cols + 2 * lanes, *fy = cols + 3 * lanes;
    int32_t *x0s = offs, *x1s = offs + lanes, *r0s = offs + 2 * lanes, *r1s = offs + 3 * lanes,
            *inside = offs + 4 * lanes;
    for (int64_t i = 0; i < h * w * 3; i++) img[i] = src[i];
    img[h * w * 3] = 0;
    for (int64_t t = 0; t < frames; t++) {
        const double *a = m + 6 * t;
        for (int64_t i = 0; i < width; i++) {
            double xin = (double)(int)(left + i) + 0.5;
            cx[i] = a[0] * xin;
            cy[i] = a[3] * xin;
        }
        for (int64_t y = top; y < top + height; y++) {
            uint8_t *o = out + ((t * height + (y - top)) * width) * 3;
            double yin = (double)(int)y + 0.5, by = a[1] * yin, ey = a[4] * yin;
            for (int64_t i = 0; i < width; i += 4)  /* cols and offs hold width rounded up to 4 */
                affine_points(cx + i, cy + i, by, a[2], ey, a[5], wd, hd, wi, hi, stride, fx + i, fy + i, x0s + i,
                              x1s + i, r0s + i, r1s + i, inside + i);
            for (int64_t i = 0; i < width; i++, o += 3) {
                if (!inside[i]) {
                    o[0] = o[1] = o[2] = 0;
                    continue;
                }
                const uint8_t *r0 = img + r0s[i], *r1 = img + r1s[i];
                const double dx = fx[i], dy = fy[i];
                v4i a0 = bytes4(r0 + x0s[i]), b0 = bytes4(r0 + x1s[i]), a1 = bytes4(r1 + x0s[i]),
                    b1 = bytes4(r1 + x1s[i]);
                v4d v1 = __builtin_convertvector(a0, v4d) + __builtin_convertvector(b0 - a0, v4d) * dx;
                v4d v2 = __builtin_convertvector(a1, v4d) + __builtin_convertvector(b1 - a1, v4d) * dx;
                v4i q = __builtin_convertvector(v1 + (v2 - v1) * dy, v4i);
                o[0] = (uint8_t)q[0];
                o[1] = (uint8_t)q[1];
                o[2] = (uint8_t)q[2];
            }
        }
    }
    free(cols);
    free(offs);
    free(img);
    return 0;
}

/* Snow frames: uint8(255 * clip(x + f[y, x] + f[h-1-y, w-1-x], 0, 1)) in double, x the whitened image
 * (float32, (h, w, 3)), f = flake[layer value] (value / 255.0) of each frame's blurred layer (frames, h, w). */
WIDE void pp_snow_frames(const float *x, const uint8_t *layers, int64_t frames, int64_t h, int64_t w, const double *flake,
                    uint8_t *out) {
    for (int64_t t = 0; t < frames; t++) {
        const uint8_t *layer = layers + t * h * w;
        for (int64_t y = 0; y < h; y++) {
            const uint8_t *row = layer + y * w, *turned = layer + (h - 1 - y) * w;
            for (int64_t i = 0; i < w; i++) {
                double f = flake[row[i]], g = flake[turned[w - 1 - i]];
                for (int b = 0; b < 3; b++) {
                    double v = (double)x[(y * w + i) * 3 + b] + f;
                    v = v + g;
                    v = v < 0 ? 0 : (v > 1 ? 1 : v);
                    out[((t * h + y) * w + i) * 3 + b] = (uint8_t)(v * 255);
                }
            }
        }
    }
}

/* np.convolve(line, kernel, mode='same') down every column of a (h, w) float64 layer, as
 * perturbations.convolve_same computes it: full[m] = sum over j ascending of kernel[j] * x[m - j]
 * (from 0.0), kept from m = (k - 1) / 2. */
WIDE void pp_convolve_columns(const double *x, int64_t h, int64_t w, const double *kernel, int64_t k, double *out) {
    int64_t start = (k - 1) / 2;
    for (int64_t y = 0; y < h; y++) {
        double *o = out + y * w;
        int64_t m = y + start;
        for (int64_t i = 0; i < w; i++) o[i] = 0.0;
        for (int64_t j = 0; j < k; j++) {
            int64_t src = m - j;
            if (src < 0 || src >= h) continue;
            for (int64_t i = 0; i < w; i++) o[i] += kernel[j] * x[src * w + i];
        }
    }
}

/* scipy.ndimage's gaussian_filter(x, (sigma, sigma, 0), mode='nearest') of one (h, w, c) float64 image,
 * as its symmetric correlate1d computes each pass: out = x[i] * w[0], then += (x[i - j] + x[i + j]) * w[j]
 * for j = r down to 1 (edges repeated); rows (axis 0) first, then columns, then uint8(255 * out).
 * One output row at a time: its first-pass row goes straight into an edge-extended line that stays in cache,
 * whose second pass runs tap by tap over the whole row (each output's additions in the same order as one
 * output at a time). Returns nonzero when its row buffer cannot be allocated. */
WIDE int pp_gaussian_blur(const double *x, int64_t h, int64_t w, int64_t c, const double *wt, int64_t r,
                          uint8_t *out) {
    int64_t row = w * c;
    double *line = malloc(sizeof(double) * ((size_t)(w + 2 * r) * (size_t)c + (size_t)row));
    if (!line) return 1;
    double *p = line + r * c, *v = line + (w + 2 * r) * c;
    for (int64_t y = 0; y < h; y++) {
        const double *centre = x + y * row;
        uint8_t *o = out + y * row;
        for (int64_t i = 0; i < row; i++) p[i] = centre[i] * wt[0];
        for (int64_t j = r; j >= 1; j--) {
            const double *up = x + (y - j < 0 ? 0 : y - j) * row;
            const double *down = x + (y + j >= h ? h - 1 : y + j) * row;
            const double k = wt[j];
            for (int64_t i = 0; i < row; i++) p[i] += (up[i] + down[i]) * k;
        }
        for (int64_t i = 0; i < r; i++) {  /* the row's first and last pixels repeated r times */
            for (int64_t b = 0; b < c; b++) {
                line[i * c + b] = p[b];
                p[(w + i) * c + b] = p[(w - 1) * c + b];
            }
        }
        for (int64_t i = 0; i < row; i++) v[i] = p[i] * wt[0];
        for (int64_t j = r; j >= 1; j--) {
            const double *before = p - j * c, *after = p + j * c;
            const double k = wt[j];
            for (int64_t i = 0; i < row; i++) v[i] += (before[i] + after[i]) * k;
        }
        for (int64_t i = 0; i < row; i++) o[i] = (uint8_t)(255 * v[i]);
    }
    free(line);
    return 0;
}

/* OpenCV 4 warpPerspective's map for one matrix whose window needs no clamping (w keeps its sign, every
 * source point within int16 pixels): per output pixel (x, y), the source point's x, y and w rows of the
 * inverse matrix (inv, row-major) as ((a x) + (b y)) + c, scale 32 / w, each coordinate times it rounded
 * half to even (cvRound), split into the integer pixel (>> 5) and the 5 + 5-bit fraction remap reads. */
void pp_perspective_map(const double *inv, int64_t top, int64_t left, int64_t height, int64_t width, int16_t *whole,
                        uint16_t *fraction) {
    const double magic = 6755399441055744.0;  /* 1.5 * 2^52: (v + magic) - magic rounds |v| < 2^51 half to even */
    for (int64_t y = top; y < top + height; y++) {
        double Y = (double)y;
        for (int64_t x = left; x < left + width; x++) {
            double X = (double)x, s, p, q;
            int32_t fx, fy;
            int64_t o = (y - top) * width + (x - left);
            s = inv[6] * X + inv[7] * Y;
            s += inv[8];
            s = 32.0 / s;
            p = inv[0] * X + inv[1] * Y;
            p += inv[2];
            q = inv[3] * X + inv[4] * Y;
            q += inv[5];
            p = p * s;
            q = q * s;
            fx = (int32_t)((p + magic) - magic);
            fy = (int32_t)((q + magic) - magic);
            whole[2 * o] = (int16_t)(fx >> 5);
            whole[2 * o + 1] = (int16_t)(fy >> 5);
            fraction[o] = (uint16_t)(((fy & 31) << 5) | (fx & 31));
        }
    }
}

/* Water drops over one float32 image (npix pixels, 3 channels): the mask m scaled to peak at intensity
 * (m / peak, 0 where the peak is 0; times intensity), then uint8(255 * clip(x + m * colour, 0, 1)), all in
 * float32 as weather.water_drops computes it. The mask is scaled in place first (a loop that vectorises). */
static inline uint8_t water_value(float x, float m, float colour) {
    float t = m * colour;
    t = x + t;
    t = t < 0 ? 0 : (t > 1 ? 1 : t);
    t = t * 255.0f;
    return (uint8_t)t;
}

WIDE void pp_water_frame(const float *x, float *mask, int64_t npix, float peak, float intensity, const float *colour,
                         uint8_t *out) {
    if (peak > 0)
        for (int64_t p = 0; p < npix; p++) mask[p] = (mask[p] / peak) * intensity;
    else
        for (int64_t p = 0; p < npix; p++) mask[p] = 0.0f * intensity;
    for (int64_t p = 0; p < npix; p++) {
        out[p * 3] = water_value(x[p * 3], mask[p], colour[0]);
        out[p * 3 + 1] = water_value(x[p * 3 + 1], mask[p], colour[1]);
        out[p * 3 + 2] = water_value(x[p * 3 + 2], mask[p], colour[2]);
    }
}

/* Zoom blur's running mean in float32: total = u(first) + u(zoom_1) + ... + u(zoom_i), u(v) = (float)v / 255 (the
 * float32 division numpy's astype(float32) / 255 makes), frame i = uint8(total / (i + 1) * 255), for i = 1..count;
 * total: npix floats of scratch, out: (count, npix). */
WIDE void pp_running_mean(const uint8_t *first, const uint8_t *zooms, int64_t npix, int64_t count, float *total,
                          uint8_t *out) {
    for (int64_t p = 0; p < npix; p++) total[p] = (float)first[p] / 255.0f;
    for (int64_t i = 1; i <= count; i++) {
        const uint8_t *z = zooms + (i - 1) * npix;
        uint8_t *o = out + (i - 1) * npix;
        float n = (float)(i + 1);
        for (int64_t p = 0; p < npix; p++) {
            total[p] += (float)z[p] / 255.0f;
            o[p] = (uint8_t)(total[p] / n * 255.0f);
        }
    }
}
