"""The six corruptions whose imagecorruptions 1.1.2 rules differ from ImageNet-C's, for one image of any size.

imagecorruptions uses the ImageNet-C severities but, to serve any H x W, changes six algorithms:
motion blur is its own numpy shift-and-add (not ImageMagick's); the snow layer is zoomed without
its centre trim and blurred before being cropped top-left; zoom blur keeps each zoom's top-left;
frost rescales its texture to cover the image (cubic, 1.1x margin); pixelate scales back up with
nearest neighbour; elastic transform has no affine part and scales its field with the image.
Each function takes one uint8 (H, W, 3) image and that image's ``numpy.random.Generator``, draws
what imagecorruptions draws in the same order, and returns uint8 (H, W, 3).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import cv2
import numpy as np
from PIL import Image

from ._common import to_uint8
from .blur import clipped_zoom, zoom_blur
from .digital import displace, pixelate
from .weather import FROST_FILES, blend_snow, frost_texture

ROW_BLOCK = 24  # rows per block of the shift-and-add: keeps its float64 sums in the L2 cache
ELASTIC_ALPHA = (250 * 0.05, 250 * 0.065, 250 * 0.085, 250 * 0.1, 250 * 0.12)
ELASTIC_SIGMA = 0.01  # of each side, in pixels
ELASTIC_RANGE = 0.005  # of the height, both fields
FROST_MARGIN = 1.1


def motion_taps(radius: int, sigma: float, angle: float, shape: tuple[int, int]) -> list[tuple[float, int, int]]:
    """imagecorruptions' motion kernel as (weight, dy, dx) taps: a one-sided Gaussian over ``2 radius + 1`` pixels.

    Tap i samples the pixel ``i`` steps behind along ``angle`` (degrees). Taps stop at the first
    one that would leave the image (``|dy| >= H`` or ``|dx| >= W``), without renormalising, as it does.
    """
    width = 2 * radius + 1
    x = np.arange(width)
    kernel = np.exp(-x**2 / (2 * (sigma**2))) / (np.sqrt(2 * np.pi) * sigma)
    kernel = kernel / np.sum(kernel)
    point = (width * np.sin(np.deg2rad(angle)), width * np.cos(np.deg2rad(angle)))
    hypot = math.hypot(point[0], point[1])
    taps = []
    for i in range(width):
        dy = -math.ceil(((i * point[0]) / hypot) - 0.5)
        dx = -math.ceil(((i * point[1]) / hypot) - 0.5)
        if abs(dy) >= shape[0] or abs(dx) >= shape[1]:
            break
        taps.append((kernel[i], dy, dx))
    return taps


def shift_sum(x: np.ndarray, taps: Sequence[tuple[float, int, int]]) -> np.ndarray:
    """Sum of ``weight * x shifted by (dy, dx)`` (edge pixels repeated), float64, taps added in order.

    ``x``: (H, W) or (H, W, C), any numeric dtype. Bit-identical to imagecorruptions' ``_motion_blur``
    loop (``blurred + kernel[i] * shift(x, dx, dy)``), computed a block of rows at a time.
    """
    h, w = x.shape[:2]
    pad = max([1] + [max(abs(dy), abs(dx)) for _, dy, dx in taps])
    padded = np.pad(x, ((pad, pad), (pad, pad)) + ((0, 0),) * (x.ndim - 2), mode="edge")
    out = np.zeros(x.shape, np.float64)
    term = np.empty((ROW_BLOCK,) + x.shape[1:], np.float64)
    for top in range(0, h, ROW_BLOCK):
        rows = min(ROW_BLOCK, h - top)
        block, tmp = out[top:top + rows], term[:rows]
        for weight, dy, dx in taps:
            np.multiply(padded[pad - dy + top:pad - dy + top + rows, pad - dx:pad - dx + w], weight, out=tmp)
            block += tmp
    return out


def motion_blur(image: np.ndarray, radius: int, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Motion blur along an angle uniform in [-45, 45] degrees (imagecorruptions' numpy kernel, truncated)."""
    taps = motion_taps(radius, sigma, rng.uniform(-45, 45), image.shape[:2])
    return np.clip(shift_sum(image, taps), 0, 255).astype(np.uint8)


def zoom(image: np.ndarray, zooms: Sequence[float], rng: np.random.Generator) -> np.ndarray:
    """Zoom blur keeping each zoom's top-left H x W (imagecorruptions does not centre the trim)."""
    return zoom_blur(image[None], zooms, trim=False)[0]


def snow(image: np.ndarray, params: Sequence[float], rng: np.random.Generator) -> np.ndarray:
    """Snow: the flake layer is zoomed whole (``round(crop * zoom)`` pixels), motion-blurred at U(-135, -45)
    degrees, rounded to 8 bits, then cropped to the image's top-left H x W."""
    loc, scale, factor, threshold, radius, sigma, blend = params
    h, w = image.shape[:2]
    layer = rng.normal(size=(h, w), loc=loc, scale=scale)
    layer = clipped_zoom(layer[None, :, :, None], factor, trim=False)[0, :, :, 0]
    layer[layer < threshold] = 0
    layer = np.clip(layer, 0, 1)
    taps = motion_taps(radius, sigma, rng.uniform(-135, -45), layer.shape)
    flakes = np.round(shift_sum(layer, taps) * 255).astype(np.uint8)[:h, :w]
    return blend_snow(image[None], flakes[None, :, :, None], blend)[0]


def frost_scale(texture: tuple[int, int], image: tuple[int, int]) -> float:
    """imagecorruptions' texture scale: 1, or the larger side ratio where the texture is too small; times 1.1."""
    (th, tw), (h, w) = texture, image
    if th >= h and tw >= w:
        scale = 1
    elif th < h and tw >= w:
        scale = h / th
    elif th >= h and tw < w:
        scale = w / tw
    else:
        scale = np.maximum(h / th, w / tw)
    return scale * FROST_MARGIN


@functools.lru_cache(maxsize=16)
def fitted_frost(index: int, height: int, width: int) -> np.ndarray:
    """Frost photograph ``index`` (BGR) rescaled (OpenCV bicubic) to cover a ``height`` x ``width`` image."""
    texture = frost_texture(index, 1)
    scale = frost_scale(texture.shape[:2], (height, width))
    size = (int(np.ceil(texture.shape[1] * scale)), int(np.ceil(texture.shape[0] * scale)))
    fitted = cv2.resize(texture, dsize=size, interpolation=cv2.INTER_CUBIC)
    fitted.setflags(write=False)
    return fitted


def frost(image: np.ndarray, weights: Sequence[float], rng: np.random.Generator) -> np.ndarray:
    """Frost: a random crop of a random fitted texture; draws the texture, then the top row, then the left column."""
    h, w = image.shape[:2]
    texture = fitted_frost(int(rng.integers(len(FROST_FILES))), h, w)
    top = rng.integers(0, texture.shape[0] - h)
    left = rng.integers(0, texture.shape[1] - w)
    crop = texture[top:top + h, left:left + w][..., [2, 1, 0]]
    return np.clip(weights[0] * image + weights[1] * crop, 0, 255).astype(np.uint8)


def pixelate_nearest(image: np.ndarray, factor: float, rng: np.random.Generator) -> np.ndarray:
    """Pixelate: box down to ``int(side * factor)``, nearest neighbour back up."""
    return pixelate(image[None], factor, Image.NEAREST)[0]


def elastic_transform(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """imagecorruptions' elastic transform: a smooth random displacement, no affine warp.

    Both fields are uniform in ±0.005 H, Gaussian-smoothed with sigma 0.01 of each side (reflect,
    truncate 3) and scaled by ``ELASTIC_ALPHA``; x's field is drawn first.
    """
    h, w = image.shape[:2]
    sigma = np.array((h, w)) * ELASTIC_SIGMA
    limit = h * ELASTIC_RANGE
    alpha = ELASTIC_ALPHA[severity - 1]
    dx, dy = ((smooth_field(rng.uniform(-limit, limit, size=(h, w)), sigma) * alpha).astype(np.float32)
              for _ in range(2))
    return to_uint8(displace(image.astype(np.float32) / 255.0, dx, dy))


def smooth_field(field: np.ndarray, sigmas: Sequence[float], truncate: float = 3) -> np.ndarray:
    """scipy's ``gaussian_filter(field, sigmas, mode="reflect", truncate)`` (skimage's ``gaussian``) of a float64
    (H, W) field, one sigma per axis, as one OpenCV separable pass: scipy's weights, OpenCV's sums (equal to
    about 1e-16, so the float32 displacements are the same)."""
    kernels = []
    for sigma in sigmas:
        radius = int(truncate * float(sigma) + 0.5)
        phi = np.exp(-0.5 / (sigma * sigma) * np.arange(-radius, radius + 1) ** 2)
        kernels.append(phi / phi.sum())
    return cv2.sepFilter2D(field, cv2.CV_64F, kernels[1], kernels[0], borderType=cv2.BORDER_REFLECT)
