/* Native kernels of the -P sequence generator (loaded by _sequence_native.py): this file holds the
 * draws and the per-pixel arithmetic, _sequence_warps.c the kernels that move pixels.
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
 *   next_double() values drawn in bulk (Generator.random's, made by _sequence_draws.c where it serves;
 *   pp_shot_frames_drawn draws its blocks itself).
 * - pp_gaussian_frames / pp_speckle_frames: the noise frames' arithmetic after the normal draws.
 * - pp_motion_sweep: ImageMagick's motion blur of one edge-padded image at many angles.
 * - pp_hsv_factors / pp_brightness_frames, pp_gaussian_blur, pp_snow_frames, pp_water_frame,
 *   pp_running_mean, pp_convolve_columns: the other sequences' per-frame arithmetic;
 *   pp_pil_affine_bilinear and pp_perspective_warp: Pillow's and OpenCV 4's warps.
 */
#include "_sequences.h"

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

/* pp_shot_frames over all n elements with its uniforms drawn here, a block at a time, from the PCG64 state at
 * `state` (pp_pcg64_doubles) into block[0:size], an unfinished variate's uniforms moved to the block's front: no
 * return to Python per block. Returns the uniforms consumed, or -1 where one variate needs more than a block
 * holds; the state is left past the last block drawn (the caller puts it at the consumed count). */
int64_t pp_shot_frames_drawn(void *state, double *block, int64_t size, const uint8_t *clean, int64_t npix,
                             const double *lam, double level, const int64_t *kmin, const int64_t *span,
                             const int64_t *offset, const float *T, int64_t n, uint8_t *out) {
    int64_t done = 0, tail = 0, consumed = 0, used;
    while (done < n) {
        pp_pcg64_doubles(state, size - tail, block + tail);
        done = pp_shot_frames(clean, npix, lam, level, kmin, span, offset, T, done, n, block, size, &used, out);
        if (used == 0 && done < n) return -1;
        consumed += used;
        tail = size - used;
        memmove(block, block + used, (size_t)tail * sizeof(double));
    }
    return consumed;
}

/* Gaussian-noise frames (float32, as the reference's torch arithmetic): element e of `frames` frames of npix
 * values is uint8(255 * clip(x[e % npix] + level * z[e], 0, 1)), x: each pixel's value / 255 in float32. */
WIDE void pp_gaussian_frames(const float *x, int64_t npix, int64_t frames, float level, const float *z, uint8_t *out) {
    for (int64_t f = 0; f < frames; f++, z += npix, out += npix) {
        for (int64_t p = 0; p < npix; p++) {
            float t = level * z[p];
            out[p] = clipped_byte_f(t + x[p]);
        }
    }
}

/* Speckle-noise frames (float64): uint8(255 * clip(x + x * (0 + level * z[e]), 0, 1)), x = x[e % npix] (each
 * pixel's value / 255.0). */
WIDE void pp_speckle_frames(const double *x, int64_t npix, int64_t frames, double level, const double *z,
                            uint8_t *out) {
    for (int64_t f = 0; f < frames; f++, z += npix, out += npix) {
        for (int64_t p = 0; p < npix; p++) {
            double noise = 0.0 + level * z[p];
            double t = noise * x[p];
            out[p] = clipped_byte(t + x[p]);
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

/* Snow frames: uint8(255 * clip(x + f[y, x] + f[h-1-y, w-1-x], 0, 1)) in double, x the whitened image
 * (float32, (h, w, 3)), f = layer value / 255.0 of each frame's blurred layer (frames, h, w): the division numpy's
 * arange(256) / 255.0 makes, here per pixel rather than as a table lookup, so the row loops vectorise. */
WIDE void pp_snow_frames(const float *x, const uint8_t *layers, int64_t frames, int64_t h, int64_t w, double *scratch,
                         uint8_t *out) {
    double *f = scratch, *g = scratch + w;  /* 2 w doubles: one row's flakes, and its turned row's reversed */
    for (int64_t t = 0; t < frames; t++) {
        const uint8_t *layer = layers + t * h * w;
        for (int64_t y = 0; y < h; y++) {
            const uint8_t *row = layer + y * w, *turned = layer + (h - 1 - y) * w;
            const float *xs = x + y * w * 3;
            uint8_t *o = out + (t * h + y) * w * 3;
            for (int64_t i = 0; i < w; i++) {
                f[i] = (double)row[i] / 255.0;
                g[i] = (double)turned[w - 1 - i] / 255.0;
            }
            for (int64_t i = 0; i < w; i++)
                for (int b = 0; b < 3; b++) {
                    double v = (double)xs[i * 3 + b] + f[i];
                    o[i * 3 + b] = clipped_byte(v + g[i]);
                }
        }
    }
}

/* Water drops over one float32 image (npix pixels, 3 channels): the mask m scaled to peak at intensity
 * (m / peak, 0 where the peak is 0; times intensity), then uint8(255 * clip(x + m * colour, 0, 1)), all in
 * float32 as weather.water_drops computes it. The mask is scaled in place first (a loop that vectorises). */
WIDE void pp_water_frame(const float *x, float *mask, int64_t npix, float peak, float intensity, const float *colour,
                         uint8_t *out) {
    enum { CHUNK = 512 };  /* pixels whose shading m * colour is spread to one value per channel at a time */
    float shade[3 * CHUNK];
    if (peak > 0)
        for (int64_t p = 0; p < npix; p++) mask[p] = (mask[p] / peak) * intensity;
    else
        for (int64_t p = 0; p < npix; p++) mask[p] = 0.0f * intensity;
    for (int64_t start = 0; start < npix; start += CHUNK) {
        const int64_t count = npix - start < CHUNK ? npix - start : CHUNK;
        const float *xs = x + 3 * start;
        uint8_t *o = out + 3 * start;
        for (int64_t i = 0; i < count; i++)
            for (int b = 0; b < 3; b++) shade[3 * i + b] = mask[start + i] * colour[b];
        for (int64_t q = 0; q < 3 * count; q++) {  /* channels side by side: a loop that vectorises */
            o[q] = clipped_byte_f(xs[q] + shade[q]);
        }
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
