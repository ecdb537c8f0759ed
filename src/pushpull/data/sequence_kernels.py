"""Whole-sequence kernels for the -P generator: work shared between the frames of a sequence.

Each function computes, for all frames at once, exactly what the per-frame operation computes
(same floating-point operations in the same order, or the same fixed-point arithmetic), so the
frames are bit-identical to the per-frame reference (``tests/test_perturbations.py`` holds them to it).

- ``motion_blur_sweep``: ImageMagick's motion blur at many angles. A frame's sum over taps
  i = 0..w-1 of ``k_i * shift(x, o_i(angle))`` is accumulated in tap order as the reference does:
  in C one output row at a time; in numpy ``k_i * x`` is computed once per tap for all frames, and
  frames whose first taps have the same offsets share those partial sums.
- ``warp_frames``: OpenCV 4's fixed-point ``warpPerspective`` (its 1/32-px map and ``remap``'s integer
  bilinear weights) in one C pass, computed only for the output window that is kept.
- ``shifted_frames``: translate's whole-pixel shifts as array copies (PIL's nearest-neighbour affine
  samples exactly the shifted pixel there).
- ``normal_noise_frames``, ``snow_frames``, ``gaussian_blur_frames``, ``water_frames``: the per-frame
  arithmetic of the numpy path in the C kernels of ``_sequence_native`` (same operations, same order).

Where the kernels cannot be built (no C compiler) or fail their checks, the numpy code runs instead.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from ._sequence_native import library, standard_normals
from .corruptions.blur import motion_kernel, motion_offsets, quantum_to_char

_CHUNK_BYTES = 64 << 20  # float64 partial sums held at once (all frames of a chunk of images)


def motion_blur_sweep(images: np.ndarray, radius: float, sigma: float, angles: Sequence[float]) -> np.ndarray:
    """``corruptions.blur.motion_blur`` of every image at every angle: uint8 (N, T, H, W, C)."""
    lib = library()
    if lib is not None:
        return _native_sweep(lib, images, radius, sigma, angles)
    n, h, w, c = images.shape
    per_image = len(angles) * h * w * c * 8
    step = max(1, _CHUNK_BYTES // max(per_image, 1))
    out = np.empty((n, len(angles), h, w, c), np.uint8)
    for start in range(0, n, step):
        out[start:start + step] = _sweep(images[start:start + step], radius, sigma, angles)
    return out


def _native_sweep(lib, images: np.ndarray, radius: float, sigma: float, angles: Sequence[float]) -> np.ndarray:
    """The same sums in C, one image and one output row at a time; frames whose first taps agree share those."""
    n, h, w, c = images.shape
    kernel = motion_kernel(radius, sigma)
    width = len(kernel)
    taps = np.array([motion_offsets(width, float(a)) for a in angles], dtype=np.int64)  # (T, 2, width)
    dy, dx = np.ascontiguousarray(taps[:, 0]), np.ascontiguousarray(taps[:, 1])
    order, start, keep = _shared_taps([list(zip(y, x)) for y, x in zip(dy.tolist(), dx.tolist())])
    out = np.empty((n, len(angles), h, w, c), np.uint8)
    for image, frames in zip(images, out):
        padded = np.pad(image.astype(np.float64) * 257.0, ((width, width), (width, width), (0, 0)), mode="edge")
        if lib.pp_motion_sweep(padded, h, w, c, width, kernel, width, dy, dx, len(angles), order, start, keep, frames):
            raise MemoryError("pushpull: out of memory for the motion-blur kernel's tap table")
    return out


def _shared_taps(offsets: list[list[tuple[int, int]]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """How the frames of a sweep share their first taps' sums (``pp_motion_sweep``): the frames sorted by their
    tap offsets (``order``), how many first taps each shares with the one before it (``start``, 0 for the first),
    and ``keep[m, d]``, whether frame ``order[m]`` leaves its sum after d taps for a later frame to start from."""
    order = sorted(range(len(offsets)), key=offsets.__getitem__)
    start = [0]
    for prev, t in zip(order, order[1:]):
        start.append(next((i for i, (a, b) in enumerate(zip(offsets[prev], offsets[t])) if a != b),
                          len(offsets[t])))
    keep = np.zeros((len(offsets), len(offsets[0]) + 1), np.uint8)
    for m, d in enumerate(start):
        keep[:m, d] = 1  # the frames before; the last one through depth d is the one whose sum is left there
    return np.array(order, np.int64), np.array(start, np.int64), keep


def _sweep(images: np.ndarray, radius: float, sigma: float, angles: Sequence[float]) -> np.ndarray:
    n, h, w, c = images.shape
    kernel = motion_kernel(radius, sigma)
    width = len(kernel)
    taps = np.array([motion_offsets(width, float(a)) for a in angles], dtype=np.int64)  # (T, 2, width)
    pad = width  # every offset is below width in size
    padded = np.pad(images.astype(np.float64) * 257.0, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="edge")
    padded = padded.reshape(n, h + 2 * pad, -1)  # a row's pixels and channels as one run: a shift by dx is dx * c
    offsets = [[(int(taps[t, 0, i]), int(taps[t, 1, i]) * c) for i in range(width)] for t in range(len(angles))]
    # a node of the prefix tree: the frames whose taps 0..i-1 agree, and their common partial sum
    nodes: list[tuple[list[int], np.ndarray]] = [(list(range(len(angles))), np.zeros((n, h, w * c)))]
    weighted = np.empty_like(padded)
    for i in range(width):
        np.multiply(padded, kernel[i], out=weighted)
        children = []
        for frames, acc in nodes:
            by_offset: dict[tuple[int, int], list[int]] = {}
            for t in frames:
                by_offset.setdefault(offsets[t][i], []).append(t)
            for k, ((dy, dx), group) in enumerate(by_offset.items()):
                child = acc if k == len(by_offset) - 1 else acc.copy()
                child += weighted[:, pad + dy:pad + dy + h, pad * c + dx:(pad + w) * c + dx]
                children.append((group, child))
        nodes = children
    out = np.empty((n, len(angles), h, w, c), np.uint8)
    for frames, acc in nodes:
        frame = quantum_to_char(acc).reshape(n, h, w, c)
        for t in frames:
            out[:, t] = frame
    return out


def _clamping_needed(inverses: np.ndarray, window: tuple[int, int, int, int]) -> np.ndarray:
    """Per inverse matrix (T, 3, 3): whether some pixel of ``window`` needs OpenCV's clamping (w changes sign, or a
    source point leaves int16 pixels). x, y and w are affine in the pixel position, so their extremes over the
    window lie at its corners."""
    top, left, height, width = window
    corners = np.array([[left, top, 1], [left + width - 1, top, 1], [left, top + height - 1, 1],
                        [left + width - 1, top + height - 1, 1]], np.float64)
    rows = corners @ inverses.transpose(0, 2, 1)
    keeps_sign = (rows[..., 2] > 0).all(1) | (rows[..., 2] < 0).all(1)
    bounded = 64.0 * np.abs(rows[..., :2]).max((1, 2)) < 32767 * 32 * np.abs(rows[..., 2]).min(1)
    return ~(keeps_sign & bounded)


def perspective_map(inv: np.ndarray, window: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV 4's ``warpPerspective`` map for the inverse 3x3 matrix ``inv``, for output pixels rows
    ``top:top+height``, columns ``left:left+width`` of ``window = (top, left, height, width)``.

    Each pixel's source point is computed as OpenCV 4 did (double precision; x, y, w rows of the
    inverse matrix, ``32 / w``, clamped to int32, rounded to 1/32 px), then split into the integer
    part (int16 x, y) and the 5+5-bit fraction ``remap`` reads with ``INTER_LINEAR``.
    """
    top, left, height, width = window
    xs = np.arange(left, left + width, dtype=np.float64)[None, :]
    ys = np.arange(top, top + height, dtype=np.float64)[:, None]
    scale = inv[2, 0] * xs + inv[2, 1] * ys
    scale += inv[2, 2]
    np.divide(32.0, scale, out=scale, where=scale != 0)  # OpenCV's W ? 32 / W : 0 (0 left where W = 0)
    whole = np.empty((height, width, 2), np.int16)
    fixed = np.empty((2, height, width), np.int32)
    for k in (0, 1):
        p = inv[k, 0] * xs + inv[k, 1] * ys
        p += inv[k, 2]
        # p * (32 / w) in double, clamped to int32 and rounded half to even: OpenCV's saturate_cast<int>
        cv2.multiply(p, scale, dst=fixed[k], dtype=cv2.CV_32S)
        np.right_shift(fixed[k].clip(-32768 * 32, 32767 * 32), 5, out=whole[..., k], casting="unsafe")
    fraction = ((fixed[1] & 31) << 5 | (fixed[0] & 31)).astype(np.uint16)
    return whole, fraction


def warp_frames(images: np.ndarray, matrices: np.ndarray, window: tuple[int, int, int, int] | None = None
                ) -> np.ndarray:
    """OpenCV 4 ``warpPerspective(image, M, (W, H))`` (INTER_LINEAR, black border) of every image
    (N, H, W, C ≤ 4) by every matrix (T, 3, 3), keeping only ``window`` (top, left, height, width;
    default the whole image): uint8 (N, T, height, width, C).

    In C (source points and fixed-point interpolation in one pass, a row at a time) where no pixel needs
    OpenCV's clamping; otherwise the map (:func:`perspective_map`) through OpenCV's own ``remap``."""
    n, h, w, c = images.shape
    window = (0, 0, h, w) if window is None else tuple(int(v) for v in window)
    inverses = np.linalg.inv(np.asarray(matrices, np.float64))
    out = np.empty((n, len(inverses), window[2], window[3], c), np.uint8)
    images = [np.ascontiguousarray(image) for image in images]
    lib = library()
    for t, (inv, clamped) in enumerate(zip(inverses, _clamping_needed(inverses, window))):
        inv = np.ascontiguousarray(inv)
        if lib is not None and not clamped:
            for k, image in enumerate(images):
                if lib.pp_perspective_warp(image, h, w, c, inv, *window, out[k, t]) < 0:
                    raise MemoryError("pushpull: out of memory in the tilt kernel")
            continue
        whole, fraction = perspective_map(inv, window)
        for k, image in enumerate(images):
            cv2.remap(image, whole, fraction, cv2.INTER_LINEAR, dst=out[k, t], borderMode=cv2.BORDER_CONSTANT,
                      borderValue=0)
    return out


# --------------------------------------------------------------------------- per-frame arithmetic in C
# Each is the numpy path of perturbations.py (or the corruption it calls), its operations in its order.


def normal_noise_frames(lib, clean: np.ndarray, base: str, level: float, rng: np.random.Generator, count: int
                        ) -> np.ndarray:
    """``count`` Gaussian / speckle frames drawn a few frames at a time into one cache-sized buffer: the same normals
    in the same order as one call for all frames (``normal(scale=s)`` is ``0 + s * standard_normal``, in C)."""
    flat = np.ascontiguousarray(clean).ravel()
    out = np.empty((count, flat.size), np.uint8)
    step = max(1, (256 << 10) // (flat.size * 8))  # frames per draw
    if base == "gaussian":
        values, dtype, kernel = np.arange(256, dtype=np.uint8).astype(np.float32) / np.float32(255), np.float32, \
            lib.pp_gaussian_frames
        level = np.float32(level)
    else:
        values, dtype, kernel, level = np.arange(256, dtype=np.uint8) / 255.0, np.float64, lib.pp_speckle_frames, \
            float(level)
    x = values[flat]  # each pixel's value / 255, so the kernel's loop is a plain stream that vectorises
    z = np.empty(step * flat.size, dtype)
    for t in range(0, count, step):
        block = out[t:t + step]
        draws = z[:block.size]
        standard_normals(rng, draws)
        kernel(x, flat.size, len(block), level, draws, block)
    return out.reshape((count,) + clean.shape)


def snow_frames(lib, images: np.ndarray, moving: np.ndarray, blend: float) -> np.ndarray:
    """``blend_snow`` of every frame: its float32 whitening once per image, then each frame's sum in C."""
    import cv2

    n, h, w, _ = images.shape
    x = images.astype(np.float32) / 255.0
    gray = cv2.cvtColor(np.ascontiguousarray(x.reshape(n * h, w, 3)), cv2.COLOR_RGB2GRAY).reshape(n, h, w, 1)
    x = np.ascontiguousarray(blend * x + (1 - blend) * np.maximum(x, gray * 1.5 + 0.5))
    scratch = np.empty(2 * w)  # one row's flakes and its turned row's
    out = np.empty(moving.shape[:2] + (h, w, 3), np.uint8)
    for image, layers, frames in zip(x, moving, out):
        lib.pp_snow_frames(image, np.ascontiguousarray(layers), len(layers), h, w, scratch, frames)
    return out


def gaussian_weights(sigma: float, truncate: float) -> np.ndarray | None:
    """scipy's 1-D Gaussian weights (centre, then offsets 1..r) as its correlation applies them, read off
    the filtered unit impulse (exact: each output is one weight times 1); None if not symmetric."""
    from scipy.ndimage import gaussian_filter1d

    r = int(truncate * float(sigma) + 0.5)
    impulse = np.zeros(2 * r + 1)
    impulse[r] = 1.0
    taps = gaussian_filter1d(impulse, sigma, mode="constant", truncate=truncate)
    return taps[r:].copy() if np.array_equal(taps[r:], taps[r::-1]) else None


def gaussian_blur_frames(lib, x: np.ndarray, weights: Sequence[np.ndarray]) -> np.ndarray:
    """Each frame's two passes in C, scipy's sums in scipy's order."""
    n, h, w, c = x.shape
    out = np.empty((n, len(weights), h, w, c), np.uint8)
    for t, taps in enumerate(weights):
        for k, image in enumerate(x):
            if lib.pp_gaussian_blur(image, h, w, c, taps, len(taps) - 1, out[k, t]):
                raise MemoryError("pushpull: out of memory for the Gaussian-blur kernel's row buffer")
    return out


def water_frames(lib, x: np.ndarray, liquid: np.ndarray, intensity: np.float32, out: np.ndarray | None = None
                 ) -> np.ndarray:
    """``weather.water_drops``: its OpenCV mask per image, then its float32 shading and blend in C, into ``out``
    (N, H, W, 3) uint8, each image's frame C-contiguous (default: a new array)."""
    from .corruptions.weather import WATER_COLOUR, water_mask

    colour = WATER_COLOUR.astype(np.float32)
    out = np.empty(x.shape, np.uint8) if out is None else out
    for image, layer, frame in zip(x, (liquid * 255).astype(np.uint8), out):
        m = np.require(water_mask(layer), np.float32, ["C_CONTIGUOUS", "WRITEABLE", "OWNDATA"])  # scaled in place
        lib.pp_water_frame(np.ascontiguousarray(image), m, m.size, m.max(), intensity, colour, frame)
    return out


def hsv_factors(lib, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Brightness's per-image step: ``rgb2hsv(images / 255.0)``'s value and ``hsv2rgb``'s factors at value 1.

    hsv2rgb gives each channel v * (1, 1-s, 1-f*s or 1-(1-f)*s): with value 1 it returns those factors, which
    only h and s decide, so a frame is one product (the same one hsv2rgb computes). In C where ``lib`` is given.
    """
    from .corruptions.digital import hsv2rgb, rgb2hsv

    if lib is not None:
        value, factors = np.empty(images.shape[:-1]), np.empty(images.shape)
        lib.pp_hsv_factors(np.ascontiguousarray(images), value.size, value, factors)
        return value, factors
    hsv = rgb2hsv(images / 255.0)
    value = hsv[..., 2].copy()
    hsv[..., 2] = 1.0
    return value, hsv2rgb(hsv)


def brightness_frames(lib, value: np.ndarray, factors: np.ndarray, deltas: Sequence[float], out: np.ndarray
                      ) -> np.ndarray:
    """``uint8(clip(value + delta, 0, 1) * factors * 255)`` per frame into ``out`` (N, T, H, W, 3)."""
    deltas = np.asarray(deltas, np.float64)
    for v, f, frames in zip(value, factors, out):
        lib.pp_brightness_frames(np.ascontiguousarray(v), np.ascontiguousarray(f), v.size, deltas, len(deltas), frames)
    return out


def running_mean_frames(lib, zooms: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Zoom blur: frames 1.. of ``out`` from its frame 0 (the image) and ``zooms`` (N, T - 1, H, W, 3)."""
    total = np.empty(out[0, 0].size, np.float32)
    for moved, frames in zip(zooms, out):
        lib.pp_running_mean(np.ascontiguousarray(frames[0]), moved, total.size, len(moved), total, frames[1:])
    return out


def pil_bilinear_frames(lib, images: np.ndarray, matrices: Sequence[Sequence[float]],
                        window: tuple[int, int, int, int], out: np.ndarray) -> np.ndarray:
    """PIL's bilinear ``Image.transform(AFFINE)`` of every image by every matrix, the window's pixels only."""
    top, left, height, width = window
    table = np.array(matrices, np.float64)
    for image, frames in zip(images, out):
        h, w = image.shape[:2]
        if lib.pp_pil_affine_bilinear(np.ascontiguousarray(image), h, w, table, len(table), top, left, height, width,
                                      frames):
            raise MemoryError("pushpull: out of memory for the affine warp kernel's column table")
    return out


def whole_pixel_shift(matrix: Sequence[float]) -> tuple[int, int] | None:
    """(dx, dy) when the affine ``matrix`` (PIL's, output -> source) moves the image by whole pixels: PIL's
    nearest-neighbour sample of output (x, y) is then source (x - dx, y - dy), black outside. None otherwise."""
    a, b, c, d, e, f = matrix
    if (a, b, d, e) == (1.0, 0.0, 0.0, 1.0) and float(c).is_integer() and float(f).is_integer():
        return int(-c), int(-f)
    return None


def shifted_frames(images: np.ndarray, shifts: Sequence[tuple[int, int]], window: tuple[int, int, int, int],
                   out: np.ndarray) -> np.ndarray:
    """Every image moved by each (dx, dy) of whole pixels, black where nothing moves in, inside ``window``
    (top, left, height, width), into ``out`` (N, T, height, width, C)."""
    top, left, height, width = window
    h, w = images.shape[1:3]
    out[...] = 0
    for frame, (dx, dy) in zip(out.swapaxes(0, 1), shifts):
        y0, y1 = max(top, dy), min(top + height, h + dy)  # output rows (image coordinates) whose source exists
        x0, x1 = max(left, dx), min(left + width, w + dx)
        if y0 < y1 and x0 < x1:
            frame[:, y0 - top:y1 - top, x0 - left:x1 - left] = images[:, y0 - dy:y1 - dy, x0 - dx:x1 - dx]
    return out
