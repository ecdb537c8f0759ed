"""One image at its own size, one corruption: the per-image semantics a user chooses by name (``CORRUPTERS``).

Folders (``make-c --dataset folder``) and the torchvision transforms corrupt one image at a
time, of any size, keyed by a number (a file's path key, a sample's index or its content)
rather than a position in a batch. Each entry of ``CORRUPTERS`` is one such semantics: one per
parameter table of ``params.TABLES`` (the reference's numbers, at the image's own size), and
``imagecorruptions`` (that package's size rules, :func:`.any_size.corrupt_image`: COCO-C,
Cityscapes-C). Everything that takes ``params=`` offers them all.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..._names import check_name
from .params import TABLES, severity_params


@dataclass(frozen=True)
class Corrupter:
    """A per-image corruption: ``corrupt(image, name, severity, seed, key)`` -> the corrupted image.

    ``image`` is uint8 (H, W, 3) RGB at its own size; ``seed`` and ``key`` (a non-negative
    integer below 2**63) fix its randomness. ``problem(height, width, name, severity)`` says why
    an image of that size cannot be corrupted (None when it can), so callers can check a whole
    folder before any work starts.
    """

    corrupt: Callable[[np.ndarray, str, int, int, int], np.ndarray]
    problem: Callable[[int, int, str, int], str | None]


def _table_corrupt(table: str, image: np.ndarray, name: str, severity: int, seed: int, key: int) -> np.ndarray:
    from . import corrupt

    return corrupt(image, name, severity, seed=seed, indices=key, params=table, workers=1)


@functools.lru_cache(maxsize=None)
def frost_limit(table: str) -> tuple[int, int]:
    """The largest image (rows, cols) that every frost texture of ``table`` holds a crop of."""
    from .weather import FROST_FILES, frost_texture

    scale = TABLES[table]["frost"][0][2]
    shapes = [frost_texture(i, scale).shape[:2] for i in range(len(FROST_FILES))]
    return min(h for h, _ in shapes) - 1, min(w for _, w in shapes) - 1


def _table_problem(table: str, height: int, width: int, name: str, severity: int) -> str | None:
    if name == "pixelate":
        factor = severity_params(name, severity, table)
        if int(height * factor) < 1 or int(width * factor) < 1:
            return f"pixelate severity {severity} shrinks by {factor}: needs at least {int(np.ceil(1 / factor))} px a side"
    if name == "frost":
        rows, cols = frost_limit(table)
        if height > rows or width > cols:
            return (f"frost with the {table} table crops its textures: at most {rows}x{cols} (rows x cols); "
                    "drop frost, resize the images, or use the imagecorruptions rules (params='imagecorruptions'), "
                    "which scale the textures")
    return None


def table_corrupter(table: str) -> Corrupter:
    """The reference's algorithms with ``table``'s numbers, at the image's own size (``corrupt(params=table)``)."""
    return Corrupter(functools.partial(_table_corrupt, table), functools.partial(_table_problem, table))


def _imagecorruptions_corrupt(image: np.ndarray, name: str, severity: int, seed: int, key: int) -> np.ndarray:
    from .any_size import corrupt_image

    return corrupt_image(image, severity, name, seed=seed, index=key)


def _imagecorruptions_problem(height: int, width: int, name: str, severity: int) -> str | None:
    return "imagecorruptions' rules need at least 32x32" if min(height, width) < 32 else None


CORRUPTERS: dict[str, Corrupter] = {
    **{table: table_corrupter(table) for table in TABLES},
    "imagecorruptions": Corrupter(_imagecorruptions_corrupt, _imagecorruptions_problem),
}


def get_corrupter(params: str) -> Corrupter:
    """``CORRUPTERS[params]``, or ``ValueError`` with close matches."""
    return CORRUPTERS[check_name(params, CORRUPTERS, "parameter table")]


def checked_corrupt(corrupter: Corrupter, image: np.ndarray, name: str, severity: int, seed: int,
                    key: int) -> np.ndarray:
    """``corrupter.corrupt`` after its size check (``ValueError`` saying what the image lacks)."""
    why = corrupter.problem(image.shape[0], image.shape[1], name, severity)
    if why:
        raise ValueError(f"a {image.shape[0]}x{image.shape[1]} image: {why}")
    return corrupter.corrupt(image, name, severity, seed, key)
