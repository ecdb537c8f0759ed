"""The corruptions' C loops (``_kernels.c``): built on first use, loaded with ctypes, optional.

Each kernel is bit-identical to the numpy code beside its caller (same float operations in the
same order; compiled without fused multiply-adds), and every caller keeps that numpy code as
its fallback: where no C compiler exists, the build fails, or ``PUSHPULL_NATIVE=0`` is set,
the corruptions run in numpy with the same bytes out, only slower. Built and cached by
:func:`pushpull._compiled.load_library`, like every C kernel of the project.
"""

from __future__ import annotations

import ctypes
import functools
import platform
import threading
from pathlib import Path

import numpy as np

from ..._compiled import load_library


SOURCE = Path(__file__).with_name("_kernels.c")
# -ffp-contract=off: a fused multiply-add rounds once where numpy rounds twice; no -ffast-math.
FLAGS = ("-O3", "-march=native", "-ffp-contract=off", "-fno-fast-math", "-std=gnu11", "-shared", "-fPIC",
         *(("-mprefer-vector-width=512",) if platform.machine().lower() in ("x86_64", "amd64") else ()))
_building = threading.Lock()  # the corruptions' worker threads build once between them


@functools.lru_cache(maxsize=1)
def _build() -> ctypes.CDLL | None:
    lib = load_library(SOURCE, FLAGS, "corruptions")
    if lib is None:
        return None
    i64, f64, p = ctypes.c_int64, ctypes.c_double, ctypes.c_void_p
    lib.pp_glass_copies.argtypes = [p, i64, i64, i64, i64, i64, p]
    lib.pp_glass_copies.restype = None
    lib.pp_hsv_edit.argtypes = [p, p, i64, i64, f64, f64]
    lib.pp_hsv_edit.restype = None
    lib.pp_motion_blur.argtypes = [p, i64, i64, i64, p, i64, p, p, p]
    lib.pp_motion_blur.restype = ctypes.c_int
    lib.pp_zoom_add.argtypes = [p, i64, i64, i64, i64, i64, i64, p, p, p, p, i64, p, p, p, p, p]
    lib.pp_zoom_add.restype = ctypes.c_int
    lib.pp_map_reflect.argtypes = [p, i64, i64, i64, p, p, p]
    lib.pp_map_reflect.restype = None
    lib.pp_correlate_symmetric.argtypes = [p, p, i64, i64, i64, p, i64, i64]
    lib.pp_correlate_symmetric.restype = ctypes.c_int
    lib.pp_plasma_level.argtypes = [p, i64, i64, f64, p, p, p]
    lib.pp_plasma_level.restype = None
    for name, args in _TAILS.items():
        kernel = getattr(lib, name)
        kernel.argtypes, kernel.restype = args, None
    return lib


_i, _d, _p = ctypes.c_int64, ctypes.c_double, ctypes.c_void_p
_TAILS = {  # the element-wise tails (no return value), as _kernels.c declares them
    "pp_to_u8": [_p, _i, _i, _p],
    "pp_noise_u8": [_p, _i, _p, _i, _p],
    "pp_impulse": [_p, _i, _p, _p, _d, _p],
    "pp_contrast": [_p, _i, _i, _i, _p, _d, _p],
    "pp_fog": [_p, _i, _i, _i, _p, _i, _d, _p],
    "pp_frost": [_p, _p, _i, _d, _d, _p],
    "pp_snow_blend": [_p, _p, _p, _i, _i, _i, _i, _d, _d, _p],
    "pp_snow_layer": [_p, _i, _i, _i, _i, _p, _p, _p, _p, _i, _p, _p, _p, _p, _d, _p],
    "pp_water": [_p, _p, _p, _i, _i, _d, _p, _p],
    "pp_mud": [_p, _p, _i, _p, _p],
}


def kernels() -> ctypes.CDLL | None:
    """The loaded kernels, or None (turned off, or not buildable here): the caller then runs its numpy code.

    The switch is the project's one: ``PUSHPULL_NATIVE=0`` or ``pushpull.layers.config.set_native(False)``.
    """
    from ...layers.config import native_enabled

    if not native_enabled():
        return None
    with _building:
        return _build()


def ptr(array: np.ndarray) -> int:
    """The data address of a C-contiguous array handed to a kernel."""
    if not array.flags.c_contiguous:
        raise ValueError("kernel arrays must be C-contiguous")
    return array.ctypes.data


def check(status: int, kernel: str) -> None:
    """A kernel that returns non-zero could not allocate its buffers."""
    if status != 0:
        raise MemoryError(f"pushpull: the {kernel} kernel could not allocate its buffers")
