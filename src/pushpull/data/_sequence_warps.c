/* The -P sequence kernels that move pixels: ImageMagick's motion blur, Pillow's bilinear affine, OpenCV 4's
 * perspective map, and the column convolution and Gaussian blur (see _sequence_noise.c for the rules they keep). */
#include "_sequences.h"

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

/* One symmetric correlate1d pass over n values: dst[i] = centre[i] * wt[0], then += (lo[j][i] + hi[j][i]) * wt[j]
 * for j = r down to 1, sixteen outputs held in registers over all taps (each output's operations in that order). */
static inline void symmetric_pass(double *dst, const double *centre, const double *const *lo, const double *const *hi,
                                  const double *wt, int64_t r, int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        v4d acc[4];
        for (int q = 0; q < 4; q++) acc[q] = *(const v4du *)(centre + i + 4 * q) * wt[0];
        for (int64_t j = r; j >= 1; j--) {
            const double k = wt[j];
            for (int q = 0; q < 4; q++)
                acc[q] += (*(const v4du *)(lo[j] + i + 4 * q) + *(const v4du *)(hi[j] + i + 4 * q)) * k;
        }
        for (int q = 0; q < 4; q++) *(v4du *)(dst + i + 4 * q) = acc[q];
    }
    for (; i < n; i++) {
        double acc = centre[i] * wt[0];
        for (int64_t j = r; j >= 1; j--) acc += (lo[j][i] + hi[j][i]) * wt[j];
        dst[i] = acc;
    }
}

/* scipy.ndimage's gaussian_filter(x, (sigma, sigma, 0), mode='nearest') of one (h, w, c) float64 image,
 * as its symmetric correlate1d computes each pass: out = x[i] * w[0], then += (x[i - j] + x[i + j]) * w[j]
 * for j = r down to 1 (edges repeated); rows (axis 0) first, then columns, then uint8(255 * out).
 * One output row at a time: its first-pass row goes straight into an edge-extended line that stays in cache,
 * whose second pass reads it at offsets of +-j pixels. Returns nonzero when its buffers cannot be allocated. */
WIDE int pp_gaussian_blur(const double *x, int64_t h, int64_t w, int64_t c, const double *wt, int64_t r,
                          uint8_t *out) {
    int64_t row = w * c;
    double *line = malloc(sizeof(double) * ((size_t)(w + 2 * r) * (size_t)c + (size_t)row));
    const double **taps = malloc(sizeof(double *) * 4 * (size_t)(r + 1));  /* rows' lo, hi; then the line's */
    if (!line || !taps) {
        free(line);
        free(taps);
        return 1;
    }
    double *p = line + r * c, *v = line + (w + 2 * r) * c;
    const double **up = taps, **down = taps + (r + 1), **before = taps + 2 * (r + 1), **after = taps + 3 * (r + 1);
    for (int64_t j = 1; j <= r; j++) before[j] = p - j * c, after[j] = p + j * c;
    for (int64_t y = 0; y < h; y++) {
        uint8_t *o = out + y * row;
        for (int64_t j = 1; j <= r; j++) {
            up[j] = x + (y - j < 0 ? 0 : y - j) * row;
            down[j] = x + (y + j >= h ? h - 1 : y + j) * row;
        }
        symmetric_pass(p, x + y * row, up, down, wt, r, row);
        for (int64_t i = 0; i < r; i++) {  /* the row's first and last pixels repeated r times */
            for (int64_t b = 0; b < c; b++) {
                line[i * c + b] = p[b];
                p[(w + i) * c + b] = p[(w - 1) * c + b];
            }
        }
        symmetric_pass(v, p, before, after, wt, r, row);
        for (int64_t i = 0; i < row; i++) o[i] = (uint8_t)(255 * v[i]);
    }
    free(taps);
    free(line);
    return 0;
}

/* OpenCV 4 warpPerspective's source point of each pixel of one output row y, columns x0 .. x0 + n - 1, for a
 * matrix whose window needs no clamping (w keeps its sign, every source point within int16 pixels): the x, y and
 * w rows of the inverse matrix (inv, row-major) as ((a x) + (b y)) + c, scale 32 / w, each coordinate times it
 * rounded half to even (cvRound), in 1/32 px (fx, fy). int32 columns: the loop converts and stores in vectors. */
static inline void perspective_row(const double *inv, double Y, int32_t x0, int32_t n, int32_t *fx, int32_t *fy) {
    const double magic = 6755399441055744.0;  /* 1.5 * 2^52: (v + magic) - magic rounds |v| < 2^51 half to even */
    for (int32_t j = 0; j < n; j++) {
        double X = (double)(x0 + j), s, p, q;
        s = inv[6] * X + inv[7] * Y;
        s += inv[8];
        s = 32.0 / s;
        p = inv[0] * X + inv[1] * Y;
        p += inv[2];
        q = inv[3] * X + inv[4] * Y;
        q += inv[5];
        p = p * s;
        q = q * s;
        fx[j] = (int32_t)((p + magic) - magic);
        fy[j] = (int32_t)((q + magic) - magic);
    }
}

/* remap's INTER_LINEAR fixed point at one source point (fx, fy in 1/32 px) of an h x w image of c channels:
 * weights (32 - ax or ax) (32 - ay or ay) 32, summing to 2^15, taps outside the image black (BORDER_CONSTANT 0),
 * (sum + 2^14) >> 15. */
static inline void bilinear_at(const uint8_t *src, int64_t h, int64_t w, int64_t c, int32_t fx, int32_t fy,
                               uint8_t *o) {
    const int64_t sx = fx >> 5, sy = fy >> 5, ax = fx & 31, ay = fy & 31, row = w * c;
    const int32_t w00 = (int32_t)((32 - ax) * (32 - ay) * 32), w01 = (int32_t)(ax * (32 - ay) * 32),
                  w10 = (int32_t)((32 - ax) * ay * 32), w11 = (int32_t)(ax * ay * 32);
    if ((uint64_t)sx < (uint64_t)(w - 1) && (uint64_t)sy < (uint64_t)(h - 1)) {
        const uint8_t *p = src + sy * row + sx * c;
        for (int64_t k = 0; k < c; k++)
            o[k] = (uint8_t)((p[k] * w00 + p[k + c] * w01 + p[k + row] * w10 + p[k + row + c] * w11 + 16384) >> 15);
        return;
    }
    for (int64_t k = 0; k < c; k++) {
        int32_t total = 16384;
        for (int64_t dy = 0; dy < 2; dy++)
            for (int64_t dx = 0; dx < 2; dx++)
                if (sy + dy >= 0 && sy + dy < h && sx + dx >= 0 && sx + dx < w)
                    total += src[(sy + dy) * row + (sx + dx) * c + k] * (dy ? (dx ? w11 : w10) : (dx ? w01 : w00));
        o[k] = (uint8_t)(total >> 15);
    }
}

#if defined(__SSE2__)
#include <emmintrin.h>
/* bilinear_at for 3 channels, its taps 8 bytes at a time (the caller makes sure 8 bytes can be read at the top-left
 * and bottom-left taps): the same integers, as (32 - ay) h0 + ay h1 with each row's h = (32 - ax) left + ax right,
 * whose 32-fold is the 4-tap sum, so (sum + 2^14) >> 15 = (that + 2^9) >> 10. wx[ax], wy[ay]: the weights. */
static inline uint32_t bilinear3_sse2(const uint8_t *p, int64_t row, __m128i wx, __m128i wy) {
    const __m128i zero = _mm_setzero_si128();
    __m128i top = _mm_mullo_epi16(_mm_unpacklo_epi8(_mm_loadl_epi64((const __m128i *)p), zero), wx);
    __m128i bottom = _mm_mullo_epi16(_mm_unpacklo_epi8(_mm_loadl_epi64((const __m128i *)(p + row)), zero), wx);
    top = _mm_add_epi16(top, _mm_srli_si128(top, 6));  /* channel k: its left tap (lane k) + right tap (lane k + 3) */
    bottom = _mm_add_epi16(bottom, _mm_srli_si128(bottom, 6));
    __m128i s = _mm_madd_epi16(_mm_unpacklo_epi16(top, bottom), wy);
    s = _mm_srai_epi32(_mm_add_epi32(s, _mm_set1_epi32(512)), 10);
    s = _mm_packus_epi16(_mm_packs_epi32(s, s), s);
    return (uint32_t)_mm_cvtsi128_si32(s);
}
#endif

/* One output row of 3-channel pixels at the source points fx, fy: first, in a loop that vectorises, each pixel's
 * byte offset and whether 8 bytes are readable at both rows' left taps (the SIMD taps' condition), then the mixes,
 * bilinear_at where the SIMD taps do not apply. wx, wy: bilinear3_sse2's weights; offset: n int32 of scratch. */
static inline __attribute__((always_inline)) void bilinear_row3(const uint8_t *src, int64_t h, int64_t w,
                                                                const int32_t *fx, const int32_t *fy, int64_t n,
                                                                const void *wx_table, const void *wy_table,
                                                                int32_t *offset, uint8_t *o) {
#if defined(__SSE2__)
    const __m128i *wx = wx_table, *wy = wy_table;
    const int32_t wi = (int32_t)w, hi = (int32_t)h;
    for (int64_t j = 0; j < n; j++) {
        const int32_t sx = fx[j] >> 5, sy = fy[j] >> 5;
        const int32_t simd = (sx >= 0) & (sx < wi - 1) & (sy >= 0) & (sy < hi - 1) & ((sy < hi - 2) | (sx < wi - 2));
        offset[j] = simd ? (sy * wi + sx) * 3 : -1;
    }
    for (int64_t j = 0; j < n; j++, o += 3) {
        if (offset[j] >= 0) {
            uint32_t v = bilinear3_sse2(src + offset[j], w * 3, wx[fx[j] & 31], wy[fy[j] & 31]);
            if (j + 1 < n) {
                memcpy(o, &v, 4);  /* its fourth byte is the next pixel's, written next */
            } else {
                o[0] = (uint8_t)v;
                o[1] = (uint8_t)(v >> 8);
                o[2] = (uint8_t)(v >> 16);
            }
        } else {
            bilinear_at(src, h, w, 3, fx[j], fy[j], o);
        }
    }
#else
    (void)wx_table, (void)wy_table, (void)offset;
    for (int64_t j = 0; j < n; j++) bilinear_at(src, h, w, 3, fx[j], fy[j], o + 3 * j);
#endif
}

/* OpenCV 4 warpPerspective (INTER_LINEAR, black border) of one h x w x c uint8 image by the matrix whose inverse
 * is inv, output rows top .. top + height - 1 and columns left .. left + width - 1 only (out: height x width x c):
 * each row's source points (perspective_row), then remap's fixed-point interpolation of each. Returns -1 when
 * out of memory. */
WIDE int64_t pp_perspective_warp(const uint8_t *src, int64_t h, int64_t w, int64_t c, const double *inv,
                                 int64_t top, int64_t left, int64_t height, int64_t width, uint8_t *out) {
    int32_t *fx = malloc(3 * (size_t)width * sizeof(int32_t)), *fy = fx + width, *offset = fy + width;
#if defined(__SSE2__)
    __m128i wx[32], wy[32];
    for (int a = 0; a < 32; a++) {
        wx[a] = _mm_setr_epi16((short)(32 - a), (short)(32 - a), (short)(32 - a), (short)a, (short)a, (short)a, 0, 0);
        wy[a] = _mm_set1_epi32(a << 16 | (32 - a));
    }
#else
    const void *wx = NULL, *wy = NULL;
#endif
    const int simd_rows = c == 3 && h * w * 3 < INT32_MAX;  /* bilinear_row3's int32 byte offsets */
    if (!fx) return -1;
    for (int64_t r = 0; r < height; r++) {
        uint8_t *o = out + r * width * c;
        perspective_row(inv, (double)(top + r), (int32_t)left, (int32_t)width, fx, fy);
        if (simd_rows) {
            bilinear_row3(src, h, w, fx, fy, width, wx, wy, offset, o);
        } else {
            for (int64_t j = 0; j < width; j++) bilinear_at(src, h, w, c, fx[j], fy[j], o + c * j);
        }
    }
    free(fx);
    return 0;
}
