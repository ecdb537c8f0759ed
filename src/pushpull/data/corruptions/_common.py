"""Conversions shared by every family, written to do the reference's float operations in the same order."""

from __future__ import annotations

import numpy as np

from . import _native


def to_unit(images: np.ndarray) -> np.ndarray:
    """uint8 -> float64 in [0, 1], as the reference's ``np.array(x) / 255.``."""
    return images / 255.0


def to_uint8(x: np.ndarray, consume: bool = False) -> np.ndarray:
    """[0, 1] floats -> uint8 by truncation, as the reference's ``np.uint8(np.clip(x, 0, 1) * 255)``.

    float64 and float32 run in one C pass where the kernels are built (the same steps in x's
    precision); otherwise ``consume=True`` lets numpy overwrite ``x``, a temporary of the caller's.
    """
    lib = _native.kernels()
    if lib is not None and x.dtype in (np.float64, np.float32):
        x = np.ascontiguousarray(x)
        out = np.empty(x.shape, np.uint8)
        lib.pp_to_u8(_native.ptr(x), x.size, int(x.dtype == np.float32), _native.ptr(out))
        return out
    y = np.clip(x, 0, 1, out=x if consume else None)
    y *= 255
    return y.astype(np.uint8)


def normals(rngs, size: tuple[int, ...], scale: float) -> np.ndarray:
    """``draw(rngs, "normal", size=size, scale=scale)``: numpy's ``0.0 + scale * z`` per value, its standard normals
    ``z`` made in C where that gives numpy's own (``_sequence_native.standard_normals``)."""
    from .._sequence_native import standard_normals

    out = np.empty((len(rngs),) + tuple(size))
    for z, rng in zip(out, rngs):
        standard_normals(rng, z)
    out *= scale
    out += 0.0  # loc: turns -0.0 into 0.0, as numpy's sum does
    return out


def draw(rngs, method: str, *args, **kwargs) -> np.ndarray:
    """Stack one draw per image from its own stream: ``rng.<method>(*args, **kwargs)`` (one stream: no copy)."""
    if len(rngs) == 1:
        return np.asarray(getattr(rngs[0], method)(*args, **kwargs))[None]
    return np.stack([getattr(rng, method)(*args, **kwargs) for rng in rngs])
