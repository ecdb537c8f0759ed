"""Weather corruptions (batched): snow, frost, fog and spatter.

``snow`` is split into ``snow_layers`` (the random flakes), ``motion_blur`` (from ``blur``) and
``blend_snow`` so the -P sequences can move one layer through several angles.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from importlib import resources

import cv2
import numpy as np

from . import _native
from ._common import draw, to_uint8, to_unit
from .blur import clipped_zoom, gaussian_smooth, motion_blur, zoom_taps

FROST_FILES = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg")


def snow_layers(shape: tuple[int, int, int], loc: float, scale: float, zoom: float, threshold: float,
                rngs: Sequence[np.random.Generator]) -> np.ndarray:
    """Random flakes, uint8 (N, H, W, 1): N(loc, scale) noise, zoomed in, thresholded."""
    n, h, w = shape
    layer = draw(rngs, "normal", size=(h, w), loc=loc, scale=scale)
    lib = _native.kernels()
    if lib is not None and zoom >= 1:  # the zoom's taps, the threshold and the cast per pixel, in one pass
        top, _, rows = zoom_taps(h, float(zoom), True)
        left, _, cols = zoom_taps(w, float(zoom), True)
        out = np.empty((n, h, w, 1), np.uint8)
        for flakes, o in zip(layer, out):
            lib.pp_snow_layer(_native.ptr(flakes), w, top, left, h, *map(_native.ptr, rows), w,
                              *map(_native.ptr, cols), float(threshold), _native.ptr(o))
        return out
    layer = clipped_zoom(layer[..., None], zoom)
    layer[layer < threshold] = 0
    return to_uint8(layer, consume=True)


def blend_snow(images: np.ndarray, layers: np.ndarray, blend: float) -> np.ndarray:
    """Whiten the image (``blend`` keeps the original) and add the blurred flakes plus their 180° rotation.

    ``layers``: (N, H, W, 1), or (N, T, H, W, 1) for T frames of each image (whitened once).
    """
    n, h, w, _ = images.shape
    x = images.astype(np.float32) / 255.0
    gray = cv2.cvtColor(np.ascontiguousarray(x.reshape(n * h, w, 3)), cv2.COLOR_RGB2GRAY).reshape(n, h, w, 1)
    lib = _native.kernels()
    if lib is not None and layers.dtype == np.uint8:  # the steps below per pixel, in one pass
        layers = np.ascontiguousarray(layers)
        frames = layers.size // (n * h * w)
        out = np.empty(layers.shape[:-1] + (3,), np.uint8)
        lib.pp_snow_blend(_native.ptr(x), _native.ptr(gray), _native.ptr(layers), n, frames, h, w, float(blend),
                          float(1 - blend), _native.ptr(out))
        return out
    gray *= 1.5
    gray += 0.5
    whiter = np.maximum(x, gray)
    whiter *= 1 - blend
    x *= blend
    x += whiter  # blend * x + (1 - blend) * max(x, 1.5 gray + 0.5)
    flakes = layers / 255.0
    x = x.reshape((n,) + (1,) * (layers.ndim - 4) + (h, w, 3))
    out = x + flakes
    out += np.rot90(flakes, k=2, axes=(-3, -2))
    return to_uint8(out, consume=True)


def snow(images: np.ndarray, params: Sequence[float], rngs: Sequence[np.random.Generator],
         angle_range: tuple[float, float] = (-135, -45)) -> np.ndarray:
    """Snow: ``params`` = (loc, scale, zoom, threshold, blur radius, blur sigma, blend) as in the reference.

    Each stream draws the flake noise, then the blur angle uniform in ``angle_range``.
    """
    loc, scale, zoom, threshold, radius, sigma, blend = params
    layers = snow_layers(images.shape[:3], loc, scale, zoom, threshold, rngs)
    angles = [rng.uniform(*angle_range) for rng in rngs]
    return blend_snow(images, motion_blur(layers, radius, sigma, angles), blend)


@functools.lru_cache(maxsize=None)
def frost_texture(index: int, scale: float) -> np.ndarray:
    """Frost photograph ``index`` (BGR uint8, as OpenCV reads it), resized by ``scale`` (bilinear)."""
    data = (resources.files(__package__) / "frost" / FROST_FILES[index]).read_bytes()
    texture = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if scale != 1:
        texture = cv2.resize(texture, (0, 0), fx=scale, fy=scale)
    texture.setflags(write=False)
    return texture


def frost_crops(shape: tuple[int, int, int], scale: float, rngs: Sequence[np.random.Generator]) -> np.ndarray:
    """One random frost crop (RGB uint8) per image: texture index, then top row, then left column."""
    n, h, w = shape
    crops = np.empty((n, h, w, 3), np.uint8)
    for crop, rng in zip(crops, rngs):
        texture = frost_texture(int(rng.integers(len(FROST_FILES))), scale)
        if texture.shape[0] <= h or texture.shape[1] <= w:
            raise ValueError(f"frost: a {h}x{w} image is larger than the frost texture ({texture.shape[0]}x"
                             f"{texture.shape[1]} at scale {scale}); use params='imagenet' for large images")
        top = rng.integers(0, texture.shape[0] - h)
        left = rng.integers(0, texture.shape[1] - w)
        crop[...] = texture[top:top + h, left:left + w][..., [2, 1, 0]]
    return crops


def frost(images: np.ndarray, image_weight: float, frost_weight: float, scale: float,
          rngs: Sequence[np.random.Generator]) -> np.ndarray:
    """Frost: ``image_weight * x + frost_weight * crop`` on 0..255 values, clipped, truncated."""
    crops = frost_crops(images.shape[:3], scale, rngs)
    lib = _native.kernels()
    if lib is not None and _float64_sum(image_weight, frost_weight):
        images = np.ascontiguousarray(images)
        out = np.empty_like(images)
        lib.pp_frost(_native.ptr(images), _native.ptr(crops), images.size, float(image_weight), float(frost_weight),
                     _native.ptr(out))
        return out
    return np.clip(image_weight * images + frost_weight * crops, 0, 255).astype(np.uint8)


def _float64_sum(*weights) -> bool:
    """Whether numpy sums ``w1 * uint8 + w2 * uint8`` in float64, as the C kernel does: Python floats, or the
    ints 0 and 1 (whose uint8 products are exact) beside at least one float."""
    exact = all(type(w) is float or (type(w) is int and w in (0, 1)) for w in weights)
    return exact and any(type(w) is float for w in weights)


def plasma_fractal(mapsize: int, wibbledecay: float, rngs: Sequence[np.random.Generator]) -> np.ndarray:
    """Diamond-square height maps in [0, 1], (N, mapsize, mapsize); ``mapsize`` a power of two.

    One map per stream; each stream draws, per scale, the square then the two diamond offsets.
    """
    if mapsize & (mapsize - 1):
        raise ValueError(f"mapsize must be a power of two, got {mapsize}")
    maps = np.zeros((len(rngs), mapsize, mapsize), dtype=np.float64)
    stepsize = mapsize
    wibble = 100.0

    def wibbledmean(array):
        noise = draw(rngs, "uniform", -wibble, wibble, array.shape[1:])
        noise *= wibble
        noise += array / 4  # array / 4 + wibble * noise
        return noise

    lib = _native.kernels()
    while stepsize >= 2 and lib is not None:  # the same draws, in order; each level's sums in C
        grid = (mapsize // stepsize,) * 2
        for plasma, rng in zip(maps, rngs):
            u_square, u_left, u_top = (rng.uniform(-wibble, wibble, grid) for _ in range(3))
            lib.pp_plasma_level(_native.ptr(plasma), mapsize, stepsize, wibble, _native.ptr(u_square),
                                _native.ptr(u_left), _native.ptr(u_top))
        stepsize //= 2
        wibble /= wibbledecay
    while stepsize >= 2:
        half = stepsize // 2
        corners = maps[:, 0:mapsize:stepsize, 0:mapsize:stepsize]
        squares = corners + np.roll(corners, shift=-1, axis=1)
        squares += np.roll(squares, shift=-1, axis=2)
        maps[:, half:mapsize:stepsize, half:mapsize:stepsize] = wibbledmean(squares)
        centres = maps[:, half:mapsize:stepsize, half:mapsize:stepsize]
        left = centres + np.roll(centres, 1, axis=1) + (corners + np.roll(corners, -1, axis=2))
        maps[:, 0:mapsize:stepsize, half:mapsize:stepsize] = wibbledmean(left)
        top = centres + np.roll(centres, 1, axis=2) + (corners + np.roll(corners, -1, axis=1))
        maps[:, half:mapsize:stepsize, 0:mapsize:stepsize] = wibbledmean(top)
        stepsize //= 2
        wibble /= wibbledecay
    maps -= maps.min(axis=(1, 2), keepdims=True)
    return maps / maps.max(axis=(1, 2), keepdims=True)


def fog(images: np.ndarray, strength: float, decay: float, rngs: Sequence[np.random.Generator]) -> np.ndarray:
    """Fog: add ``strength`` times a plasma fractal (map side: next power of two), then rescale."""
    n, h, w, _ = images.shape
    mapsize = 1 << (max(h, w) - 1).bit_length()
    maps = plasma_fractal(mapsize, decay, rngs)
    lib = _native.kernels()
    if lib is not None and images.shape[3] == 3:  # the steps below per pixel, in one pass
        images = np.ascontiguousarray(images)
        out = np.empty_like(images)
        lib.pp_fog(_native.ptr(images), n, h, w, _native.ptr(maps), mapsize, float(strength), _native.ptr(out))
        return out
    x = to_unit(images)
    max_val = x.max(axis=(1, 2, 3), keepdims=True)
    x += strength * maps[:, :h, :w, None]
    x *= max_val
    x /= max_val + strength
    return to_uint8(x, consume=True)


def water_mask(liquid: np.ndarray) -> np.ndarray:
    """The reference's water-drop intensity (float32, H x W) from one thresholded liquid layer (uint8)."""
    dist = 255 - cv2.Canny(liquid, 50, 150)
    dist = cv2.distanceTransform(dist, cv2.DIST_L2, 5)
    _, dist = cv2.threshold(dist, 20, 20, cv2.THRESH_TRUNC)
    dist = cv2.blur(dist, (3, 3)).astype(np.uint8)
    dist = cv2.equalizeHist(dist)
    dist = cv2.filter2D(dist, cv2.CV_8U, np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]]))
    dist = cv2.blur(dist, (3, 3)).astype(np.float32)
    return liquid * dist


WATER_COLOUR = np.array([175, 238, 238], np.float64) / 255.0  # pale turquoise (applied to channels 0, 1, 2)
_MUD = np.array([63, 42, 20], np.float64) / 255.0  # mud brown


def water_drops(x: np.ndarray, liquid: np.ndarray, intensity: float) -> np.ndarray:
    """Float32 [0, 1] images (N, H, W, 3) under pale-turquoise drops shaded from thresholded liquid layers (N, H, W).

    Each image's ``water_mask`` is scaled to peak at ``intensity``; uint8 out.
    """
    m = np.stack([water_mask(layer) for layer in (liquid * 255).astype(np.uint8)])
    peak = m.max(axis=(1, 2), keepdims=True)
    lib = _native.kernels()
    if lib is not None and x.dtype == m.dtype == np.float32:  # the steps below per pixel, in one pass
        x, m = np.ascontiguousarray(x), np.ascontiguousarray(m)
        out = np.empty(x.shape, np.uint8)
        lib.pp_water(_native.ptr(x), _native.ptr(m), _native.ptr(np.ascontiguousarray(peak)), len(m), m[0].size,
                     float(intensity), _native.ptr(WATER_COLOUR.astype(np.float32)), _native.ptr(out))
        return out
    m = np.divide(m, peak, out=np.zeros_like(m), where=peak > 0)  # the reference divides 0 by 0 here
    m *= intensity
    drops = m[..., None] * WATER_COLOUR.astype(np.float32)
    drops += x
    return to_uint8(drops, consume=True)


def spatter(images: np.ndarray, params: Sequence[float], rngs: Sequence[np.random.Generator]) -> np.ndarray:
    """Spatter: ``params`` = (loc, scale, sigma, threshold, intensity-or-sigma, mud) as in the reference.

    mud = 0: water drops, shaded by OpenCV edge/distance maps, in pale turquoise; mud = 1: brown blobs.
    """
    loc, scale, sigma, threshold, amount, mud = params
    n, h, w, _ = images.shape
    x = images.astype(np.float32) / 255.0
    liquid = gaussian_smooth(draw(rngs, "normal", size=(h, w), loc=loc, scale=scale), sigma)
    liquid[liquid < threshold] = 0
    if mud == 0:
        return water_drops(x, liquid, amount)
    m = np.where(liquid > threshold, 1, 0).astype(np.float32)
    m = gaussian_smooth(m, amount)
    m[m < 0.8] = 0
    lib = _native.kernels()
    if lib is not None and m.dtype == np.float32:  # the steps below per pixel, in one pass
        x, m = np.ascontiguousarray(x), np.ascontiguousarray(m)
        out = np.empty(x.shape, np.uint8)
        lib.pp_mud(_native.ptr(x), _native.ptr(m), m.size, _native.ptr(_MUD.astype(np.float32)), _native.ptr(out))
        return out
    color = _MUD.astype(np.float32) * m[..., None]
    x *= 1 - m[..., None]
    x += color
    return to_uint8(x, consume=True)
