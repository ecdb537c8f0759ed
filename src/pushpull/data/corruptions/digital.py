"""Digital corruptions (batched): brightness, saturate, contrast, elastic transform, pixelate, JPEG.

Colour conversions follow scikit-image's ``rgb2hsv`` / ``hsv2rgb`` formulas on any leading shape.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Sequence

import cv2
import numpy as np
from PIL import Image
from scipy.ndimage import map_coordinates

from . import _native
from ._common import draw, to_uint8, to_unit
from .blur import gaussian_smooth, gaussian_weights


def rgb2hsv(rgb: np.ndarray) -> np.ndarray:
    """RGB in [0, 1] -> HSV in [0, 1] (scikit-image's formulas), last axis the channels."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    v = rgb.max(-1)
    delta = np.ptp(rgb, -1)
    with np.errstate(invalid="ignore", divide="ignore"):
        s = delta / v
        # skimage assigns red, then green, then blue where each is the maximum: the last one wins.
        h = np.where(b == v, 4.0 + (r - g) / delta, np.where(g == v, 2.0 + (b - r) / delta, (g - b) / delta))
        h = (h / 6.0) % 1.0
    s[delta == 0.0] = 0.0
    h[delta == 0.0] = 0.0
    out = np.stack([h, s, v], axis=-1)
    out[np.isnan(out)] = 0
    return out


# For each sextant hi, which of (v, t, p, q) goes to R, G, B (skimage's hsv2rgb table).
_SEXTANTS = np.array([[0, 1, 2], [3, 0, 2], [2, 0, 1], [2, 3, 0], [1, 2, 0], [0, 2, 3]])


def hsv2rgb(hsv: np.ndarray) -> np.ndarray:
    """HSV in [0, 1] -> RGB in [0, 1] (scikit-image's formulas)."""
    h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    hi = np.floor(h * 6)
    f = h * 6 - hi
    p = v * (1 - s)
    q = v * (1 - f * s)
    t = v * (1 - (1 - f) * s)
    candidates = np.stack([v, t, p, q], axis=-1)
    return np.take_along_axis(candidates, _SEXTANTS[hi.astype(np.uint8) % 6], axis=-1)


def hsv_edit(images: np.ndarray, channel: int, scale: float, shift: float) -> np.ndarray:
    """uint8 RGB images with HSV channel ``channel`` (1: S, 2: V) set to ``clip(value * scale + shift, 0, 1)``.

    One pass per pixel in C where the kernels are built (the same operations as the numpy
    round trip below, so the same bytes); ``value * 1.0`` is the value itself, so V's ``+ shift`` is exact.
    """
    lib = _native.kernels()
    if lib is not None:
        src = np.ascontiguousarray(images)
        out = np.empty_like(src)
        lib.pp_hsv_edit(_native.ptr(src), _native.ptr(out), src.size // 3, channel, float(scale), float(shift))
        return out
    x = rgb2hsv(to_unit(images))
    x[..., channel] = np.clip(x[..., channel] * scale + shift, 0, 1)
    return to_uint8(hsv2rgb(x), consume=True)


def brightness(images: np.ndarray, shift: float) -> np.ndarray:
    """Add ``shift`` to the HSV value channel (clipped to [0, 1]); negative shifts darken."""
    return hsv_edit(images, 2, 1.0, shift)


def saturate(images: np.ndarray, scale: float, shift: float) -> np.ndarray:
    """HSV saturation ``s * scale + shift`` (clipped to [0, 1])."""
    return hsv_edit(images, 1, scale, shift)


def channel_means(images: np.ndarray) -> np.ndarray:
    """Per-image, per-channel mean in [0, 1], (N, 1, 1, C); from exact integer sums."""
    n, h, w, c = images.shape
    if c <= 4:  # OpenCV's integer sums: the same whole numbers, a hundred times faster than numpy's cast-and-add
        sums = np.array([cv2.sumElems(image)[:c] for image in images], np.float64).reshape(n, 1, 1, c)
    else:
        sums = images.sum(axis=(1, 2), dtype=np.int64, keepdims=True)
    return sums / (h * w) / 255.0


def contrast(images: np.ndarray, factor: float) -> np.ndarray:
    """Pull every pixel toward its image's channel means: ``(x - mean) * factor + mean``."""
    means = channel_means(images)
    lib = _native.kernels()
    n, h, w, c = images.shape
    if lib is not None and c <= 4:  # the same steps per value, to uint8, in one pass
        images = np.ascontiguousarray(images)
        out = np.empty_like(images)
        lib.pp_contrast(_native.ptr(images), n, h * w, c, _native.ptr(np.ascontiguousarray(means)), float(factor),
                        _native.ptr(out))
        return out
    x = to_unit(images)
    x -= means
    x *= factor
    x += means
    return to_uint8(x, consume=True)


def affine_jitter(shape: tuple[int, int], offsets: np.ndarray) -> np.ndarray:
    """The reference's random affine: three anchor points around the centre moved by ``offsets`` (3, 2)."""
    center = np.float32(shape) // 2
    square = min(shape) // 3
    pts1 = np.float32([center + square, [center[0] + square, center[1] - square], center - square])
    return cv2.getAffineTransform(pts1, pts1 + offsets.astype(np.float32))


def elastic_transform(images: np.ndarray, alpha: float, sigma: float, affine: float,
                      rngs: Sequence[np.random.Generator]) -> np.ndarray:
    """Random affine warp (OpenCV, reflect-101) then a smooth random displacement field (bilinear, reflect).

    Each stream draws the affine offsets (3, 2), then the x field, then the y field (H, W), uniform.
    """
    n, h, w, c = images.shape
    jitter = draw(rngs, "uniform", -affine, affine, size=(3, 2))
    fields = np.stack([np.stack([rng.uniform(-1, 1, size=(h, w)) for _ in range(2)]) for rng in rngs])
    fields = smooth_fields(fields.reshape(n * 2, h, w), sigma).reshape(n, 2, h, w)
    fields = (fields * alpha).astype(np.float32)
    x = images.astype(np.float32) / 255.0
    out = np.empty_like(x)
    for i in range(n):
        warped = cv2.warpAffine(x[i], affine_jitter((h, w), jitter[i]), (w, h), borderMode=cv2.BORDER_REFLECT_101)
        out[i] = displace(warped.reshape(h, w, c), fields[i, 0], fields[i, 1])
    return to_uint8(out, consume=True)


def smooth_fields(fields: np.ndarray, sigma: float) -> np.ndarray:
    """The reference's ``gaussian(field, sigma, mode="reflect", truncate=3)`` of (N, H, W) float64 fields.

    With the C kernels, an axis whose kernel is longer than the axis itself (ImageNet-C severity 1:
    1025 taps on 224 pixels) is filtered as one matrix product by that filter's (L, L) matrix (the
    reflected taps folded onto the L pixels, built by the same line sums): the same linear map, its
    float64 sums in BLAS's order (relative differences ~1e-14, below the float32 field's resolution).
    Shorter kernels, and the numpy fallback, sum exactly as scipy does.
    """
    length = 2 * int(3 * float(sigma) + 0.5) + 1
    if _native.kernels() is None or sigma <= 1e-15 or length <= max(fields.shape[1:]):
        return gaussian_smooth(fields, sigma, mode="reflect", truncate=3)
    rows, cols = (_field_filter(size, float(sigma)) for size in fields.shape[1:])
    return np.matmul(np.matmul(rows, fields), cols.T)


@functools.lru_cache(maxsize=8)
def _field_filter(size: int, sigma: float) -> np.ndarray:
    """The (size, size) matrix of elastic's Gaussian along one axis: row l holds the weights of the
    taps l - r .. l + r, each added onto the pixel that scipy's reflect extension reads there."""
    weights = gaussian_weights(sigma, 3.0)
    radius = len(weights) // 2
    taps = np.arange(size)[:, None] + np.arange(-radius, radius + 1)[None, :]
    period = np.mod(taps, 2 * size)
    source = np.where(period < size, period, 2 * size - 1 - period)
    flat = (np.arange(size)[:, None] * size + source).ravel()
    matrix = np.bincount(flat, weights=np.broadcast_to(weights, taps.shape).ravel(), minlength=size * size)
    matrix = matrix.reshape(size, size)
    matrix.setflags(write=False)
    return matrix


def displace(image: np.ndarray, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """``map_coordinates(image, [rows + dy, cols + dx, channels], order=1, mode="reflect")`` of a float32
    (H, W, C) image by float32 (H, W) fields: the reference's displacement, in C where built (same sums)."""
    h, w, c = image.shape
    lib = _native.kernels()
    if lib is not None:
        image, dx, dy = (np.ascontiguousarray(a, dtype=np.float32) for a in (image, dx, dy))
        out = np.empty_like(image)
        lib.pp_map_reflect(_native.ptr(image), h, w, c, _native.ptr(dx), _native.ptr(dy), _native.ptr(out))
        return out
    cols, rows, chans = np.meshgrid(np.arange(w), np.arange(h), np.arange(c))
    coords = np.stack([(rows + dy[..., None]).reshape(-1, 1), (cols + dx[..., None]).reshape(-1, 1),
                       chans.reshape(-1, 1)])
    return map_coordinates(image, coords, order=1, mode="reflect").reshape(h, w, c)


def pixelate(images: np.ndarray, factor: float, upsample: int = Image.BOX) -> np.ndarray:
    """Box-downscale to ``int(size * factor)`` then back up with PIL's ``upsample`` filter.

    Box up in the -C tables; imagecorruptions scales up with ``Image.NEAREST``.
    """
    n, h, w, _ = images.shape
    small = (int(w * factor), int(h * factor))
    return np.stack([np.asarray(Image.fromarray(im).resize(small, Image.BOX).resize((w, h), upsample))
                     for im in images])


def jpeg_compression(images: np.ndarray, quality: int) -> np.ndarray:
    """Encode and decode with PIL's JPEG at ``quality``."""
    out = np.empty_like(images)
    for i, im in enumerate(images):
        buffer = io.BytesIO()
        Image.fromarray(im).save(buffer, "JPEG", quality=quality)
        out[i] = np.asarray(Image.open(buffer))
    return out
