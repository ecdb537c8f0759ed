"""-P perturbation sequences (CIFAR-10-P, ImageNet-P), after Hendrycks & Dietterich's generator.

A sequence is T frames of one image under a slowly varying perturbation; the flip
probability of a classifier along it is the FP metric. ``perturb`` returns uint8
(N, T, H, W, 3) for a uint8 batch (N, H, W, 3). The schedules follow the reference
scripts ``make_cifar_p.py`` / ``make_imagenet_p.py`` (frame counts, constants, uint8
truncation); the random frames of image i come from a stream that depends only on
(seed, name, indices[i]) (``pushpull.data.streams``, the corruptions' rule), so output does not
depend on batching.

Geometric sequences use the operation the reference used: torchvision's ``affine`` on
PIL images (translate, rotate, scale, shear, zoom blur) and OpenCV 4's fixed-point
``warpPerspective`` (tilt: its map, run through OpenCV's ``remap``). ImageNet-P frames are
224 px centre crops of the image resized to 256 px (``crop=224``), taken where the reference
took them; moving sequences compute only the pixels that are kept.

Work shared between the frames of a sequence (``sequence_kernels``) and the C kernels
(``_sequence_native``: numpy's own Poisson algorithm on bulk-drawn uniforms, PIL's bilinear
warp, scipy's Gaussian passes, the frames' arithmetic) leave every frame bit-identical to
computing it alone, the reference's way (``tests/test_perturbations.py``); without a C compiler
the numpy path computes the same frames.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np

from .._names import check_name
from .streams import image_stream

Params = Literal["cifar", "imagenet"]

PERTURBATIONS: tuple[str, ...] = (
    "gaussian_noise", "shot_noise", "motion_blur", "zoom_blur", "snow",
    "brightness", "translate", "rotate", "tilt", "scale",
)
"""The 10 benchmark perturbations whose flip rates make up mFR, in the paper's order."""

HARDER_NOISE: tuple[str, ...] = (
    "gaussian_noise_2", "gaussian_noise_3", "shot_noise_2", "shot_noise_3", "speckle_noise_2", "speckle_noise_3",
)
VALIDATION_PERTURBATIONS: tuple[str, ...] = ("speckle_noise", "gaussian_blur", "spatter", "shear")
ALL_PERTURBATIONS: tuple[str, ...] = PERTURBATIONS + VALIDATION_PERTURBATIONS + HARDER_NOISE

NOISE_SEQUENCES: frozenset[str] = frozenset(
    n for n in ALL_PERTURBATIONS if n.split("_noise")[0] in ("gaussian", "shot", "speckle"))
"""Sequences whose frame 0 is the clean image; FP compares every frame with frame 0."""
MOVING_SEQUENCES: frozenset[str] = frozenset({"zoom_blur", "translate", "rotate", "tilt", "scale", "shear"})
"""Sequences that move image content, so the frames see beyond a centre crop."""

# The reference constants, per parameter set. Noise: one value per variant ("", _2, _3).
_PARAMS: dict[str, dict[str, object]] = {
    "cifar": {
        "gaussian_noise": (0.02, 0.04, 0.06), "shot_noise": (700, 400, 200), "speckle_noise": (0.05, 0.07, 0.10),
        "motion_blur": dict(frames=21, radius=6, sigma=1.8, angle=lambda i: (i - 20) * 9),
        "snow": dict(zoom=2, radius=10, sigma=2),
        "brightness": lambda i: (i - 15) * 1.5 / 100.0, "translate": (16, 7), "tilt": 0.75,
        "scale": lambda i: (i * 2 + 70) / 100.0,
        "gaussian_blur": dict(sigma=lambda i: 0.3 + 0.015 * i, truncate=7.0),
        "spatter": dict(loc=0.6, scale=0.265, sigma=1.75, threshold=0.7, drift=(0.2, 0.8)),
    },
    "imagenet": {
        "gaussian_noise": (0.03, 0.05, 0.08), "shot_noise": (300, 120, 60), "speckle_noise": (0.05, 0.10, 0.15),
        "motion_blur": dict(frames=31, radius=10, sigma=3, angle=lambda i: (i - 30) * 4),
        "snow": dict(zoom=3, radius=14, sigma=4),
        "brightness": lambda i: (i - 15) * 2 / 100.0, "translate": (41, 20), "tilt": 1.0,
        "scale": lambda i: (i * 2.5 + 40) / 100.0,
        "gaussian_blur": dict(sigma=lambda i: 0.25 + 0.035 * i, truncate=6.0),
        "spatter": dict(loc=0.65, scale=0.27, sigma=3.7, threshold=0.69, drift=(0.05, 0.1, 0.15, 0.7)),
    },
}
FRAMES = 31


def num_frames(name: str, params: Params = "cifar") -> int:
    """Sequence length T of a perturbation (31 except CIFAR motion blur 21, translate 16 / 41)."""
    _check(name, params)
    if name == "motion_blur":
        return _PARAMS[params]["motion_blur"]["frames"]
    if name == "translate":
        return _PARAMS[params]["translate"][0]
    return FRAMES


def _check(name: str, params: str) -> None:
    check_name(name, ALL_PERTURBATIONS, "perturbation")
    check_name(params, _PARAMS, "parameter table")


Window = tuple[int, int, int, int]
"""(top, left, height, width) of the output pixels kept."""


def _crop_window(h: int, w: int, size: int | None) -> Window:
    """torchvision's ``CenterCrop(size)`` of an h x w image (all of it for None)."""
    if size is None:
        return 0, 0, h, w
    if size > min(h, w):
        raise ValueError(f"crop {size} is larger than the images ({h}x{w})")
    return int(round((h - size) / 2.0)), int(round((w - size) / 2.0)), size, size


# --------------------------------------------------------------------------- noise


def _noise_level(name: str, params: str) -> tuple[str, float]:
    base, _, variant = name.partition("_noise")
    return base, _PARAMS[params][base + "_noise"][int(variant[1:]) - 1 if variant else 0]


def _noise_frames(clean: np.ndarray, base: str, level: float, rng: np.random.Generator) -> np.ndarray:
    """Frames 1..30 of one image's noise sequence (the per-image oracle and the fast path in one).

    All 30 frames come from one stream in frame order, as one call per frame would draw them; the
    arithmetic is the reference's, in its order (native kernels where they are built: the same bits).
    """
    from ._sequence_native import exact_for, library, shot_frames
    from .sequence_kernels import normal_noise_frames

    shape = (FRAMES - 1,) + clean.shape
    lib = library() if exact_for(rng) else None
    if lib is not None:
        if base == "shot":
            return shot_frames(lib, rng, clean, FRAMES - 1, level)
        return normal_noise_frames(lib, clean, base, level, rng, FRAMES - 1)
    if base == "gaussian":  # torch float32 arithmetic as in the reference: clamp(x + s*randn) -> uint8(x*255)
        x = clean.astype(np.float32) / np.float32(255)
        z = rng.standard_normal(shape, dtype=np.float32)
        z *= np.float32(level)
        z += x
        np.clip(z, 0, 1, out=z)
        z *= np.float32(255)
        return z.astype(np.uint8)
    x = clean / 255.0
    if base == "shot":
        z = rng.poisson(np.broadcast_to(x * level, shape)).astype(np.float64)
        z /= level
    else:  # speckle: x + x * noise
        z = rng.normal(size=shape, scale=level)
        z *= x
        z += x
    np.clip(z, 0, 1, out=z)
    z *= 255
    return z.astype(np.uint8)


def _noise(images: np.ndarray, name: str, params: str, rngs: Callable[[int], np.random.Generator]) -> np.ndarray:
    base, level = _noise_level(name, params)
    out = np.empty((len(images), FRAMES) + images.shape[1:], np.uint8)
    out[:, 0] = images
    for i, clean in enumerate(images):
        out[i, 1:] = _noise_frames(clean, base, level, rngs(i))
    return out


# --------------------------------------------------------------------------- photometric


def _brightness(images: np.ndarray, params: str) -> np.ndarray:
    from ._sequence_native import library
    from .sequence_kernels import brightness_frames, hsv_factors

    delta_v = _PARAMS[params]["brightness"]  # the reference's expression: float rounding shows in uint8
    out = np.empty((len(images), FRAMES) + images.shape[1:], np.uint8)
    lib = library()
    value, factors = hsv_factors(lib, images)
    if lib is not None:
        return brightness_frames(lib, value, factors, [delta_v(i) for i in range(FRAMES)], out)
    for i in range(FRAMES):
        rgb = np.clip(value + delta_v(i), 0, 1)[..., None] * factors
        rgb *= 255
        out[:, i] = rgb
    return out


def _gaussian_blur(images: np.ndarray, params: str) -> np.ndarray:
    """skimage.filters.gaussian(multichannel, mode='nearest') per frame, whole batch at once."""
    from ._sequence_native import library
    from .corruptions.blur import gaussian_smooth
    from .sequence_kernels import gaussian_blur_frames, gaussian_weights

    cfg = _PARAMS[params]["gaussian_blur"]
    x = images / 255.0
    weights = [gaussian_weights(cfg["sigma"](i), cfg["truncate"]) for i in range(FRAMES)]
    lib = library()
    if lib is not None and all(wt is not None for wt in weights):
        return gaussian_blur_frames(lib, x, weights)
    return np.stack([(255 * gaussian_smooth(x, cfg["sigma"](i), truncate=cfg["truncate"])).astype(np.uint8)
                     for i in range(FRAMES)], 1)


def _motion_blur(images: np.ndarray, params: str) -> np.ndarray:
    """ImageMagick motion blur swept through angles (no randomness)."""
    from .sequence_kernels import motion_blur_sweep

    cfg = _PARAMS[params]["motion_blur"]
    return motion_blur_sweep(images, cfg["radius"], cfg["sigma"], [cfg["angle"](i) for i in range(cfg["frames"])])


def _snow(images: np.ndarray, params: str, rngs: Callable[[int], np.random.Generator]) -> np.ndarray:
    """One random flake layer per image, motion-blurred at angles 4i - 150, over a whitened image."""
    from ._sequence_native import library
    from .corruptions.weather import blend_snow, snow_layers
    from .sequence_kernels import motion_blur_sweep, snow_frames

    cfg = _PARAMS[params]["snow"]
    layers = snow_layers(images.shape[:3], 0.05, 0.3, cfg["zoom"], 0.5, [rngs(i) for i in range(len(images))])
    moving = motion_blur_sweep(layers, cfg["radius"], cfg["sigma"], [i * 4 - 150 for i in range(FRAMES)])
    lib = library()
    if lib is not None:
        return snow_frames(lib, images, moving, 0.85)
    # a few frames per call: the whitening is shared and the float64 sums stay in cache
    step = max(1, (4 << 20) // (images.size * 8))
    return np.concatenate([blend_snow(images, moving[:, t:t + step], 0.85) for t in range(0, FRAMES, step)], 1)


def convolve_same(x: np.ndarray, kernel: Sequence[float], axis: int) -> np.ndarray:
    """``np.convolve(line, kernel, mode='same')`` along ``axis`` of an array, all lines at once."""
    from ._sequence_native import library

    lib = library()
    if lib is not None and axis == x.ndim - 2 and x.dtype == np.float64:  # down the columns of each layer
        layers = np.ascontiguousarray(x).reshape((-1,) + x.shape[-2:])
        out = np.empty_like(layers)
        taps = np.asarray(kernel, np.float64)
        for layer, smeared in zip(layers, out):
            lib.pp_convolve_columns(layer, layer.shape[0], layer.shape[1], taps, len(taps), smeared)
        return out.reshape(x.shape)
    x = np.moveaxis(x, axis, -1)
    n, k = x.shape[-1], len(kernel)
    full = np.zeros(x.shape[:-1] + (n + k - 1,))
    for j, weight in enumerate(kernel):
        full[..., j:j + n] += weight * x
    start = (k - 1) // 2
    return np.moveaxis(full[..., start:start + n], -1, axis)


def _spatter(images: np.ndarray, params: str, rngs: Callable[[int], np.random.Generator]) -> np.ndarray:
    """Water drops that run down the image: the liquid layer is smeared downwards frame by frame."""
    from ._sequence_native import library
    from .corruptions.blur import gaussian_smooth
    from .corruptions.weather import water_drops
    from .sequence_kernels import water_frames

    cfg = _PARAMS[params]["spatter"]
    n, h, w, _ = images.shape
    x = images.astype(np.float32) / np.float32(255)
    liquid = np.stack([rngs(i).normal(size=(h, w), loc=cfg["loc"], scale=cfg["scale"]) for i in range(n)])
    liquid = gaussian_smooth(liquid, cfg["sigma"])
    liquid[liquid < cfg["threshold"]] = 0
    lib = library()
    frames = np.empty((n, FRAMES, h, w, 3), np.uint8)
    for t in range(FRAMES):
        if lib is not None:  # straight into the frames
            water_frames(lib, x, liquid, np.float32(0.6), frames[:, t])
        else:
            frames[:, t] = water_drops(x, liquid, np.float32(0.6))
        liquid = convolve_same(liquid, cfg["drift"], axis=1)
    return frames


# --------------------------------------------------------------------------- geometric


def affine_matrix(size: tuple[int, int], *, angle: float = 0.0, translate: Sequence[float] = (0, 0),
                  scale: float = 1.0, shear: Sequence[float] = (0.0, 0.0)) -> list[float]:
    """The inverse affine map torchvision's ``affine`` hands PIL (same operations, same rounding).

    Computed once per frame instead of once per image and frame.
    """
    cx, cy = size[0] * 0.5, size[1] * 0.5
    tx, ty = translate
    rot, sx, sy = math.radians(angle), math.radians(shear[0]), math.radians(shear[1])
    a = math.cos(rot - sy) / math.cos(sy)
    b = -math.cos(rot - sy) * math.tan(sx) / math.cos(sy) - math.sin(rot)
    c = math.sin(rot - sy) / math.cos(sy)
    d = -math.sin(rot - sy) * math.tan(sx) / math.cos(sy) + math.cos(rot)
    m = [x / scale for x in (d, -b, 0.0, -c, a, 0.0)]
    m[2] += m[0] * (-cx - tx) + m[1] * (-cy - ty)
    m[5] += m[3] * (-cx - tx) + m[4] * (-cy - ty)
    m[2] += cx
    m[5] += cy
    return m


def _pil_affine_frames(images: np.ndarray, frames: Sequence[dict], bilinear: bool, window: Window) -> np.ndarray:
    """PIL affine warps of every (image, frame), black outside, as the reference's torchvision ``affine``,
    inside ``window`` only.

    PIL computes an output pixel from its own coordinates (counted from the top-left corner) alone,
    so an output image that ends at the window's bottom-right corner holds the same pixels there.
    """
    from PIL import Image

    from ._sequence_native import pil_affine_library
    from .sequence_kernels import pil_bilinear_frames, shifted_frames, whole_pixel_shift

    mode = Image.Resampling.BILINEAR if bilinear else Image.Resampling.NEAREST
    size = (images.shape[2], images.shape[1])
    top, left, height, width = window
    matrices = [affine_matrix(size, **kw) for kw in frames]
    out = np.empty((len(images), len(frames), height, width, images.shape[3]), np.uint8)
    shifts = [whole_pixel_shift(m) for m in matrices]
    if not bilinear and None not in shifts:  # translate: PIL's nearest neighbours of whole-pixel moves are copies
        return shifted_frames(images, shifts, window, out)
    lib = pil_affine_library() if bilinear and images[0].size < 2 ** 31 - 1 else None  # int32 byte offsets
    if lib is not None:
        return pil_bilinear_frames(lib, images, matrices, window, out)
    for n, img in enumerate(images):
        pil = Image.fromarray(img)
        for t, matrix in enumerate(matrices):
            moved = pil.transform((left + width, top + height), Image.Transform.AFFINE, matrix, mode,
                                  fillcolor=(0, 0, 0))
            out[n, t] = np.asarray(moved)[top:, left:]
    return out


def _zoom_blur(images: np.ndarray, window: Window) -> np.ndarray:
    """Running mean of zooms 1 + 0.004 k (float32, truncated to uint8 as ToPILImage does)."""
    from ._sequence_native import library
    from .sequence_kernels import running_mean_frames

    zooms = _pil_affine_frames(images, [{"scale": 1 + 0.004 * i} for i in range(1, FRAMES)], True, window)
    top, left, height, width = window
    images = images[:, top:top + height, left:left + width]
    out = np.empty((len(images), FRAMES) + images.shape[1:], np.uint8)
    out[:, 0] = images
    lib = library()
    if lib is not None:
        return running_mean_frames(lib, zooms, out)
    total = images.astype(np.float32) / np.float32(255)
    for i in range(1, FRAMES):
        total += zooms[:, i - 1].astype(np.float32) / np.float32(255)
        out[:, i] = (total / np.float32(i + 1) * np.float32(255)).astype(np.uint8)
    return out


def tilt_matrix(degrees: float, height: int, width: int) -> np.ndarray:
    """The reference's 3x3 perspective: rotate the image plane by ``degrees`` about both axes."""
    phi = theta = np.deg2rad(degrees)
    f = np.sqrt(width ** 2 + height ** 2)
    p1 = np.array([[1, 0, -width / 2], [0, 1, -height / 2], [0, 0, 1], [0, 0, 1]])
    rx = np.array([[1, 0, 0, 0], [0, np.cos(theta), -np.sin(theta), 0], [0, np.sin(theta), np.cos(theta), 0],
                   [0, 0, 0, 1]])
    ry = np.array([[np.cos(phi), 0, -np.sin(phi), 0], [0, 1, 0, 0], [np.sin(phi), 0, np.cos(phi), 0], [0, 0, 0, 1]])
    t = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, f], [0, 0, 0, 1]])
    p2 = np.array([[f, 0, width / 2, 0], [0, f, height / 2, 0], [0, 0, 1, 0]])
    return p2 @ t @ rx @ ry @ p1


def warp_perspective(images: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """OpenCV 4's ``warpPerspective(src, M, (w, h))`` with INTER_LINEAR and a black constant border.

    Its fixed-point arithmetic (source coordinates rounded to 1/32 px, integer bilinear weights,
    rounding shift by 15 bits), for a whole batch (N, H, W, C): the map is computed once, as 4.x
    did, and handed to OpenCV's ``remap``, which still runs that fixed-point path (OpenCV 5's
    ``warpPerspective`` itself rounds otherwise: frames differ by up to 7 levels). ``matrix`` (3, 3) gives (N, H, W, C);
    a stack (T, 3, 3) gives (N, T, H, W, C).
    """
    from .sequence_kernels import warp_frames

    frames = warp_frames(np.ascontiguousarray(images), np.reshape(matrix, (-1, 3, 3)))
    return frames[:, 0] if np.ndim(matrix) == 2 else frames


def _tilt(images: np.ndarray, params: str, window: Window) -> np.ndarray:
    """Each frame warps the whole image (the reference's map), computed only inside the window."""
    from .sequence_kernels import warp_frames

    step = _PARAMS[params]["tilt"]
    h, w = images.shape[1:3]
    return warp_frames(images, np.stack([tilt_matrix(step * (i - 15), h, w) for i in range(FRAMES)]), window)


def _geometric(images: np.ndarray, name: str, params: str, window: Window) -> np.ndarray:
    if name == "translate":
        frames, off = _PARAMS[params]["translate"]
        return _pil_affine_frames(images, [{"translate": (i - off, 0)} for i in range(frames)], False, window)
    if name == "rotate":
        frames = [{"angle": float(i - 15)} for i in range(FRAMES)]
    elif name == "scale":
        frames = [{"scale": _PARAMS[params]["scale"](i)} for i in range(FRAMES)]
    else:  # shear
        frames = [{"shear": (float(i - 15), 0.0)} for i in range(FRAMES)]
    return _pil_affine_frames(images, frames, True, window)


# --------------------------------------------------------------------------- API


def perturb(
    images: np.ndarray,
    name: str,
    *,
    seed: int = 0,
    indices: Sequence[int] | np.ndarray | None = None,
    params: Params = "cifar",
    crop: int | None = None,
) -> np.ndarray:
    """Perturbation sequences of a uint8 batch (N, H, W, 3): uint8 (N, T, h, w, 3).

    ``indices`` name the images in their dataset (default ``arange(N)``): image i's random
    frames depend only on (seed, name, indices[i]). ``crop``: the output size, a centre
    crop taken where the reference took it: after moving the whole image for
    ``MOVING_SEQUENCES``, before perturbing for the others (ImageNet-P: 224 px out of the
    image resized to 256 px).
    """
    _check(name, params)
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be uint8 (N, H, W, 3), got {images.dtype} {images.shape}")
    indices = np.arange(len(images)) if indices is None else np.asarray(indices)
    if indices.shape != (len(images),):
        raise ValueError(f"indices must have one entry per image ({len(images)}), got shape {indices.shape}")

    def rngs(i: int) -> np.random.Generator:
        return image_stream(seed, name, indices[i])

    window = _crop_window(images.shape[1], images.shape[2], crop)
    if name not in MOVING_SEQUENCES:  # the reference cropped first, then perturbed
        top, left, height, width = window
        images = np.ascontiguousarray(images[:, top:top + height, left:left + width])
    if name in NOISE_SEQUENCES:
        frames = _noise(images, name, params, rngs)
    elif name == "brightness":
        frames = _brightness(images, params)
    elif name == "gaussian_blur":
        frames = _gaussian_blur(images, params)
    elif name == "motion_blur":
        frames = _motion_blur(images, params)
    elif name == "snow":
        frames = _snow(images, params, rngs)
    elif name == "spatter":
        frames = _spatter(images, params, rngs)
    elif name == "zoom_blur":
        frames = _zoom_blur(images, window)
    elif name == "tilt":
        frames = _tilt(images, params, window)
    else:  # translate, rotate, scale, shear
        frames = _geometric(images, name, params, window)
    return frames
