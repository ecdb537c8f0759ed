"""The corruptions' C loops (``_kernels.c``, ``_pixels.c``): built on first use, loaded with ctypes, optional.

Each kernel is bit-identical to the numpy code beside its caller (same float operations in the
same order; compiled without fused multiply-adds), and every caller keeps that numpy code as
its fallback: where no C compiler exists, a build fails, or ``PUSHPULL_NATIVE=0`` is set,
the corruptions run in numpy with the same bytes out, only slower. Built and cached by
:func:`pushpull._compiled.load_library`, like every C kernel of the project.
"""

from __future__ import annotations

import ctypes
import functools
import platform
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from ..._compiled import load_library

# -ffp-contract=off: a fused multiply-add rounds once where numpy rounds twice; no -ffast-math.
FLAGS = ("-O3", "-march=native", "-ffp-contract=off", "-fno-fast-math", "-std=gnu11", "-shared", "-fPIC",
         *(("-mprefer-vector-width=512",) if platform.machine().lower() in ("x86_64", "amd64") else ()))
_building = threading.Lock()  # the corruptions' worker threads build once between them

_i, _d, _p, _int = ctypes.c_int64, ctypes.c_double, ctypes.c_void_p, ctypes.c_int
# library name -> (source, {kernel: (return type, argument types)}), as the sources declare them.
LIBRARIES = {
    "corruptions": (Path(__file__).with_name("_kernels.c"), {
        "pp_glass_copies": (None, [_p, _i, _i, _i, _i, _i, _p]),
        "pp_motion_blur": (_int, [_p, _i, _i, _i, _p, _i, _p, _p, _p]),
        "pp_zoom_add": (_int, [_p, _i, _i, _i, _i, _i, _i, _p, _p, _p, _p, _i, _p, _p, _p, _p, _p]),
        "pp_map_reflect": (None, [_p, _i, _i, _i, _p, _p, _p]),
        "pp_correlate_symmetric": (_int, [_p, _p, _i, _i, _i, _p, _i, _i]),
        "pp_plasma_level": (None, [_p, _i, _i, _d, _p, _p, _p]),
    }),
    "corruption_pixels": (Path(__file__).with_name("_pixels.c"), {
        "pp_hsv_edit": (None, [_p, _p, _i, _i, _d, _d]),
        "pp_snow_layer": (None, [_p, _i, _i, _i, _i, _p, _p, _p, _p, _i, _p, _p, _p, _p, _d, _p]),
        "pp_to_u8": (None, [_p, _i, _i, _p]),
        "pp_noise_u8": (None, [_p, _i, _p, _i, _p]),
        "pp_impulse": (None, [_p, _i, _p, _p, _d, _p]),
        "pp_contrast": (None, [_p, _i, _i, _i, _p, _d, _p]),
        "pp_fog": (None, [_p, _i, _i, _i, _p, _i, _d, _p]),
        "pp_frost": (None, [_p, _p, _i, _d, _d, _p]),
        "pp_snow_blend": (None, [_p, _p, _p, _i, _i, _i, _i, _d, _d, _p]),
        "pp_water": (None, [_p, _p, _p, _i, _i, _d, _p, _p]),
        "pp_mud": (None, [_p, _p, _i, _p, _p]),
    }),
}


@functools.lru_cache(maxsize=1)
def _build() -> SimpleNamespace | None:
    """Every library built and loaded, its kernels typed, as one namespace; None if any cannot be built."""
    kernels = {}
    for name, (source, signatures) in LIBRARIES.items():
        lib = load_library(source, FLAGS, name)
        if lib is None:
            return None
        for kernel, (restype, argtypes) in signatures.items():
            function = getattr(lib, kernel)
            function.restype, function.argtypes = restype, argtypes
            kernels[kernel] = function
    return SimpleNamespace(**kernels)


def kernels() -> SimpleNamespace | None:
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
