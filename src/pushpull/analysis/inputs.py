"""The images an analysis looks at: one image (a file or a test-set index) and its corrupted versions.

The corrupted versions come from the -C generator with the image's own random stream, so a
test image looks exactly as it does in a CIFAR-10-C set generated with the same seed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from .._names import check_name

SHORT_NOISES = ("gaussian", "shot", "impulse", "speckle")
"""Noise corruptions also known by their first word (``gaussian`` is ``gaussian_noise``)."""


def corruption_table(image_size: Sequence[int]) -> Literal["cifar", "imagenet"]:
    """The -C parameter table for images of ``(height, width)``: CIFAR-10-C's up to 64 px, else ImageNet-C's.

    Each table is tuned to one image size (32 and 224 px): a severity means the same harm only there.
    """
    return "cifar" if max(image_size[:2]) <= 64 else "imagenet"


def noise_corruption(noise: str) -> str:
    """The corruption ``noise`` names: a corruption name, or a noise by its first word; else a ValueError."""
    from ..data.corruptions import CORRUPTIONS

    if noise in SHORT_NOISES:
        return f"{noise}_noise"
    return check_name(noise, SHORT_NOISES + CORRUPTIONS, "noise")


def noisy_versions(images: np.ndarray, corruption: str, severities: Sequence[int], *, seed: int = 0,
                   indices: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
    """uint8 (N, 1 + S, H, W, 3): each of the uint8 ``images`` (N, H, W, 3), then it corrupted at each severity.

    ``indices``: the images' indices in their dataset (default 0..N-1), which with ``seed`` fix
    their random streams; the parameter table follows the image size (:func:`corruption_table`).
    """
    from ..data.corruptions import corrupt

    images = np.asarray(images)
    indices = np.arange(len(images)) if indices is None else np.asarray(indices)
    params = corruption_table(images.shape[1:3])
    noisy = [corrupt(images, corruption, s, seed=seed, indices=indices, params=params) for s in severities]
    return np.stack([images, *noisy], axis=1)


def is_test_index(spec: str) -> bool:
    """Whether an image ``spec`` is a test-set index: digits that are not the name of a file."""
    return spec.isdigit() and not Path(spec).exists()


def image_from_spec(spec: str, test_set: Callable[[], tuple[np.ndarray, np.ndarray]] | None = None,
               dataset: str = "test set") -> tuple[np.ndarray, str, int]:
    """(uint8 (H, W, 3), a description, its index for the random streams) of the image ``spec`` names.

    A test-set index (:func:`is_test_index`) picks an image of ``test_set()`` (images, labels),
    called only then; anything else is an image file, read with PIL (index 0).
    """
    if is_test_index(spec):
        if test_set is None:
            raise ValueError(f"{spec} is a test-set index, and no test set was given")
        images, labels = test_set()
        index = int(spec)
        if index >= len(images):
            raise ValueError(f"{index} out of range: the {dataset} has {len(images)} images")
        return images[index], f"{dataset} #{index} (label {int(labels[index])})", index
    from ..data.robustness_sets import read_image as decode

    return np.asarray(decode(spec)), Path(spec).name, 0
