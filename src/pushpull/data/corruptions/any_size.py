"""imagecorruptions' call for one image of any size: ``corrupt_image`` and ``get_corruption_names``, seeded.

Same semantics as ``imagecorruptions.corrupt`` / ``get_corruption_names`` 1.1.2 (bethgelab; the library
behind COCO-C and Cityscapes-C): any H x W >= 32, grey (H, W) and one-channel (H, W, 1) images are
corrupted as RGB copies, and the result is always uint8 (H, W, 3). Its severities are ImageNet-C's; 13
corruptions are exactly ``corrupt(..., params="imagenet")`` (which works at any size), the other six
follow its own size rules (``any_size_rules``). Randomness: imagecorruptions draws from numpy's
global RNG; here image ``index`` under ``seed`` draws from the one stream rule of the project,
``image_stream(seed, name, severity, index)`` (``pushpull.data.streams``: the name's id, never a list
position), so a result is reproducible on any machine and independent of call order.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..._names import check_name
from ..robustness_sets import check_severity
from ..streams import image_stream
from . import BENCHMARK_CORRUPTIONS, CORRUPTIONS, EXTRA_CORRUPTIONS, any_size_rules as rules, corrupt
from .params import severity_params

MIN_SIDE = 32  # imagecorruptions' smallest height and width

SUBSETS: dict[str, tuple[str, ...]] = {
    "common": BENCHMARK_CORRUPTIONS,
    "validation": EXTRA_CORRUPTIONS,
    "all": CORRUPTIONS,
    "noise": BENCHMARK_CORRUPTIONS[0:3],
    "blur": BENCHMARK_CORRUPTIONS[3:7],
    "weather": BENCHMARK_CORRUPTIONS[7:11],
    "digital": BENCHMARK_CORRUPTIONS[11:15],
}
"""imagecorruptions' subsets: its families are the 15 benchmark corruptions only (no validation ones)."""

# name -> fn(uint8 (H, W, 3), severity, generator) for the corruptions with their own size rules.
_OWN_RULES: dict[str, Callable[[np.ndarray, int, np.random.Generator], np.ndarray]] = {
    "motion_blur": lambda x, s, rng: rules.motion_blur(x, *severity_params("motion_blur", s, "imagenet"), rng),
    "zoom_blur": lambda x, s, rng: rules.zoom(x, severity_params("zoom_blur", s, "imagenet"), rng),
    "snow": lambda x, s, rng: rules.snow(x, severity_params("snow", s, "imagenet"), rng),
    "frost": lambda x, s, rng: rules.frost(x, severity_params("frost", s, "imagenet")[:2], rng),
    "elastic_transform": rules.elastic_transform,
    "pixelate": lambda x, s, rng: rules.pixelate_nearest(x, severity_params("pixelate", s, "imagenet"), rng),
}


def get_corruption_names(subset: str = "common") -> list[str]:
    """The corruption names of an imagecorruptions subset: "common" (the 15 of mCE), "validation" (the 4
    extra), "all" (19), or a family of the common ones: "noise", "blur", "weather", "digital"."""
    return list(SUBSETS[check_name(subset, SUBSETS, "subset")])


def corrupt_image(image: np.ndarray, severity: int = 1, corruption_name: str | None = None,
                  corruption_number: int = -1, *, seed: int = 0, index: int = 0) -> np.ndarray:
    """One image corrupted as ``imagecorruptions.corrupt(image, severity, corruption_name, corruption_number)``.

    ``image``: uint8 (H, W, 3), (H, W) or (H, W, 1), H and W >= 32 (float images: convert from
    [0, 1] with ``(x * 255).round().astype(np.uint8)``). ``corruption_name`` (see
    ``get_corruption_names("all")``) or ``corruption_number`` (its position there, 0..18) picks the
    corruption; the name wins when both are given. Returns a new uint8 (H, W, 3) array; the input is
    never modified. ``seed`` and ``index`` (the image's stable id in its dataset, e.g. its position
    in a sorted file list) fix the random stream: the same (seed, index) gives the same draws, so give
    every image its own index.
    """
    rgb = as_rgb(image)
    name = _corruption(corruption_name, corruption_number)
    severity = check_severity(severity)
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or index < 0:
        raise ValueError(f"index must be a non-negative integer (the image's id in its dataset), got {index!r}")
    index = int(index)
    if name in _OWN_RULES:
        return _OWN_RULES[name](rgb, severity, image_stream(seed, name, severity, index))
    return corrupt(rgb[None], name, severity, seed=seed, indices=[index], params="imagenet", workers=1)[0]


def _corruption(name: str | None, number: int) -> str:
    """The corruption a ``corruption_name`` / ``corruption_number`` pair picks (the name first)."""
    if name is not None:
        return check_name(name, CORRUPTIONS, "corruption")
    if isinstance(number, bool) or not isinstance(number, (int, np.integer)) or not -1 <= number < len(CORRUPTIONS):
        raise ValueError(f"corruption_number must be an integer in 0..{len(CORRUPTIONS) - 1}, got {number!r}")
    if number == -1:
        raise ValueError("give corruption_name (see get_corruption_names('all')) or corruption_number (0..18)")
    return CORRUPTIONS[number]


def as_rgb(image: np.ndarray) -> np.ndarray:
    """``image`` checked as imagecorruptions accepts it, as uint8 (H, W, 3): grey and one-channel images repeated."""
    if not isinstance(image, np.ndarray):
        hint = " (np.asarray(image) converts a PIL image)" if hasattr(image, "getbands") else ""
        raise TypeError(f"image must be a numpy array, got {type(image).__name__}{hint}")
    if image.dtype != np.uint8:
        if np.issubdtype(image.dtype, np.floating):
            hint = ": the values must be 0..255 integers; from a [0, 1] float image use (x * 255).round().astype(np.uint8)"
        elif np.issubdtype(image.dtype, np.integer) and image.dtype.itemsize > 1:
            hint = (f": {8 * image.dtype.itemsize}-bit images are not supported; scale them to 8 bits first "
                    "(e.g. (x // 257).astype(np.uint8) for 16-bit 0..65535)")
        else:
            hint = ""
        raise TypeError(f"image must be uint8 (0..255), got {image.dtype}{hint}")
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3)):
        hint = " (RGBA? drop the alpha channel: image[..., :3])" if image.ndim == 3 and image.shape[2] == 4 else ""
        raise ValueError(f"image must have shape (H, W), (H, W, 1) or (H, W, 3), got {image.shape}{hint}")
    h, w = image.shape[:2]
    if h < MIN_SIDE or w < MIN_SIDE:
        raise ValueError(f"image must be at least {MIN_SIDE}x{MIN_SIDE} pixels (imagecorruptions' limit), got {h}x{w}")
    if image.ndim == 3 and image.shape[2] == 3:
        return np.ascontiguousarray(image)
    grey = image if image.ndim == 2 else image[..., 0]
    return np.repeat(grey[..., None], 3, axis=2)


__all__ = ["MIN_SIDE", "SUBSETS", "as_rgb", "corrupt_image", "get_corruption_names"]
