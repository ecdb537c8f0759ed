"""The corruptions' C loops (``_kernels.c``): built on first use, loaded with ctypes, optional.

Each kernel is bit-identical to the numpy code beside its caller (same float operations in the
same order; compiled without fused multiply-adds), and every caller keeps that numpy code as
its fallback: where no C compiler exists, the build fails, or ``PUSHPULL_NATIVE=0`` is set,
the corruptions run in numpy with the same bytes out, only slower. The library is cached
under ``$PUSHPULL_CACHE`` (default ``$XDG_CACHE_HOME/pushpull`` or ``~/.cache/pushpull``), keyed
by the source, compiler, flags and CPU.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..._files import atomic_path

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("_kernels.c")
# -ffp-contract=off: a fused multiply-add rounds once where numpy rounds twice; no -ffast-math.
FLAGS = ("-O3", "-march=native", "-ffp-contract=off", "-fno-fast-math", "-std=gnu11", "-shared", "-fPIC",
         *(("-mprefer-vector-width=512",) if platform.machine().lower() in ("x86_64", "amd64") else ()))
_enabled = os.environ.get("PUSHPULL_NATIVE", "1") != "0"
_building = threading.Lock()  # the corruptions' worker threads build once between them


def _cache_dir() -> Path:
    root = os.environ.get("PUSHPULL_CACHE")
    if root:
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pushpull"


def _cpu() -> str:
    try:
        lines = [ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith(("model name", "flags"))]
    except OSError:
        lines = []
    return "|".join([platform.machine(), *lines[:2]])


@functools.lru_cache(maxsize=1)
def _build() -> ctypes.CDLL | None:
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if sys.platform != "linux" or compiler is None:
        log.info("pushpull: no C compiler; the corruptions run in numpy (same output, slower)")
        return None
    key = hashlib.sha256(SOURCE.read_bytes() + "\n".join([compiler, *FLAGS, _cpu()]).encode()).hexdigest()[:16]
    target = _cache_dir() / f"pushpull_corruptions_{key}.so"
    try:
        if not target.exists():
            with atomic_path(target) as partial:
                subprocess.run([compiler, *FLAGS, str(SOURCE), "-o", str(partial), "-lm"], check=True,
                               capture_output=True, timeout=120)
        lib = ctypes.CDLL(str(target))
    except (OSError, subprocess.SubprocessError) as err:
        detail = (getattr(err, "stderr", b"") or b"").decode(errors="replace")[-300:]
        log.warning("pushpull: could not build the corruption kernels (%s %s); using numpy", err, detail)
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
    return lib


def kernels() -> ctypes.CDLL | None:
    """The loaded kernels, or None: the caller then runs its numpy code."""
    if not _enabled:
        return None
    with _building:
        return _build()


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """Within the block, every corruption runs its numpy code (the tests compare the two)."""
    global _enabled
    before, _enabled = _enabled, False
    try:
        yield
    finally:
        _enabled = before


def ptr(array: np.ndarray) -> int:
    """The data address of a C-contiguous array handed to a kernel."""
    if not array.flags.c_contiguous:
        raise ValueError("kernel arrays must be C-contiguous")
    return array.ctypes.data


def check(status: int, kernel: str) -> None:
    """A kernel that returns non-zero could not allocate its buffers."""
    if status != 0:
        raise MemoryError(f"pushpull: the {kernel} kernel could not allocate its buffers")
