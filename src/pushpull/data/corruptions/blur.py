"""Blur corruptions (batched): Gaussian, glass, defocus, motion (ImageMagick-style) and zoom blur.

The primitives ``motion_blur`` and ``zoom_blur`` are parameterised directly (radius, sigma, angle per
image; zoom factors) so the -P sequences reuse them.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import cv2
import numpy as np
from scipy.ndimage import gaussian_filter

from . import _native
from ._common import draw, to_uint8, to_unit

# ImageMagick's constants (MagickCore/image-private.h).
_MAGICK_EPSILON = 1.0e-12
_MAGICK_SQ2PI = 2.50662827463100024161235523934010416269302368164062


def gaussian_smooth(x: np.ndarray, sigma: float, mode: str = "nearest", truncate: float = 4.0,
                    axes: tuple[int, ...] = (1, 2)) -> np.ndarray:
    """skimage's ``gaussian(x, sigma)`` on a batch: the two image axes only (axis 0 is the batch).

    ``axes``: the axes filtered, in order (scipy's ``gaussian_filter`` with sigma 0 elsewhere).
    float64 input with mode "nearest" or "reflect" runs scipy's own line sums in C (same weights,
    same order: same bytes); anything else is scipy's ``gaussian_filter``.
    """
    lib = _native.kernels()
    if lib is None or x.dtype != np.float64 or mode not in _MODES or sigma <= 1e-15 or x.ndim < 3:
        sigmas = tuple(sigma if axis in axes else 0 for axis in range(x.ndim))
        return gaussian_filter(x, sigmas, mode=mode, truncate=truncate)
    weights = gaussian_weights(sigma, truncate)
    radius = len(weights) // 2
    out = np.ascontiguousarray(x)
    for k, axis in enumerate(axes):
        out = _correlate_symmetric(lib, out, weights, radius, axis, mode, in_place=k > 0)
    return out


_MODES = {"nearest": 0, "reflect": 1}


def gaussian_weights(sigma: float, truncate: float) -> np.ndarray:
    """scipy's Gaussian kernel for ``gaussian_filter1d``, computed with its expressions (so the same numbers)."""
    radius = int(truncate * float(sigma) + 0.5)
    x = np.arange(-radius, radius + 1)
    phi = np.exp(-0.5 / (sigma * sigma) * x ** 2)
    return np.ascontiguousarray((phi / phi.sum())[::-1])


def _correlate_symmetric(lib, x: np.ndarray, weights: np.ndarray, radius: int, axis: int, mode: str,
                         in_place: bool = False) -> np.ndarray:
    """One axis of ``correlate1d`` (float64, C-contiguous ``x``) by the C kernel; ``in_place``: into ``x``
    itself where the kernel copies each block before writing it (narrow rows: under 64 values)."""
    outer, length = int(np.prod(x.shape[:axis])), x.shape[axis]
    inner = x.size // max(outer * length, 1)
    out = x if in_place and inner < 64 else np.empty_like(x)
    _native.check(lib.pp_correlate_symmetric(_native.ptr(x), _native.ptr(out), outer, length, inner,
                                             _native.ptr(weights), radius, _MODES[mode]), "Gaussian filter")
    return out


def gaussian_blur(images: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of the [0, 1] image (edges repeated), truncated to uint8."""
    return to_uint8(gaussian_smooth(to_unit(images), sigma), consume=True)


def glass_blur(images: np.ndarray, sigma: float, delta: int, iterations: int,
               rngs: Sequence[np.random.Generator]) -> np.ndarray:
    """Blur, locally scramble pixels, blur again: frosted-glass look.

    The reference visits (h, w) from the bottom-right corner up and left and does
    ``x[h, w] = x[h + dy, w + dx]`` with (dx, dy) uniform in [-delta, delta - 1] (its "swap" is a
    copy, because numpy views alias). Each image draws all its offsets at once:
    ``rng.integers(-delta, delta, size=(iterations, positions, 2))`` in visiting order, [..., 0] = dx.
    """
    n, h, w, c = images.shape
    x = gaussian_smooth(to_unit(images), sigma)
    x *= 255
    x = x.astype(np.uint8)
    size = (iterations, max(h - 2 * delta, 0) * max(w - 2 * delta, 0), 2)  # one (dx, dy) per visit
    lib = _native.kernels()
    if lib is not None:  # the copies themselves, in order, in C; one iteration's offsets at a time (the same draws)
        for image, rng in zip(x, rngs):
            for _ in range(iterations):
                offsets = np.ascontiguousarray(rng.integers(-delta, delta, size=size[1:]))
                lib.pp_glass_copies(_native.ptr(image), h, w, c, delta, 1, _native.ptr(offsets))
        return to_uint8(gaussian_smooth(x / 255.0, sigma), consume=True)
    positions = glass_positions(h, w, delta)
    offsets = draw(rngs, "integers", -delta, delta, size=size)
    flat = x.reshape(n, h * w, c)
    for it in range(iterations):
        source = _resolve_sequential_copies(positions, offsets[:, it], h, w)
        flat = np.take_along_axis(flat, source[:, :, None], axis=1)
    return to_uint8(gaussian_smooth(flat.reshape(n, h, w, c) / 255.0, sigma))


def glass_positions(h: int, w: int, delta: int) -> np.ndarray:
    """(row, col) pairs in the reference's visiting order: rows then cols, from ``size - delta`` down to ``delta + 1``."""
    rows = np.arange(h - delta, delta, -1)
    cols = np.arange(w - delta, delta, -1)
    return np.stack(np.meshgrid(rows, cols, indexing="ij"), axis=-1).reshape(-1, 2)


def _resolve_sequential_copies(positions: np.ndarray, offsets: np.ndarray, h: int, w: int) -> np.ndarray:
    """For each pixel, the flat index of the *original* pixel it holds after the sequential copies.

    Position p (visited at step t) copies from q = p + offset. If q was visited earlier, it already
    holds a copy, so p takes what q took; otherwise q is still original. Pointer jumping resolves
    these chains for the whole batch at once (at most log2(chain length) rounds).
    """
    n = offsets.shape[0]
    visited = positions[:, 0] * w + positions[:, 1]
    step = np.full(h * w, len(visited))  # never-visited pixels count as "later"
    step[visited] = np.arange(len(visited))
    src = (positions[None, :, 0] + offsets[:, :, 1]) * w + positions[None, :, 1] + offsets[:, :, 0]
    # Invariant: pixel j ends up holding original[ptr[j]] if not chase[j], else what pixel ptr[j] ends up holding.
    ptr = np.tile(np.arange(h * w), (n, 1))
    ptr[:, visited] = src
    chase = np.zeros((n, h * w), bool)
    chase[:, visited] = step[src] < step[visited][None, :]
    while chase.any():
        b, j = np.nonzero(chase)
        q = ptr[b, j]
        ptr[b, j], chase[b, j] = ptr[b, q], chase[b, q]
    return ptr


def disk_kernel(radius: float, alias_blur: float) -> np.ndarray:
    """The reference's anti-aliased disk: a binary disk, normalised, then Gaussian-blurred (OpenCV)."""
    if radius <= 8:
        support, ksize = np.arange(-8, 8 + 1), (3, 3)
    else:
        support, ksize = np.arange(-radius, radius + 1), (5, 5)
    xx, yy = np.meshgrid(support, support)
    aliased = np.array((xx**2 + yy**2) <= radius**2, dtype=np.float32)
    aliased /= np.sum(aliased)
    return cv2.GaussianBlur(aliased, ksize=ksize, sigmaX=alias_blur)


def defocus_blur(images: np.ndarray, radius: float, alias_blur: float) -> np.ndarray:
    """Out-of-focus blur: correlation with an anti-aliased disk (OpenCV ``filter2D``, reflect-101 edges)."""
    kernel = disk_kernel(radius, alias_blur)
    x = to_unit(images)
    out = np.empty_like(x)
    for i in range(len(x)):  # all channels in one call: OpenCV filters each plane alone, as the reference's calls
        cv2.filter2D(x[i], -1, kernel, dst=out[i])  # straight into the batch (no per-image result to copy)
    return to_uint8(out, consume=True)


def motion_kernel(radius: float, sigma: float) -> np.ndarray:
    """ImageMagick's motion-blur weights: a one-sided Gaussian over ``2 * ceil(radius) + 1`` taps."""
    width = int(2.0 * math.ceil(radius) + 1.0) if radius > _MAGICK_EPSILON else 1
    s = sigma if abs(sigma) >= _MAGICK_EPSILON else _MAGICK_EPSILON
    taps = [math.exp(-(i * i) / (2.0 * s * s)) / (_MAGICK_SQ2PI * s) for i in range(width)]
    total = 0.0
    for t in taps:  # summed in order, as ImageMagick does
        total += t
    return np.array([t / total for t in taps])


def motion_offsets(width: int, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """ImageMagick's tap offsets (dy, dx) along the blur direction ``angle`` (degrees)."""
    theta = math.pi * angle / 180.0
    px, py = width * math.sin(theta), width * math.cos(theta)
    hyp = math.hypot(px, py)
    dx = np.array([math.ceil(i * py / hyp - 0.5) for i in range(width)], dtype=np.int64)
    dy = np.array([math.ceil(i * px / hyp - 0.5) for i in range(width)], dtype=np.int64)
    return dy, dx


def motion_blur(images: np.ndarray, radius: float, sigma: float, angles: Sequence[float]) -> np.ndarray:
    """What ImageMagick's ``MotionBlurImage(radius, sigma, angle)`` computes on 8-bit images.

    Each output pixel is a Gaussian-weighted sum of the pixels *behind* it along ``angle``
    (edge pixels repeated), computed on 16-bit quanta (``v * 257``), rounded to 16 bits and scaled
    back to 8 bits as a Q16 ImageMagick build writes an 8-bit PNG (so nearly a floor). Works on any channel
    count (C = 1 for the snow layer). ``angles``: one angle in degrees per image.
    """
    n, h, w, c = images.shape
    kernel = motion_kernel(radius, sigma)
    width = len(kernel)
    offsets = np.array([motion_offsets(width, float(a)) for a in angles], dtype=np.int64).reshape(n, 2, width)
    lib = _native.kernels()
    if lib is not None:
        out = np.empty_like(images)
        for image, (dy, dx), o in zip(np.ascontiguousarray(images), offsets, out):
            _native.check(lib.pp_motion_blur(_native.ptr(image), h, w, c, _native.ptr(kernel), width, _native.ptr(dy),
                                             _native.ptr(dx), _native.ptr(o)), "motion blur")
        return out
    pad = width  # every offset is below width in size, so edge padding by width covers all taps
    padded = np.pad(images.astype(np.float64) * 257.0, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="edge")
    acc = np.zeros(images.shape, np.float64)
    for i in range(width):
        taps = offsets[:, :, i]
        for dy, dx in np.unique(taps, axis=0):
            group = np.flatnonzero((taps[:, 0] == dy) & (taps[:, 1] == dx))
            shifted = padded[group, pad + dy:pad + dy + h, pad + dx:pad + dx + w]
            acc[group] += kernel[i] * shifted
    return quantum_to_char(acc)


def quantum_to_char(acc: np.ndarray) -> np.ndarray:
    """ImageMagick Q16 to an 8-bit PNG: ``ClampToQuantum`` (round half up), then ``q // 257``.

    Checked against ImageMagick 6.9.11 Q16 ``-motion-blur`` (``tests/test_corruptions.py``).
    """
    q = acc + 0.5
    np.floor(q, out=q)
    np.clip(q, 0, 65535, out=q)
    q /= 257.0  # q is a whole number below 2**16: the quotient's floor is exactly q // 257
    return q.astype(np.uint8)


def zoom_plan(size: int, zoom: float, trim: bool = True) -> tuple[int, int, np.ndarray, np.ndarray, np.ndarray]:
    """Geometry of the reference's ``clipped_zoom``: central crop, and scipy ``zoom(order=1)`` taps.

    Returns (top, crop, start, w0, w1) for the kept output pixels along one axis: the output pixel
    k reads crop pixels start[k] (weight w0[k]) and start[k] + 1 (weight w1[k]), with scipy's own
    arithmetic (coordinate k * (in - 1) / (out - 1); w0 = 1 - frac; w1 = 1 - w0). A coordinate that
    rounds past the last crop pixel (e.g. 29.000000000000004 of 0..29) is outside for scipy's
    ``mode="constant"``: that output pixel is 0, so both its weights are 0. ``trim=False`` keeps all of
    scipy's output pixels (``round(crop * zoom)``, which imagecorruptions crops top-left).
    """
    crop = int(np.ceil(size / zoom))
    top = (size - crop) // 2
    out = int(round(crop * zoom))
    ratio = (crop - 1) / (out - 1) if out > 1 else 1.0
    first, count = ((out - size) // 2, size) if trim else (0, out)
    cc = np.arange(first, first + count, dtype=np.float64) * ratio
    start = np.floor(cc)
    w0 = 1.0 - (cc - start)
    w1 = 1.0 - w0
    outside = cc > crop - 1
    w0[outside] = w1[outside] = 0.0
    return top, crop, start.astype(np.int64), w0, w1


def clipped_zoom(x: np.ndarray, zoom: float, trim: bool = True) -> np.ndarray:
    """The reference's ``clipped_zoom`` on a batch (N, H, W, C): zoom into the centre, same size out.

    Bit-identical to ``scipy.ndimage.zoom(crop, (zoom, zoom, 1), order=1)`` per image (the four taps
    are multiplied and summed in scipy's order, in float64, then cast to x's dtype). Rows and columns
    are planned separately, so non-square images work too (the reference assumed squares).
    ``trim=False``: scipy's whole zoomed crop, as imagecorruptions' ``clipped_zoom`` returns it.
    """
    top, crop_h, ys, wy0, wy1 = zoom_plan(x.shape[1], zoom, trim)
    left, crop_w, xs, wx0, wx1 = zoom_plan(x.shape[2], zoom, trim)
    region = x[:, top:top + crop_h, left:left + crop_w]
    y0, y1 = np.minimum(ys, crop_h - 1), np.minimum(ys + 1, crop_h - 1)
    x0, x1 = np.minimum(xs, crop_w - 1), np.minimum(xs + 1, crop_w - 1)
    # scipy's term is (v * w_row) * w_col: the row products are shared by every output column.
    rows0 = np.take(region, y0, axis=1) * wy0[:, None, None]
    rows1 = np.take(region, y1, axis=1) * wy1[:, None, None]
    wx0, wx1 = wx0[:, None], wx1[:, None]
    out = np.take(rows0, x0, axis=2) * wx0
    out += np.take(rows0, x1, axis=2) * wx1
    out += np.take(rows1, x0, axis=2) * wx0
    out += np.take(rows1, x1, axis=2) * wx1
    return out.astype(x.dtype)


@functools.lru_cache(maxsize=256)
def zoom_taps(size: int, zoom: float, trim: bool) -> tuple[int, int, list[np.ndarray]]:
    """:func:`zoom_plan` for the kernel: (start, crop, [tap 0, tap 1, w0, w1]) of the ``size`` kept pixels
    (cached: every image of a size reuses its zooms' plans; the arrays are read-only)."""
    start, crop, taps, w0, w1 = zoom_plan(size, zoom, trim)
    taps, w0, w1 = taps[:size], w0[:size].copy(), w1[:size].copy()
    plan = [np.minimum(taps, crop - 1), np.minimum(taps + 1, crop - 1), w0, w1]
    for array in plan:
        array.setflags(write=False)
    return start, crop, plan


def zoom_blur(images: np.ndarray, zooms: Sequence[float], trim: bool = True) -> np.ndarray:
    """Mean of the image and its central zooms by each factor (float32, as the reference).

    ``trim=False``: each zoom's top-left H x W instead of its centre (imagecorruptions' rule).
    """
    h, w = images.shape[1:3]
    x = (images / 255.0).astype(np.float32)
    out = np.zeros_like(x)
    lib = _native.kernels()
    for z in zooms:
        if lib is None:
            out += clipped_zoom(x, float(z), trim)[:, :h, :w]
            continue
        if float(z) == 1.0:  # taps k and k+1 with weights 1 and 0: the image itself, exactly
            out += x
            continue
        c = x.shape[3]
        top, crop_h, rows = zoom_taps(h, float(z), trim)
        left, crop_w, cols = zoom_taps(w, float(z), trim)
        for image, acc in zip(x, out):  # the same taps and sums as clipped_zoom, added in place
            _native.check(lib.pp_zoom_add(_native.ptr(image), w, c, top, left, crop_w, h,
                                          *map(_native.ptr, rows), w, *map(_native.ptr, cols), _native.ptr(acc)),
                          "zoom blur")
    out += x
    out /= len(zooms) + 1
    return to_uint8(out, consume=True)
