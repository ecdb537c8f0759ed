"""The -P generator's native kernels (``_sequence_noise.c``, ``_sequence_warps.c``, ``_sequence_draws.c``), and the
numpy-exact draws built on them.

Compiled on first use with the system's C compiler into the project's kernel cache
(:func:`pushpull._compiled.load_library`, like every C kernel of the project) and loaded with
:mod:`ctypes`. The flags keep IEEE arithmetic as numpy's own C code does it (``-ffp-contract=off``,
no fast-math, no ``-march``), so every kernel gives the numpy code's bits (``-fno-trapping-math``
only lets clipping loops vectorise: the same values; only the floating-point exception flags, which
nothing reads, may differ). The Poisson kernel re-implements numpy's algorithm, so it is also
checked against ``Generator.poisson`` when the library is loaded: where that check fails (another
libm, a numpy with another algorithm) or no compiler exists, :func:`library` is None and the
callers keep their numpy path. ``PUSHPULL_NATIVE=0`` turns it off like the layer's kernels.
"""

from __future__ import annotations

import ctypes
import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .._compiled import load_library

log = logging.getLogger(__name__)

SOURCES = tuple(Path(__file__).with_name(f) for f in ("_sequence_noise.c", "_sequence_warps.c", "_sequence_draws.c",
                                                     "_sequences.h"))
FLAGS = ["-O3", "-ffp-contract=off", "-fno-fast-math", "-fno-trapping-math", "-std=gnu11", "-shared", "-fPIC"]

_u8, _f64, _f32, _i64 = (np.ctypeslib.ndpointer(t, flags="C_CONTIGUOUS") for t in
                         (np.uint8, np.float64, np.float32, np.int64))
_u32, _u64 = (np.ctypeslib.ndpointer(t, flags="C_CONTIGUOUS") for t in (np.uint32, np.uint64))
_I64, _P64, _F, _D = ctypes.c_int64, ctypes.POINTER(ctypes.c_int64), ctypes.c_float, ctypes.c_double
_SIGNATURES = {  # kernel: (return type, argument types), as the C sources declare them
    "pp_init": (None, []),
    "pp_poisson": (_I64, [_f64, _I64, _I64, _f64, _I64, _P64, _i64]),
    "pp_shot_thresholds": (None, [_f64, _i64, _i64, _i64, _f32]),
    "pp_shot_frames": (_I64, [_u8, _I64, _f64, _D, _i64, _i64, _i64, _f32, _I64, _I64, _f64, _I64, _P64, _u8]),
    "pp_shot_frames_drawn": (_I64, [ctypes.c_void_p, _f64, _I64, _u8, _I64, _f64, _D, _i64, _i64, _i64, _f32, _I64,
                                    _u8]),
    "pp_gaussian_frames": (None, [_f32, _I64, _I64, _F, _f32, _u8]),
    "pp_speckle_frames": (None, [_f64, _I64, _I64, _D, _f64, _u8]),
    "pp_hsv_factors": (None, [_u8, _I64, _f64, _f64]),
    "pp_brightness_frames": (None, [_f64, _f64, _I64, _f64, _I64, _u8]),
    "pp_motion_sweep": (ctypes.c_int, [_f64, _I64, _I64, _I64, _I64, _f64, _I64, _i64, _i64, _I64, _i64, _i64, _u8,
                                        _u8]),
    "pp_pil_affine_bilinear": (ctypes.c_int, [_u8, _I64, _I64, _f64, _I64, _I64, _I64, _I64, _I64, _u8]),
    "pp_snow_frames": (None, [_f32, _u8, _I64, _I64, _I64, _f64, _u8]),
    "pp_convolve_columns": (None, [_f64, _I64, _I64, _f64, _I64, _f64]),
    "pp_gaussian_blur": (ctypes.c_int, [_f64, _I64, _I64, _I64, _f64, _I64, _u8]),
    "pp_perspective_warp": (_I64, [_u8, _I64, _I64, _I64, _f64, _I64, _I64, _I64, _I64, _u8]),
    "pp_water_frame": (None, [_f32, _f32, _I64, _F, _F, _f32, _u8]),
    "pp_running_mean": (None, [_u8, _u8, _I64, _I64, _f32, _u8]),
    "pp_pcg64_doubles": (None, [ctypes.c_void_p, _I64, _f64]),
    "pp_pcg64_normals": (None, [ctypes.c_void_p, ctypes.c_void_p, _u64, _f64, _I64, _f64]),
    "pp_pcg64_normals_f": (None, [ctypes.c_void_p, ctypes.c_void_p, _u32, _f32, _I64, _f32]),
}
_BLOCK = 1 << 15  # uniforms drawn per block (256 kB)
Fill = Callable[[np.random.Generator, np.ndarray], None]  # fills its array with the stream's next_double values


def enabled() -> bool:
    """``PUSHPULL_NATIVE`` (and :class:`pushpull.layers.config.set_native`): the project's one switch for its C code."""
    from ..layers.config import native_enabled

    return native_enabled()


def library() -> ctypes.CDLL | None:
    """The kernels when they are turned on, built and proven exact here; None otherwise."""
    return _load() if enabled() else None


@functools.lru_cache(maxsize=1)
def _load() -> ctypes.CDLL | None:
    lib = load_library(SOURCES, FLAGS, "sequences")
    if lib is None:
        return None
    for name, (restype, argtypes) in _SIGNATURES.items():
        kernel = getattr(lib, name)
        kernel.restype, kernel.argtypes = restype, argtypes
    lib.pp_init()
    if not _poisson_is_numpys(lib):
        log.warning("pushpull: the native Poisson draws differ from numpy's here; the -P generator uses numpy")
        return None
    return lib


@functools.lru_cache(maxsize=1)
def _pil_affine_is_pils() -> bool:
    """The bilinear warp against the installed Pillow's own, on a small image: rotations, shears, zooms."""
    from PIL import Image

    from .perturbations import affine_matrix

    image = np.random.default_rng(3).integers(0, 256, (23, 31, 3), dtype=np.uint8)
    frames = [{"angle": 7.0}, {"angle": -13.0, "scale": 1.3}, {"shear": (9.0, 0.0)}, {"scale": 0.55}]
    matrices = np.array([affine_matrix((31, 23), **kw) for kw in frames])
    ours = np.empty((len(frames), 23, 31, 3), np.uint8)
    _load().pp_pil_affine_bilinear(image, 23, 31, matrices, len(frames), 0, 0, 23, 31, ours)
    pil = Image.fromarray(image)
    same = all(np.array_equal(ours[k], np.asarray(pil.transform((31, 23), Image.Transform.AFFINE, list(m),
                                                                Image.Resampling.BILINEAR, fillcolor=(0, 0, 0))))
               for k, m in enumerate(matrices))
    if not same:
        log.warning("pushpull: the native bilinear warp differs from this Pillow's; the -P generator uses PIL's")
    return same


def pil_affine_library() -> ctypes.CDLL | None:
    """:func:`library` where its bilinear affine warp also equals this Pillow's (checked once)."""
    lib = library()
    if lib is None or not _pil_affine_is_pils():
        return None
    return lib


def _poisson_is_numpys(lib: ctypes.CDLL) -> bool:
    """Both algorithms, their boundaries and the rare rejection branch (log-gamma), against numpy."""
    rng = np.random.default_rng(20261202)
    lam = np.concatenate([[0.0, 1e-300, 9.999999999999998, 10.0, 10.000000000000002], rng.uniform(0, 12, 3000),
                          rng.uniform(10, 400, 3000), np.exp(rng.uniform(0, np.log(1e4), 2000))])
    expected = np.random.default_rng(5).poisson(lam)
    return np.array_equal(poisson(np.random.default_rng(5), lam, lib, fill=_numpy_uniforms), expected)


def _numpy_uniforms(rng: np.random.Generator, out: np.ndarray) -> None:
    rng.random(out=out)


def _sequential(rng: np.random.Generator, n: int, expected_uniforms: float, kernel, fill: Fill | None = None,
                drawn: Callable[[int, np.ndarray], int] | None = None) -> None:
    """Run ``kernel(start, u, used) -> done`` over n elements on uniforms drawn in blocks from ``rng``,
    then leave ``rng`` exactly where drawing them one by one (``next_double``) would have.

    ``Generator.random`` fills a block with the same ``next_double`` sequence; PCG64 takes one 64-bit
    step per double, so the state after ``m`` of them is the saved state advanced by m (the 32-bit
    half kept for ``next_uint32``, which ``advance`` clears, is put back). Blocks stay small enough
    for the cache; the uniforms of an unfinished variate move to the front of the next block.
    ``drawn(state_address, block) -> consumed`` (or -1), where given, runs the whole loop in C on the C
    draws (no return to Python per block) whenever those serve ``rng`` and no ``fill`` is asked for.
    """
    bitgen = rng.bit_generator
    saved = bitgen.state
    size = int(min(expected_uniforms * 1.02 + 64, _BLOCK))
    block = np.empty(size)
    consumed = -1
    if drawn is not None and fill is None and _draws_for(rng) is not None:
        with bitgen.lock:
            consumed = drawn(bitgen.ctypes.state_address, block)
    if consumed < 0:  # no C loop, or it gave up on a variate longer than a block: the blocks from the start
        bitgen.state = saved
        consumed = _block_loop(rng, n, block, kernel, fill or uniforms)
    bitgen.state = saved  # then forward by the uniforms consumed (the loops drew whole blocks)
    bitgen.advance(consumed)
    state = bitgen.state
    state["has_uint32"], state["uinteger"] = saved["has_uint32"], saved["uinteger"]
    bitgen.state = state


def _block_loop(rng: np.random.Generator, n: int, block: np.ndarray, kernel, fill: Fill) -> int:
    """:func:`_sequential`'s blocks, a call to ``kernel`` each; the uniforms consumed."""
    used, consumed, done, tail = ctypes.c_int64(), 0, 0, 0
    while done < n:
        fill(rng, block[tail:])
        done = kernel(done, block, used)
        consumed += used.value
        tail = len(block) - used.value
        if used.value == 0:  # one variate needs more uniforms than a block holds
            block = np.concatenate([block, np.empty(len(block))])
        else:
            block[:tail] = block[used.value:]
    return consumed


def exact_for(rng: np.random.Generator) -> bool:
    """Whether the bulk-drawn kernels reproduce ``rng``'s draws: PCG64, whose ``advance`` counts doubles."""
    return type(rng.bit_generator) is np.random.PCG64


# --------------------------------------------------------------------------- PCG64 draws in C

_PCG64_MULTIPLIER = (2549297995355413924 << 64) + 4865540595714422341
_PCG64_INVERSE = pow(_PCG64_MULTIPLIER, -1, 1 << 128)


class _Ziggurat(NamedTuple):
    """One precision of numpy's normal ziggurat: each layer's one-step bound and width, numpy's own sampler."""
    ki: np.ndarray
    wi: np.ndarray
    numpy_sampler: int  # the address of numpy's random_standard_normal(_f)


def _one_draw(generator: np.random.Generator, output: int, dtype: type) -> tuple[float, bool]:
    """``standard_normal(dtype)`` when PCG64's next output is ``output``, and whether it took that one output only.

    A state whose high half is 0 outputs its low half (XSL-RR rotates by the top 6 bits), so the state before
    is ``(output - inc) / multiplier`` modulo 2^128."""
    bitgen, inc = generator.bit_generator, 1
    before = (output - inc) * _PCG64_INVERSE % (1 << 128)
    bitgen.state = {"bit_generator": "PCG64", "state": {"state": before, "inc": inc}, "has_uint32": 0, "uinteger": 0}
    value = generator.standard_normal(dtype=dtype)
    after = bitgen.state
    return value, after["state"]["state"] == output and after["has_uint32"] == int(dtype is np.float32)


def _ziggurat(dtype: type, sampler: int) -> _Ziggurat:
    """numpy's ki and wi for ``dtype``, read off its own draws: the bits ``idx | sign << 8 | rabs << 9`` give
    ``rabs * wi[idx]`` in one output exactly when ``rabs < ki[idx]`` (a bisection per layer; rabs = 1 gives wi)."""
    bits, kind = (52, np.uint64) if dtype is np.float64 else (23, np.uint32)
    generator = np.random.Generator(np.random.PCG64(0))
    ki, wi = np.empty(256, kind), np.empty(256, dtype)
    for idx in range(256):
        wi[idx] = _one_draw(generator, idx | 1 << 9, dtype)[0]
        lo, hi = 0, 1 << bits  # the smallest rabs not taken in one step lies in [lo, hi]; 2^bits: none
        while lo < hi:
            mid = (lo + hi) // 2
            lo, hi = (mid + 1, hi) if _one_draw(generator, idx | mid << 9, dtype)[1] else (lo, mid)
        ki[idx] = lo
    return _Ziggurat(ki, wi, sampler)


def _numpy_samplers() -> tuple[int, int] | None:
    """The addresses of numpy's exported random_standard_normal and random_standard_normal_f, if it exports them."""
    import numpy.random._generator as generator_module

    try:
        module = ctypes.CDLL(generator_module.__file__)
        return tuple(ctypes.cast(getattr(module, name), ctypes.c_void_p).value
                     for name in ("random_standard_normal", "random_standard_normal_f"))
    except (OSError, AttributeError):
        return None


@functools.lru_cache(maxsize=1)
def _draws() -> tuple[ctypes.CDLL, dict[type, _Ziggurat]] | None:
    """The C draws and numpy's tables, where the kernels are built and give numpy's draws here; None otherwise."""
    lib, samplers = _load(), _numpy_samplers()
    if lib is None or samplers is None:
        return None
    tables = {dtype: _ziggurat(dtype, sampler) for dtype, sampler in zip((np.float64, np.float32), samplers)}
    if not _draws_are_numpys(lib, tables):
        log.warning("pushpull: the native PCG64 draws differ from numpy's here; the noise draws use numpy's")
        return None
    return lib, tables


def _fill(rng: np.random.Generator, out: np.ndarray, lib: ctypes.CDLL, tables: dict[type, _Ziggurat] | None
          ) -> None:
    """``out`` filled in C from ``rng``'s own state: uniforms if ``tables`` is None, normals otherwise."""
    bitgen = rng.bit_generator
    with bitgen.lock:
        if tables is None:
            lib.pp_pcg64_doubles(bitgen.ctypes.state_address, out.size, out)
            return
        zig = tables[out.dtype.type]
        kernel = lib.pp_pcg64_normals if out.dtype == np.float64 else lib.pp_pcg64_normals_f
        kernel(bitgen.ctypes.bit_generator, zig.numpy_sampler, zig.ki, zig.wi, out.size, out)


def _draws_are_numpys(lib: ctypes.CDLL, tables: dict[type, _Ziggurat]) -> bool:
    """Each kernel against numpy on 300 000 values (some 2 000 of them numpy's rare branches), from a fresh state
    and from one holding a spare 32-bit half: the same values and the same state after."""
    for seed, spare in ((11, False), (12, True)):
        for dtype, kernel_tables in ((np.float64, None), (np.float64, tables), (np.float32, tables)):
            ours, theirs = (np.random.Generator(np.random.PCG64(seed)) for _ in range(2))
            if spare:
                ours.integers(0, 2, dtype=np.uint32), theirs.integers(0, 2, dtype=np.uint32)
            out = np.empty(300_000, dtype)
            _fill(ours, out, lib, kernel_tables)
            expected = theirs.random(out.size) if kernel_tables is None else theirs.standard_normal(out.size, dtype)
            if not (np.array_equal(out, expected) and ours.bit_generator.state == theirs.bit_generator.state):
                return False
    return True


def _draws_for(rng: np.random.Generator) -> tuple[ctypes.CDLL, dict[type, _Ziggurat]] | None:
    """:func:`_draws` where they serve ``rng`` (a PCG64 stream, the C code turned on)."""
    return _draws() if exact_for(rng) and enabled() else None


def uniforms(rng: np.random.Generator, out: np.ndarray) -> None:
    """``rng.random(out=out)`` (float64, C-contiguous): in C for a PCG64 stream, the same values and state after."""
    draws = _draws_for(rng)
    if draws is None:
        rng.random(out=out)
    else:
        _fill(rng, out, draws[0], None)


def standard_normals(rng: np.random.Generator, out: np.ndarray) -> None:
    """``rng.standard_normal(dtype=out.dtype, out=out)`` (float64 or float32, C-contiguous): in C for a PCG64
    stream, the same values and state after."""
    draws = _draws_for(rng)
    if draws is None:
        rng.standard_normal(dtype=out.dtype.type, out=out)
    else:
        _fill(rng, out, *draws)


def _uniforms_per_variate(lam: np.ndarray) -> np.ndarray:
    """About how many uniforms a variate takes: lam + 1 (multiplication), ~2.3 (rejection), 0 at lam = 0."""
    return np.where(lam >= 10, 2.3, np.where(lam > 0, lam + 1, 0.0))


def poisson(rng: np.random.Generator, lam: np.ndarray, lib: ctypes.CDLL | None = None, fill: Fill | None = None
            ) -> np.ndarray:
    """``rng.poisson(lam)`` (int64, lam's shape) through the native kernel; the same draws and final state."""
    lib = lib or library()
    lam = np.ascontiguousarray(lam, np.float64).ravel()
    out = np.empty(lam.shape, np.int64)
    _sequential(rng, len(lam), float(_uniforms_per_variate(lam).sum()),
                lambda start, u, used: lib.pp_poisson(lam, start, len(lam), u, len(u), ctypes.byref(used), out), fill)
    return out


@functools.lru_cache(maxsize=16)
def _shot_tables(level: float) -> tuple[np.ndarray, ...]:
    """Shot noise's 256 per-value rates at ``level`` and their PTRS thresholds (``pp_shot_thresholds``): for each
    rate from 10 on, the candidates k within lam +- (6 sqrt(lam) + 4), where PTRS's rejection tests fall."""
    lam = np.arange(256) / 255.0 * level  # x / 255.0 * level per pixel value, as the numpy path computes it
    reach = np.where(lam >= 10, 6 * np.sqrt(lam) + 4, 0.0)
    kmin = np.maximum(0, np.floor(lam - reach)).astype(np.int64)
    span = np.where(lam >= 10, np.ceil(lam + reach).astype(np.int64) + 1 - kmin, 0)
    offset = (np.cumsum(span) - span).astype(np.int64)
    thresholds = np.empty(int(span.sum()), np.float32)
    _load().pp_shot_thresholds(lam, kmin, span, offset, thresholds)
    for table in (lam, kmin, span, offset, thresholds):
        table.setflags(write=False)
    return lam, kmin, span, offset, thresholds


def shot_frames(lib: ctypes.CDLL, rng: np.random.Generator, clean: np.ndarray, frames: int, level: float
                ) -> np.ndarray:
    """``uint8(255 * clip(rng.poisson(broadcast(clean / 255 * level)) / level, 0, 1))`` for ``frames`` frames."""
    flat = np.ascontiguousarray(clean).ravel()
    lam, kmin, span, offset, thresholds = _shot_tables(float(level))
    n = frames * flat.size
    cost = float(np.bincount(flat, minlength=256) @ _uniforms_per_variate(lam)) * frames
    out = np.empty(n, np.uint8)
    _sequential(rng, n, cost, lambda start, u, used: lib.pp_shot_frames(
        flat, flat.size, lam, float(level), kmin, span, offset, thresholds, start, n, u, len(u), ctypes.byref(used),
        out), drawn=lambda state, block: lib.pp_shot_frames_drawn(
        state, block, len(block), flat, flat.size, lam, float(level), kmin, span, offset, thresholds, n, out))
    return out.reshape((frames,) + clean.shape)
