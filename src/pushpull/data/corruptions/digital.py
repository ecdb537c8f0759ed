"""Digital corruptions (batched): brightness, saturate, contrast, elastic transform, pixelate, JPEG.

Colour conversions follow scikit-image's ``rgb2hsv`` / ``hsv2rgb`` formulas on any leading shape.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import cv2
import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter, map_coordinates

from ._common import draw, to_uint8, to_unit


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


def brightness(images: np.ndarray, shift: float) -> np.ndarray:
    """Add ``shift`` to the HSV value channel (clipped to [0, 1]); negative shifts darken."""
    x = rgb2hsv(to_unit(images))
    x[..., 2] = np.clip(x[..., 2] + shift, 0, 1)
    return to_uint8(hsv2rgb(x))


def saturate(images: np.ndarray, scale: float, shift: float) -> np.ndarray:
    """HSV saturation ``s * scale + shift`` (clipped to [0, 1])."""
    x = rgb2hsv(to_unit(images))
    x[..., 1] = np.clip(x[..., 1] * scale + shift, 0, 1)
    return to_uint8(hsv2rgb(x))


def channel_means(images: np.ndarray) -> np.ndarray:
    """Per-image, per-channel mean in [0, 1], (N, 1, 1, C); from exact integer sums."""
    h, w = images.shape[1:3]
    return images.sum(axis=(1, 2), dtype=np.int64, keepdims=True) / (h * w) / 255.0


def contrast(images: np.ndarray, factor: float) -> np.ndarray:
    """Pull every pixel toward its image's channel means: ``(x - mean) * factor + mean``."""
    x = to_unit(images)
    means = channel_means(images)
    return to_uint8((x - means) * factor + means)


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
    fields = gaussian_filter(fields, (0, 0, sigma, sigma), mode="reflect", truncate=3)
    fields = (fields * alpha).astype(np.float32)
    x = images.astype(np.float32) / 255.0
    cols, rows, chans = np.meshgrid(np.arange(w), np.arange(h), np.arange(c))
    out = np.empty_like(x)
    for i in range(n):
        warped = cv2.warpAffine(x[i], affine_jitter((h, w), jitter[i]), (w, h), borderMode=cv2.BORDER_REFLECT_101)
        dx, dy = fields[i, 0][..., None], fields[i, 1][..., None]
        coords = np.stack([(rows + dy).reshape(-1, 1), (cols + dx).reshape(-1, 1), chans.reshape(-1, 1)])
        out[i] = map_coordinates(warped.reshape(h, w, c), coords, order=1, mode="reflect").reshape(h, w, c)
    return to_uint8(out)


def _reflect_coordinate(c: np.ndarray, n: int) -> np.ndarray:
    """scipy's 'reflect' fold of sample coordinates into [-0.5, n - 0.5] (half-sample symmetric)."""
    c = np.mod(c + 0.5, 2 * n) - 0.5
    return np.where(c > n - 0.5, 2 * n - 1 - c, c)


def _bilinear_taps(c: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Indices and weights of order-1 interpolation at ``c`` along an axis of ``n`` (indices reflected)."""
    if c.min() < 0 or c.max() > n - 1:
        c = _reflect_coordinate(c, n)
    start = np.floor(c)
    t = c - start
    i0 = start.astype(np.int64)
    i1 = i0 + 1
    i0 = np.where(i0 < 0, -i0 - 1, i0)
    i1 = np.where(i1 > n - 1, 2 * n - 1 - i1, i1)
    return i0, i1, 1.0 - t, t


def displace(image: np.ndarray, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """``map_coordinates(image, [rows + dy, cols + dx, channels], order=1, mode="reflect")`` of a float32
    (H, W, C) image by (H, W) fields: one gather per bilinear tap for all channels, in float64, cast to float32
    (equal to scipy's within a float32 rounding: it multiplies the two weights in another order)."""
    h, w, c = image.shape
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    y0, y1, wy0, wy1 = _bilinear_taps(rows + dy.astype(np.float64), h)
    x0, x1, wx0, wx1 = _bilinear_taps(cols + dx.astype(np.float64), w)
    flat = image.reshape(h * w, c)
    out = np.zeros((h * w, c), np.float64)
    for yi, wy in ((y0, wy0), (y1, wy1)):
        for xi, wx in ((x0, wx0), (x1, wx1)):
            out += np.take(flat, (yi * w + xi).ravel(), axis=0) * (wy * wx).reshape(-1, 1)
    return out.astype(np.float32).reshape(h, w, c)


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
