"""The slow oracle: one image at a time, following ``make_cifar_c.py`` / ``make_imagenet_c.py`` line by line.

Differences from the reference are only where it cannot be followed literally: numpy's global RNG
is replaced by the image's own ``Generator`` (same distributions, same draw order; draws that the
reference makes pixel by pixel are made in one call), ImageMagick's motion blur and scikit-image's
filters/colour conversions are written out (scipy / plain Python), contrast's means come from
exact integer sums, and spatter without any drop leaves the image as it is (the reference
divides 0 by 0 there). Tests hold the batched fast path
to this module.
"""

from __future__ import annotations

import io
import math

import cv2
import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter, map_coordinates
from scipy.ndimage import zoom as scizoom

from .blur import disk_kernel
from .weather import water_mask, frost_texture


def _gaussian(x, sigma, mode="nearest", truncate=4.0, multichannel=False):
    """skimage.filters.gaussian: scipy's filter, no smoothing across channels."""
    sigmas = (sigma, sigma, 0) if multichannel else sigma
    return gaussian_filter(x, sigmas, mode=mode, truncate=truncate)


def _magick_motion_blur(img: np.ndarray, radius: float, sigma: float, angle: float) -> np.ndarray:
    """ImageMagick MotionBlurImage (Q16) on an 8-bit (H, W, C) image, one shifted copy per tap."""
    width = int(2 * math.ceil(radius) + 1)
    weights = [math.exp(-(i * i) / (2.0 * sigma * sigma)) / (math.sqrt(2 * math.pi) * sigma) for i in range(width)]
    weights = [wt / sum(weights) for wt in weights]
    px, py = width * math.sin(math.pi * angle / 180.0), width * math.cos(math.pi * angle / 180.0)
    h, w = img.shape[:2]
    padded = np.pad(img.astype(np.float64) * 257.0, ((width, width), (width, width), (0, 0)), mode="edge")
    acc = np.zeros(img.shape, np.float64)
    for i in range(width):
        dx = math.ceil(i * py / math.hypot(px, py) - 0.5)
        dy = math.ceil(i * px / math.hypot(px, py) - 0.5)
        acc += weights[i] * padded[width + dy:width + dy + h, width + dx:width + dx + w]
    out = np.empty(img.shape, np.uint8)
    for idx, value in np.ndenumerate(acc):
        q = 0 if value <= 0 else 65535 if value >= 65535 else int(value + 0.5)
        out[idx] = q // 257  # ImageMagick 6.9 Q16 writing an 8-bit PNG
    return out


def _clipped_zoom(img, zoom_factor):
    # The reference's, with rows and columns cropped and trimmed separately (it assumed squares).
    h, w = img.shape[:2]
    ch, cw = int(np.ceil(h / zoom_factor)), int(np.ceil(w / zoom_factor))
    top, left = (h - ch) // 2, (w - cw) // 2
    img = scizoom(img[top:top + ch, left:left + cw], (zoom_factor, zoom_factor, 1), order=1)
    trim_top, trim_left = (img.shape[0] - h) // 2, (img.shape[1] - w) // 2
    return img[trim_top:trim_top + h, trim_left:trim_left + w]


def _plasma_fractal(mapsize, wibbledecay, rng):
    """The reference's diamond-square map (its nested helpers inlined), one image."""
    maparray = np.empty((mapsize, mapsize), dtype=np.float64)
    maparray[0, 0] = 0
    stepsize = mapsize
    wibble = 100

    def wibbledmean(array):
        return array / 4 + wibble * rng.uniform(-wibble, wibble, array.shape)

    while stepsize >= 2:
        cornerref = maparray[0:mapsize:stepsize, 0:mapsize:stepsize]
        squareaccum = cornerref + np.roll(cornerref, shift=-1, axis=0)
        squareaccum += np.roll(squareaccum, shift=-1, axis=1)
        maparray[stepsize // 2:mapsize:stepsize, stepsize // 2:mapsize:stepsize] = wibbledmean(squareaccum)
        drgrid = maparray[stepsize // 2:mapsize:stepsize, stepsize // 2:mapsize:stepsize]
        ulgrid = maparray[0:mapsize:stepsize, 0:mapsize:stepsize]
        ltsum = (drgrid + np.roll(drgrid, 1, axis=0)) + (ulgrid + np.roll(ulgrid, -1, axis=1))
        maparray[0:mapsize:stepsize, stepsize // 2:mapsize:stepsize] = wibbledmean(ltsum)
        ttsum = (drgrid + np.roll(drgrid, 1, axis=1)) + (ulgrid + np.roll(ulgrid, -1, axis=0))
        maparray[stepsize // 2:mapsize:stepsize, 0:mapsize:stepsize] = wibbledmean(ttsum)
        stepsize //= 2
        wibble /= wibbledecay
    maparray -= maparray.min()
    return maparray / maparray.max()


def _rgb2hsv_pixel(r, g, b):
    v = max(r, g, b)
    delta = v - min(r, g, b)
    s = 0.0 if delta == 0 else delta / v
    if delta == 0:
        return 0.0, s, v
    if b == v:
        h = 4.0 + (r - g) / delta
    elif g == v:
        h = 2.0 + (b - r) / delta
    else:
        h = (g - b) / delta
    return (h / 6.0) % 1.0, s, v


def _hsv2rgb_pixel(h, s, v):
    hi = math.floor(h * 6)
    f = h * 6 - hi
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    return [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][int(hi) % 6]


def _hsv_edit(x, channel, fn):
    out = np.empty_like(x)
    for i, j in np.ndindex(x.shape[:2]):
        hsv = list(_rgb2hsv_pixel(*x[i, j]))
        hsv[channel] = fn(hsv[channel])
        out[i, j] = _hsv2rgb_pixel(*hsv)
    return out


# /////////////// the corruptions: f(uint8 image, c, rng) -> float or uint8 image ///////////////

def gaussian_noise(x, c, rng):
    x = np.array(x) / 255.
    return np.clip(x + rng.normal(size=x.shape, scale=c), 0, 1) * 255


def shot_noise(x, c, rng):
    x = np.array(x) / 255.
    return np.clip(rng.poisson(x * c) / c, 0, 1) * 255


def impulse_noise(x, c, rng):
    x = np.array(x) / 255.
    flipped = rng.random(x.shape) <= c
    salted = rng.random(x.shape) <= 0.5
    out = x.copy()
    out[flipped & salted] = 1
    out[flipped & ~salted] = 0
    return np.clip(out, 0, 1) * 255


def speckle_noise(x, c, rng):
    x = np.array(x) / 255.
    return np.clip(x + x * rng.normal(size=x.shape, scale=c), 0, 1) * 255


def gaussian_blur(x, c, rng):
    x = _gaussian(np.array(x) / 255., sigma=c, multichannel=True)
    return np.clip(x, 0, 1) * 255


def glass_blur(x, c, rng):
    size_h, size_w = x.shape[:2]
    x = np.uint8(_gaussian(np.array(x) / 255., sigma=c[0], multichannel=True) * 255)
    n_pos = len(range(size_h - c[1], c[1], -1)) * len(range(size_w - c[1], c[1], -1))
    offsets = rng.integers(-c[1], c[1], size=(c[2], n_pos, 2))
    for i in range(c[2]):
        k = 0
        for h in range(size_h - c[1], c[1], -1):
            for w in range(size_w - c[1], c[1], -1):
                dx, dy = offsets[i, k]
                k += 1
                h_prime, w_prime = h + dy, w + dx
                x[h, w], x[h_prime, w_prime] = x[h_prime, w_prime], x[h, w]  # a copy: numpy views alias
    return np.clip(_gaussian(x / 255., sigma=c[0], multichannel=True), 0, 1) * 255


def defocus_blur(x, c, rng):
    x = np.array(x) / 255.
    kernel = disk_kernel(radius=c[0], alias_blur=c[1])
    channels = [cv2.filter2D(x[:, :, d], -1, kernel) for d in range(3)]
    return np.clip(np.array(channels).transpose((1, 2, 0)), 0, 1) * 255


def motion_blur(x, c, rng):
    return _magick_motion_blur(np.array(x), c[0], c[1], rng.uniform(-45, 45))


def zoom_blur(x, c, rng):
    x = (np.array(x) / 255.).astype(np.float32)
    out = np.zeros_like(x)
    for zoom_factor in c:
        out += _clipped_zoom(x, zoom_factor)
    x = (x + out) / (len(c) + 1)
    return np.clip(x, 0, 1) * 255


def snow(x, c, rng):
    h, w = x.shape[:2]
    x = np.array(x, dtype=np.float32) / 255.
    snow_layer = rng.normal(size=x.shape[:2], loc=c[0], scale=c[1])
    snow_layer = _clipped_zoom(snow_layer[..., np.newaxis], c[2])
    snow_layer[snow_layer < c[3]] = 0
    snow_layer = (np.clip(snow_layer.squeeze(), 0, 1) * 255).astype(np.uint8)
    snow_layer = _magick_motion_blur(snow_layer[..., None], c[4], c[5], rng.uniform(-135, -45)) / 255.
    x = c[6] * x + (1 - c[6]) * np.maximum(x, cv2.cvtColor(x, cv2.COLOR_RGB2GRAY).reshape(h, w, 1) * 1.5 + 0.5)
    return np.clip(x + snow_layer + np.rot90(snow_layer, k=2), 0, 1) * 255


def frost(x, c, rng):
    h, w = x.shape[:2]
    texture = frost_texture(int(rng.integers(5)), c[2])
    x_start, y_start = rng.integers(0, texture.shape[0] - h), rng.integers(0, texture.shape[1] - w)
    texture = texture[x_start:x_start + h, y_start:y_start + w][..., [2, 1, 0]]
    return np.clip(c[0] * np.array(x) + c[1] * texture, 0, 255)


def fog(x, c, rng):
    h, w = x.shape[:2]
    x = np.array(x) / 255.
    max_val = x.max()
    x += c[0] * _plasma_fractal(1 << (max(h, w) - 1).bit_length(), c[1], rng)[:h, :w][..., np.newaxis]
    return np.clip(x * max_val / (max_val + c[0]), 0, 1) * 255


def spatter(x, c, rng):
    x = np.array(x, dtype=np.float32) / 255.
    liquid_layer = rng.normal(size=x.shape[:2], loc=c[0], scale=c[1])
    liquid_layer = _gaussian(liquid_layer, sigma=c[2])
    liquid_layer[liquid_layer < c[3]] = 0
    if c[5] == 0:
        liquid_layer = (liquid_layer * 255).astype(np.uint8)
        m = cv2.cvtColor(water_mask(liquid_layer), cv2.COLOR_GRAY2BGRA)
        peak = np.max(m, axis=(0, 1))
        if peak[0] > 0:  # the reference divides 0 by 0 (NaN image) when no drop survives
            m /= peak
        m *= c[4]
        ones = np.ones_like(m[..., :1])
        color = np.concatenate((175 / 255. * ones, 238 / 255. * ones, 238 / 255. * ones), axis=2)
        color = cv2.cvtColor(color, cv2.COLOR_BGR2BGRA)
        x = cv2.cvtColor(x, cv2.COLOR_BGR2BGRA)
        return cv2.cvtColor(np.clip(x + m * color, 0, 1), cv2.COLOR_BGRA2BGR) * 255
    m = np.where(liquid_layer > c[3], 1, 0)
    m = _gaussian(m.astype(np.float32), sigma=c[4])
    m[m < 0.8] = 0
    ones = np.ones_like(x[..., :1])
    color = np.concatenate((63 / 255. * ones, 42 / 255. * ones, 20 / 255. * ones), axis=2)
    color *= m[..., np.newaxis]
    x *= (1 - m[..., np.newaxis])
    return np.clip(x + color, 0, 1) * 255


def contrast(x, c, rng):
    # The means come from exact integer sums (the reference's np.mean of x / 255, to the last bit or so).
    means = np.array(x).sum(axis=(0, 1), dtype=np.int64, keepdims=True) / (x.shape[0] * x.shape[1]) / 255.
    x = np.array(x) / 255.
    return np.clip((x - means) * c + means, 0, 1) * 255


def brightness(x, c, rng):
    x = np.array(x) / 255.
    x = _hsv_edit(x, 2, lambda v: min(max(v + c, 0.0), 1.0))
    return np.clip(x, 0, 1) * 255


def saturate(x, c, rng):
    x = np.array(x) / 255.
    x = _hsv_edit(x, 1, lambda s: min(max(s * c[0] + c[1], 0.0), 1.0))
    return np.clip(x, 0, 1) * 255


def jpeg_compression(x, c, rng):
    output = io.BytesIO()
    Image.fromarray(x).save(output, "JPEG", quality=c)
    return np.array(Image.open(output))


def pixelate(x, c, rng):
    h, w = x.shape[:2]
    x = Image.fromarray(x).resize((int(w * c), int(h * c)), Image.BOX)
    return np.array(x.resize((w, h), Image.BOX))


def elastic_transform(image, c, rng):
    image = np.array(image, dtype=np.float32) / 255.
    shape = image.shape
    shape_size = shape[:2]
    center_square = np.float32(shape_size) // 2
    square_size = min(shape_size) // 3
    pts1 = np.float32([center_square + square_size,
                       [center_square[0] + square_size, center_square[1] - square_size],
                       center_square - square_size])
    pts2 = pts1 + rng.uniform(-c[2], c[2], size=pts1.shape).astype(np.float32)
    M = cv2.getAffineTransform(pts1, pts2)
    image = cv2.warpAffine(image, M, shape_size[::-1], borderMode=cv2.BORDER_REFLECT_101)
    dx = (_gaussian(rng.uniform(-1, 1, size=shape[:2]), c[1], mode="reflect", truncate=3) * c[0]).astype(np.float32)
    dy = (_gaussian(rng.uniform(-1, 1, size=shape[:2]), c[1], mode="reflect", truncate=3) * c[0]).astype(np.float32)
    dx, dy = dx[..., np.newaxis], dy[..., np.newaxis]
    x, y, z = np.meshgrid(np.arange(shape[1]), np.arange(shape[0]), np.arange(shape[2]))
    indices = np.reshape(y + dy, (-1, 1)), np.reshape(x + dx, (-1, 1)), np.reshape(z, (-1, 1))
    return np.clip(map_coordinates(image, indices, order=1, mode="reflect").reshape(shape), 0, 1) * 255


_ORACLES = {f.__name__: f for f in (
    gaussian_noise, shot_noise, impulse_noise, defocus_blur, glass_blur, motion_blur, zoom_blur, snow, frost,
    fog, brightness, contrast, elastic_transform, pixelate, jpeg_compression, speckle_noise, gaussian_blur,
    spatter, saturate)}


def corrupt_one(image: np.ndarray, name: str, c, rng: np.random.Generator) -> np.ndarray:
    """One uint8 (H, W, 3) image corrupted as the reference does, ending with its ``np.uint8(...)`` cast."""
    return np.uint8(_ORACLES[name](image, c, rng))
