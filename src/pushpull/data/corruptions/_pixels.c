/* Per-pixel colour and tone steps of the corruptions, each the reference's float operations and its
 * uint8 cast in one pass (the numpy code does them in several, each over a fresh array).
 *
 * Each kernel does the same floating-point operations in the same order as the numpy code it
 * replaces (compiled with -ffp-contract=off: no fused multiply-adds), so the results are
 * bit-identical; tests/test_corruption_kernels.py holds every kernel to its numpy twin.
 * Images are contiguous (H, W, C) arrays; a call handles one image, or a batch where the
 * signature says `images`.
 */

#include <math.h>
#include <stdint.h>
#include <string.h>

/* np.uint8(np.clip(t, 0, 1) * 255): clip, scale, truncate (float64 and float32 arithmetic). */
static inline uint8_t unit_u8(double t) {
    t = t < 0.0 ? 0.0 : (t > 1.0 ? 1.0 : t);
    return (uint8_t)(t * 255);
}

static inline uint8_t unit_u8f(float t) {
    t = t < 0.0f ? 0.0f : (t > 1.0f ? 1.0f : t);
    return (uint8_t)(t * 255.0f);
}

/* A uint8 value / 255.0 in float64, as numpy's true division (a division: vectorised, unlike a table). */
static inline double unit_of(uint8_t v) { return v / 255.0; }
/* rgb2hsv of m pixels with channel S (edit_s) or V set to clip(value * scale + shift, 0, 1). Written without
 * branches (every candidate computed, one selected: a division by a zero delta is never selected). */
static void hsv_block(const uint8_t *restrict in, double *restrict hue, double *restrict sat, double *restrict val,
                      int64_t m, int edit_s, double scale, double shift) {
    for (int64_t i = 0; i < m; i++) {
        double r = unit_of(in[3 * i]), g = unit_of(in[3 * i + 1]), b = unit_of(in[3 * i + 2]);
        double v = r > g ? r : g;
        v = v > b ? v : b;
        double lo = r < g ? r : g;
        lo = lo < b ? lo : b;
        double delta = v - lo;
        int grey = delta == 0.0;
        double hb = 4.0 + (r - g) / delta, hg = 2.0 + (b - r) / delta, hr = (g - b) / delta;
        double h = b == v ? hb : (g == v ? hg : hr);
        h = h / 6.0; /* in [-1/6, 5/6]: fmod(h, 1.0) is h itself */
        double wrapped = h + 1.0, sv = delta / v;
        h = h != 0.0 ? (h < 0.0 ? wrapped : h) : 0.0; /* numpy's float remainder: the sign of the divisor */
        double s = grey ? 0.0 : sv;
        double e = (edit_s ? s : v) * scale + shift;
        e = e < 0.0 ? 0.0 : (e > 1.0 ? 1.0 : e);
        hue[i] = grey ? 0.0 : h, sat[i] = edit_s ? e : s, val[i] = edit_s ? v : e;
    }
}

/* hsv2rgb of m pixels, then the reference's uint8 cast of clip(rgb, 0, 1) * 255. floor(h * 6) for h * 6
 * in [+0, 6] is the round-to-nearest of 2^52 + y, less one where that rounded up (exact; it vectorises). */
static void rgb_block(const double *restrict hue, const double *restrict sat, const double *restrict val,
                      uint8_t *restrict out, int64_t m) {
    for (int64_t i = 0; i < m; i++) {
        double h = hue[i], s = sat[i], v = val[i];
        double y = h * 6, near = (y + 4503599627370496.0) - 4503599627370496.0, below = near - 1.0;
        double hi = near > y ? below : near, f = h * 6 - hi;
        double p = v * (1 - s), q = v * (1 - f * s), t = v * (1 - (1 - f) * s);
        /* sextant hi (6 is sextant 0): which of v, t, p, q go to R, G, B */
        double rr = (hi == 1) ? q : ((hi == 2) | (hi == 3)) ? p : (hi == 4) ? t : v;
        double gg = ((hi == 1) | (hi == 2)) ? v : (hi == 3) ? q : ((hi == 4) | (hi == 5)) ? p : t;
        double bb = (hi == 2) ? t : ((hi == 3) | (hi == 4)) ? v : (hi == 5) ? q : p;
        out[3 * i] = unit_u8(rr), out[3 * i + 1] = unit_u8(gg), out[3 * i + 2] = unit_u8(bb);
    }
}

/* scikit-image's rgb2hsv, one HSV channel (1: S, 2: V) set to clip(value * scale + shift, 0, 1), hsv2rgb,
 * then the reference's uint8 cast of clip(rgb, 0, 1) * 255; npix RGB pixels, in blocks of 256. */
void pp_hsv_edit(const uint8_t *in, uint8_t *out, int64_t npix, int64_t channel, double scale, double shift) {
    double hue[256], sat[256], val[256];
    for (int64_t i0 = 0; i0 < npix; i0 += 256) {
        const int64_t m = npix - i0 < 256 ? npix - i0 : 256;
        hsv_block(in + 3 * i0, hue, sat, val, m, channel == 1, scale, shift);
        rgb_block(hue, sat, val, out + 3 * i0, m);
    }
}
/* Snow's flakes: blur.clipped_zoom of a float64 (h, w) layer (pp_zoom_add's taps and sums, in float64),
 * 0 below threshold, then to_uint8; out (out_h, out_w). */
void pp_snow_layer(const double *x, int64_t w, int64_t top, int64_t left, int64_t out_h, const int64_t *y0,
                   const int64_t *y1, const double *wy0, const double *wy1, int64_t out_w, const int64_t *x0,
                   const int64_t *x1, const double *wx0, const double *wx1, double threshold, uint8_t *out) {
    for (int64_t k = 0; k < out_h; k++, out += out_w) {
        const double *r0 = x + (top + y0[k]) * w + left, *r1 = x + (top + y1[k]) * w + left;
        const double v0 = wy0[k], v1 = wy1[k];
        for (int64_t l = 0; l < out_w; l++) {
            double t = (r0[x0[l]] * v0) * wx0[l];
            t += (r0[x1[l]] * v0) * wx1[l];
            t += (r1[x0[l]] * v1) * wx0[l];
            t += (r1[x1[l]] * v1) * wx1[l];
            out[l] = t < threshold ? 0 : unit_u8(t);
        }
    }
}
/* to_uint8 of n float64 (single = 0) or float32 (single = 1) values. */
void pp_to_u8(const void *x, int64_t n, int64_t single, uint8_t *out) {
    if (single) {
        const float *f = x;
        for (int64_t i = 0; i < n; i++) out[i] = unit_u8f(f[i]);
    } else {
        const double *d = x;
        for (int64_t i = 0; i < n; i++) out[i] = unit_u8(d[i]);
    }
}

/* Additive (x + noise) or speckle (x + noise * x) noise on x = in / 255, then to_uint8. */
void pp_noise_u8(const uint8_t *in, int64_t n, const double *noise, int64_t speckle, uint8_t *out) {
    if (speckle) {
        for (int64_t i = 0; i < n; i++) {
            double x = unit_of(in[i]), t = noise[i] * x;
            out[i] = unit_u8(t + x);
        }
    } else {
        for (int64_t i = 0; i < n; i++) out[i] = unit_u8(unit_of(in[i]) + noise[i]);
    }
}

/* Salt and pepper: flipped where flip <= amount, to 1 where also salt <= 0.5 else to 0; to_uint8. */
void pp_impulse(const uint8_t *in, int64_t n, const double *flip, const double *salt, double amount,
                uint8_t *out) {
    for (int64_t i = 0; i < n; i++)
        out[i] = unit_u8(flip[i] <= amount ? (salt[i] <= 0.5 ? 1.0 : 0.0) : unit_of(in[i]));
}

/* Contrast: ((x - mean) * factor) + mean per channel, means (images, c), then to_uint8. A value's result
 * depends only on its byte and channel: each image's (c, 256) table is computed once, then looked up; c <= 4. */
void pp_contrast(const uint8_t *in, int64_t images, int64_t npix, int64_t c, const double *means, double factor,
                 uint8_t *out) {
    uint8_t table[4][256];
    for (int64_t k = 0; k < images; k++, means += c) {
        for (int64_t ch = 0; ch < c; ch++) {
            for (int v = 0; v < 256; v++) {
                double t = (unit_of((uint8_t)v) - means[ch]) * factor;
                table[ch][v] = unit_u8(t + means[ch]);
            }
        }
        for (int64_t p = 0; p < npix; p++, in += c, out += c)
            for (int64_t ch = 0; ch < c; ch++) out[ch] = table[ch][in[ch]];
    }
}

/* Fog: ((x + strength * map) * top) / (top + strength) with top = the image's largest value, to_uint8;
 * in (images, h, w, 3), maps (images, mapsize, mapsize) of which the top-left h x w is used. */
void pp_fog(const uint8_t *in, int64_t images, int64_t h, int64_t w, const double *maps, int64_t mapsize,
            double strength, uint8_t *out) {
    const int64_t n = h * w * 3;
    for (int64_t k = 0; k < images; k++, in += n, out += n, maps += mapsize * mapsize) {
        uint8_t top = 0;
        for (int64_t i = 0; i < n; i++) top = in[i] > top ? in[i] : top;
        const double peak = unit_of(top), scale = peak + strength;
        for (int64_t r = 0; r < h; r++) {
            for (int64_t q = 0; q < w; q++) {
                const double add = strength * maps[r * mapsize + q];
                for (int64_t ch = 0; ch < 3; ch++) {
                    const int64_t i = (r * w + q) * 3 + ch;
                    double t = unit_of(in[i]) + add;
                    t = t * peak;
                    out[i] = unit_u8(t / scale);
                }
            }
        }
    }
}

/* Frost: uint8(clip(image_weight * x + frost_weight * crop, 0, 255)) on 0..255 float64 values. */
void pp_frost(const uint8_t *in, const uint8_t *crops, int64_t n, double image_weight, double frost_weight,
              uint8_t *out) {
    for (int64_t i = 0; i < n; i++) {
        double t = image_weight * (double)in[i] + frost_weight * (double)crops[i];
        out[i] = (uint8_t)(t < 0.0 ? 0.0 : (t > 255.0 ? 255.0 : t));
    }
}

/* Snow's blend (float32): keep * max(x, 1.5 gray + 0.5) + blend * x, then (float64) plus the flakes and
 * their 180-degree rotation, to_uint8; x (images, h, w, 3), gray (images, h, w), layers (images, frames, h, w). */
void pp_snow_blend(const float *x, const float *gray, const uint8_t *layers, int64_t images, int64_t frames,
                   int64_t h, int64_t w, double blend, double keep, uint8_t *out) {
    const float b = (float)blend, kp = (float)keep;
    const int64_t npix = h * w;
    for (int64_t k = 0; k < images; k++, x += 3 * npix, gray += npix) {
        for (int64_t f = 0; f < frames; f++, layers += npix, out += 3 * npix) {
            for (int64_t p = 0; p < npix; p++) {
                float g = gray[p] * 1.5f;
                g = g + 0.5f;
                double flakes = unit_of(layers[p]), turned = unit_of(layers[npix - 1 - p]);
                for (int64_t ch = 0; ch < 3; ch++) {
                    float v = x[3 * p + ch], white = v >= g ? v : g;
                    white = white * kp;
                    v = v * b;
                    v = v + white;
                    double t = (double)v + flakes;
                    out[3 * p + ch] = unit_u8(t + turned);
                }
            }
        }
    }
}

/* Spatter's water: m / peak (0 where peak is 0) times intensity, times the colour, plus x (float32),
 * to_uint8; x (images, npix, 3), m (images, npix), peak (images). */
void pp_water(const float *x, const float *m, const float *peak, int64_t images, int64_t npix, double intensity,
              const float *colour, uint8_t *out) {
    const float a = (float)intensity;
    for (int64_t k = 0; k < images; k++) {
        for (int64_t p = 0; p < npix; p++, x += 3, out += 3, m++) {
            float s = peak[k] > 0.0f ? *m / peak[k] : 0.0f;
            s = s * a;
            for (int64_t ch = 0; ch < 3; ch++) {
                float t = s * colour[ch];
                out[ch] = unit_u8f(t + x[ch]);
            }
        }
    }
}

/* Spatter's mud: x * (1 - m) + colour * m (float32), to_uint8; x (npix, 3), m (npix). */
void pp_mud(const float *x, const float *m, int64_t npix, const float *colour, uint8_t *out) {
    for (int64_t p = 0; p < npix; p++, x += 3, out += 3) {
        const float keep = 1.0f - m[p];
        for (int64_t ch = 0; ch < 3; ch++) {
            float t = x[ch] * keep;
            out[ch] = unit_u8f(t + colour[ch] * m[p]);
        }
    }
}
