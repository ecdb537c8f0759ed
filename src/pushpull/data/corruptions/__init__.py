"""CIFAR-10-C / ImageNet-C corruptions: Hendrycks & Dietterich's 19 generators, batched and reproducible.

``corrupt(images, name, severity)`` corrupts uint8 images (numpy arrays or torch tensors) with
one of the reference's parameter tables (``params.TABLES``: CIFAR-10/100-C's for 32x32,
ImageNet-C's for 224x224, Tiny-ImageNet-C's and ImageNet-64x64-C's for 64x64). Image i's randomness comes only from
``numpy.random.default_rng([seed, stream_id(name), severity, indices[i]])`` (``pushpull.data.streams``:
the id is fixed by the name, not its place in ``CORRUPTIONS``), so the output is the same whatever
the batching, number of workers or machine. ``corrupt_reference`` is the
slow per-image oracle the fast path is tested against.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from ..._names import check_name
from ..robustness_sets import check_severity
from ..streams import image_streams
from .blur import (clipped_zoom, defocus_blur, disk_kernel, gaussian_blur, glass_blur, motion_blur, motion_kernel,
                   zoom_blur)
from .digital import brightness, contrast, elastic_transform, hsv2rgb, jpeg_compression, pixelate, rgb2hsv, saturate
from .noise import gaussian_noise, impulse_noise, shot_noise, speckle_noise
from .params import CIFAR, IMAGENET, TABLE_SIZES, TABLES, TINY_IMAGENET, check_table, severity_params
from .weather import blend_snow, fog, frost, plasma_fractal, snow, snow_layers, spatter

BENCHMARK_CORRUPTIONS: tuple[str, ...] = (
    "gaussian_noise", "shot_noise", "impulse_noise",
    "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog", "brightness",
    "contrast", "elastic_transform", "pixelate", "jpeg_compression",
)
EXTRA_CORRUPTIONS: tuple[str, ...] = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
CORRUPTIONS: tuple[str, ...] = BENCHMARK_CORRUPTIONS + EXTRA_CORRUPTIONS
# The group names a list of corruptions may use instead of names (the CLI's --corruptions, RandomCorrupt).
CORRUPTION_GROUPS: dict[str, tuple[str, ...]] = {"all": CORRUPTIONS, "benchmark": BENCHMARK_CORRUPTIONS,
                                                 "extra": EXTRA_CORRUPTIONS}
# Hendrycks & Dietterich's four families (each extra joins the family of its module here).
FAMILIES: dict[str, tuple[str, ...]] = {
    "noise": ("gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise"),
    "blur": ("defocus_blur", "glass_blur", "motion_blur", "zoom_blur", "gaussian_blur"),
    "weather": ("snow", "frost", "fog", "brightness", "spatter"),
    "digital": ("contrast", "elastic_transform", "pixelate", "jpeg_compression", "saturate"),
}

Corruption = Callable[[np.ndarray, object, Sequence[np.random.Generator]], np.ndarray]
if TYPE_CHECKING:
    import torch
ImageInput = TypeVar("ImageInput", np.ndarray, "torch.Tensor")


def _motion(images, c, rngs):
    return motion_blur(images, c[0], c[1], [rng.uniform(-45, 45) for rng in rngs])


# name -> fn(images, table entry, streams): the table entry is exactly the reference's ``c``.
_FAST: dict[str, Corruption] = {
    "gaussian_noise": gaussian_noise,
    "shot_noise": shot_noise,
    "impulse_noise": impulse_noise,
    "defocus_blur": lambda x, c, rngs: defocus_blur(x, *c),
    "glass_blur": lambda x, c, rngs: glass_blur(x, *c, rngs),
    "motion_blur": _motion,
    "zoom_blur": lambda x, c, rngs: zoom_blur(x, c),
    "snow": snow,
    "frost": lambda x, c, rngs: frost(x, *c, rngs),
    "fog": lambda x, c, rngs: fog(x, *c, rngs),
    "brightness": lambda x, c, rngs: brightness(x, c),
    "contrast": lambda x, c, rngs: contrast(x, c),
    "elastic_transform": lambda x, c, rngs: elastic_transform(x, *c, rngs),
    "pixelate": lambda x, c, rngs: pixelate(x, c),
    "jpeg_compression": lambda x, c, rngs: jpeg_compression(x, c),
    "speckle_noise": speckle_noise,
    "gaussian_blur": lambda x, c, rngs: gaussian_blur(x, c),
    "spatter": spatter,
    "saturate": lambda x, c, rngs: saturate(x, *c),
}


def check_inputs(images: np.ndarray, severity: int, indices, params: str) -> np.ndarray:
    """Validate the common arguments; returns the indices as an int64 array."""
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8:
        raise TypeError(f"images must be a uint8 numpy array, got {getattr(images, 'dtype', type(images))}")
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must have shape (N, H, W, 3), got {images.shape}")
    check_severity(severity)
    check_table(params)
    if indices is None:
        return np.arange(len(images), dtype=np.int64)
    indices = np.asarray(indices)
    if indices.shape != (len(images),) or not np.issubdtype(indices.dtype, np.integer) or (indices < 0).any():
        raise ValueError(f"indices must be {len(images)} non-negative integers (one per image), got shape "
                         f"{indices.shape} dtype {indices.dtype}")
    return indices.astype(np.int64)


def _checked(images: np.ndarray, name: str, severity: int, indices, params: str):  # noqa: ANN202
    """The arguments of ``corrupt`` checked: (name, int64 indices, the table entry ``c``)."""
    name = check_name(name, CORRUPTIONS, "corruption")
    indices = check_inputs(images, severity, indices, params)
    return name, indices, severity_params(name, int(severity), params)


def corrupt(images: ImageInput, name: str, severity: int, *, seed: int = 0,
            indices: int | Sequence[int] | None = None, params: str = "cifar",
            workers: int | None = None) -> ImageInput:
    """Corrupt uint8 images with corruption ``name`` at ``severity`` (1..5); returns the same type and layout.

    ``images``: a numpy array (N, H, W, 3) or one image (H, W, 3), or a torch tensor in either
    of these layouts or channels-first (N, 3, H, W) / (3, H, W) as torchvision reads images
    (a last dimension of 3 means channels-last). ``params``: the parameter table, a name of
    ``TABLES``: "cifar" (CIFAR-10/100-C), "imagenet" (ImageNet-C), "tinyimagenet"
    (Tiny-ImageNet-C) or "imagenet64" (ImageNet-64x64-C). ``indices``: each image's index in its dataset (default
    0..N-1), which with ``seed`` fixes its random stream. ``workers``: threads (default: all cores).
    """
    return _on_any_input(_corrupt_batch, images, name, severity, seed=seed, indices=indices, params=params,
                         workers=workers)


def _on_any_input(fn: Callable[..., np.ndarray], images: ImageInput, name: str, severity: int, *,
                  indices: int | Sequence[int] | None, **kwargs) -> ImageInput:
    """``fn`` (which takes a (N, H, W, 3) array) applied to any input ``corrupt`` accepts, the result in its form."""
    batch, restore = _as_batch(images)
    if indices is not None and np.ndim(indices) == 0:  # one image, one index
        indices = [indices]
    return restore(fn(batch, name, severity, indices=indices, **kwargs))


def _as_batch(images: ImageInput) -> tuple[np.ndarray, Callable[[np.ndarray], ImageInput]]:
    """``images`` as a (N, H, W, 3) uint8 array, and the function that gives a result back in the caller's form."""
    torch = sys.modules.get("torch")  # a tensor implies torch is imported; never import it here
    is_tensor = torch is not None and isinstance(images, torch.Tensor)
    if not is_tensor and not isinstance(images, np.ndarray):
        raise TypeError(f"images must be a uint8 numpy array or torch tensor, got {type(images).__name__}")
    if images.dtype not in (np.uint8, getattr(torch, "uint8", None)):
        raise TypeError(f"images must be uint8 (0..255), got {images.dtype}")
    single = images.ndim == 3
    channels_first = is_tensor and images.ndim in (3, 4) and images.shape[-1] != 3 and images.shape[-3] == 3
    if images.ndim not in (3, 4) or (images.shape[-1] != 3 and not channels_first):
        layouts = "(N, H, W, 3), (H, W, 3)" + (", (N, 3, H, W) or (3, H, W)" if is_tensor else "")
        raise ValueError(f"images must have shape {layouts}, got {tuple(images.shape)}")
    array = images.detach().cpu().numpy() if is_tensor else images
    array = array[None] if single else array
    array = np.ascontiguousarray(np.moveaxis(array, 1, -1)) if channels_first else array

    def restore(out: np.ndarray) -> ImageInput:
        out = np.moveaxis(out, -1, 1) if channels_first else out
        out = out[0] if single else out
        return torch.from_numpy(np.ascontiguousarray(out)).to(images.device) if is_tensor else out

    return array, restore


def _corrupt_batch(images: np.ndarray, name: str, severity: int, *, seed: int, indices: Sequence[int] | None,
                   params: str, workers: int | None) -> np.ndarray:
    """``corrupt`` on a (N, H, W, 3) uint8 array: chunks of about 64k pixels spread over threads."""
    name, indices, c = _checked(images, name, severity, indices, params)
    fn = _FAST[name]
    if len(images) == 0:
        return images.copy()
    chunk = max(1, 65536 // (images.shape[1] * images.shape[2]))  # 64 CIFAR images, 1 ImageNet image
    bounds = [(lo, min(lo + chunk, len(images))) for lo in range(0, len(images), chunk)]

    def run(bound):
        lo, hi = bound
        return fn(images[lo:hi], c, image_streams(seed, name, severity, indices[lo:hi]))

    workers = (os.cpu_count() or 1) if workers is None else int(workers)
    if workers <= 1 or len(bounds) == 1:
        return np.concatenate([run(b) for b in bounds])
    with ThreadPoolExecutor(workers) as pool:
        return np.concatenate(list(pool.map(run, bounds)))


def corrupt_reference(images: ImageInput, name: str, severity: int, *, seed: int = 0,
                      indices: int | Sequence[int] | None = None, params: str = "cifar",
                      workers: int | None = None) -> ImageInput:
    """The slow oracle: one image at a time, mirroring the reference code line by line (``workers`` ignored);
    takes the inputs ``corrupt`` takes."""
    return _on_any_input(_reference_batch, images, name, severity, seed=seed, indices=indices, params=params)


def _reference_batch(images: np.ndarray, name: str, severity: int, *, seed: int, indices: Sequence[int] | None,
                     params: str) -> np.ndarray:
    from .reference import corrupt_one

    name, indices, c = _checked(images, name, severity, indices, params)
    streams = image_streams(seed, name, severity, indices)
    out = np.empty_like(images)
    for i, (image, rng) in enumerate(zip(images, streams)):
        out[i] = corrupt_one(image, name, c, rng)
    return out


__all__ = [
    "BENCHMARK_CORRUPTIONS", "CIFAR", "CORRUPTIONS", "CORRUPTION_GROUPS", "EXTRA_CORRUPTIONS", "FAMILIES", "IMAGENET",
    "TABLES",
    "TABLE_SIZES", "TINY_IMAGENET", "check_table",
    "blend_snow", "brightness", "clipped_zoom", "contrast", "corrupt", "corrupt_reference", "defocus_blur",
    "disk_kernel", "elastic_transform", "fog", "frost", "gaussian_blur", "gaussian_noise", "glass_blur",
    "hsv2rgb", "impulse_noise", "jpeg_compression", "motion_blur", "motion_kernel", "pixelate", "plasma_fractal",
    "rgb2hsv", "saturate", "severity_params", "shot_noise", "snow", "snow_layers", "spatter", "speckle_noise",
    "zoom_blur",
]
