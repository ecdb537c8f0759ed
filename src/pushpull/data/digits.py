"""scikit-learn's 8x8 handwritten digits as small RGB images: real data that ships with a dependency.

Used by ``pushpull demo`` (offline, fast). The 1797 images (grey levels 0..16) are scaled
to 0..255, up-sampled bilinearly to ``size`` x ``size`` and repeated over 3 channels, so
CIFAR-sized models and the CIFAR corruption parameters apply unchanged.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .cifar import ImageArrayDataset, cifar_transform


def load_digits_images(size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """All digits as uint8 (1797, size, size, 3) and int64 labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    grey = torch.from_numpy(digits.images.astype(np.float32) * (255.0 / 16.0))[:, None]
    grey = F.interpolate(grey, size=(size, size), mode="bilinear", align_corners=False)
    images = grey.round().clamp(0, 255).to(torch.uint8).squeeze(1).numpy()
    return np.repeat(images[..., None], 3, axis=-1), digits.target.astype(np.int64)


def digits_split(size: int = 32, test_fraction: float = 0.25, seed: int = 0):
    """(train images, train labels, test images, test labels): a seeded split, stratified by class."""
    from sklearn.model_selection import train_test_split

    images, labels = load_digits_images(size)
    x_train, x_test, y_train, y_test = train_test_split(images, labels, test_size=test_fraction, random_state=seed,
                                                        stratify=labels)
    return x_train, y_train, x_test, y_test


def digits_normalization(train_images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of the training images, in [0, 1] units."""
    x = train_images.reshape(-1, train_images.shape[-1]).astype(np.float64) / 255.0
    return tuple(x.mean(0).tolist()), tuple(x.std(0).tolist())


def digits_datasets(recipe, size: int = 32, seed: int = 0) -> tuple[ImageArrayDataset, ImageArrayDataset, tuple]:
    """(augmented training set, plain test set, (mean, std)) of the digits split."""
    x_train, y_train, x_test, y_test = digits_split(size, seed=seed)
    mean, std = digits_normalization(x_train)
    return (ImageArrayDataset(x_train, y_train, cifar_transform(recipe, mean, std)),
            ImageArrayDataset(x_test, y_test, cifar_transform(None, mean, std)), (mean, std))
