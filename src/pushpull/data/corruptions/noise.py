"""Noise corruptions (batched): Gaussian, shot (Poisson), impulse (salt-and-pepper) and speckle.

Each takes uint8 images (N, H, W, C) and one ``numpy.random.Generator`` per image, and draws that
image's noise from its own stream (so a batch gives the same pixels as one image at a time).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from . import _native
from ._common import normals, to_uint8, to_unit


def gaussian_noise(images: np.ndarray, sigma: float, rngs: Sequence[np.random.Generator]) -> np.ndarray:
    """x + N(0, sigma) on [0, 1] images, clipped, truncated to uint8."""
    noise = normals(rngs, images.shape[1:], sigma)
    lib = _native.kernels()
    if lib is not None:
        return _noise_u8(lib, images, noise, speckle=False)
    x = to_unit(images)
    x += noise
    return to_uint8(x, consume=True)


def _noise_u8(lib, images: np.ndarray, noise: np.ndarray, speckle: bool) -> np.ndarray:
    """The C pass of x + noise (or x + noise * x), clipped, to uint8: the numpy steps in one sweep."""
    images = np.ascontiguousarray(images)
    out = np.empty_like(images)
    lib.pp_noise_u8(_native.ptr(images), images.size, _native.ptr(noise), int(speckle), _native.ptr(out))
    return out


def shot_noise(images: np.ndarray, lam: float, rngs: Sequence[np.random.Generator]) -> np.ndarray:
    """Poisson(x * lam) / lam on [0, 1] images (photon noise; smaller lam is noisier)."""
    from .._sequence_native import library, shot_frames

    lib = library()
    if lib is not None:  # numpy's own Poisson algorithm in C, -P's one-frame case: the same draws and bytes
        return np.stack([shot_frames(lib, rng, image, 1, lam)[0] for image, rng in zip(images, rngs)])
    x = to_unit(images)
    counts = np.stack([rng.poisson(xi * lam) for xi, rng in zip(x, rngs)])
    return to_uint8(counts / lam, consume=True)


def impulse_noise(images: np.ndarray, amount: float, rngs: Sequence[np.random.Generator]) -> np.ndarray:
    """Salt-and-pepper on each channel value: flipped with probability ``amount``, half to 1 and half to 0.

    As scikit-image's ``random_noise(mode='s&p')``: one uniform draw decides "flipped", a second
    "salt" (p = 0.5), per element.
    """
    flips = np.empty(images.shape)
    salts = np.empty(images.shape)
    for flip, salt, rng in zip(flips, salts, rngs):  # per stream: first the "flipped" draws, then the "salted" ones
        rng.random(out=flip)
        rng.random(out=salt)
    lib = _native.kernels()
    if lib is not None:
        images = np.ascontiguousarray(images)
        out = np.empty_like(images)
        lib.pp_impulse(_native.ptr(images), images.size, _native.ptr(flips), _native.ptr(salts), float(amount),
                       _native.ptr(out))
        return out
    flipped = flips <= amount
    salted = salts <= 0.5
    x = to_unit(images)
    x[flipped & salted] = 1
    x[flipped & ~salted] = 0
    return to_uint8(x, consume=True)


def speckle_noise(images: np.ndarray, sigma: float, rngs: Sequence[np.random.Generator]) -> np.ndarray:
    """x + x * N(0, sigma): multiplicative noise, stronger on bright pixels."""
    noise = normals(rngs, images.shape[1:], sigma)
    lib = _native.kernels()
    if lib is not None:
        return _noise_u8(lib, images, noise, speckle=True)
    x = to_unit(images)
    noise *= x
    noise += x  # x + x * noise, the same sum
    return to_uint8(noise, consume=True)
