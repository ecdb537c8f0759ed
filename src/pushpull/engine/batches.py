"""The evaluator's data thread: uint8 chunks from a source, normalised, a few batches ahead of the model.

A background thread prepares every batch (reads the -C/-P arrays from disk or generates
them, converts and normalises in numpy) while the main thread runs the model; its errors
re-raise on the main thread.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from ..data.sources import Chunk, ParamTable, Unit, UnitKind


class Source(Protocol):
    """What the loop needs of a source (:mod:`pushpull.data.sources`)."""

    params: ParamTable
    indices: np.ndarray

    def chunks(self, unit: Unit, size: int) -> Iterator[Chunk]: ...


@dataclass
class Batch:
    unit: Unit
    images: torch.Tensor  # normalised float (B, 3, H, W); B = sequences x frames for -P
    labels: np.ndarray | None  # (B,) for classification units
    frames: int  # 1, or T for -P


@dataclass
class UnitDone:
    """Follows a unit's batches (also when this process's slice of it is empty)."""

    unit: Unit


class Normalize:
    """uint8 (N, H, W, 3) → float (N, 3, H, W) in the model's normalisation.

    Done in numpy, which is single-threaded: on the data thread it does not fight the
    model's OpenMP threads the way torch ops would.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        std_a = np.asarray(std, dtype=np.float32).reshape(1, 3, 1, 1)
        self.scale = (1.0 / (255.0 * std_a)).astype(np.float32)
        self.shift = (-np.asarray(mean, dtype=np.float32).reshape(1, 3, 1, 1) / std_a).astype(np.float32)

    def __call__(self, images: np.ndarray) -> torch.Tensor:
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError(f"expected uint8 images (N, H, W, 3), got {images.dtype} {images.shape}")
        out = np.empty((images.shape[0], 3, *images.shape[1:3]), dtype=np.float32)
        out[...] = images.transpose(0, 3, 1, 2)
        out *= self.scale
        out += self.shift
        return torch.from_numpy(out)


def batches(units: Sequence[Unit], source: Source, normalize: Normalize, *, batch_size: int,
            pin_memory: bool) -> Callable[[], Iterator[Batch | UnitDone]]:
    """A producer of every unit's batches, about ``batch_size`` images per forward pass, -P frames included,
    each unit's closed by its :class:`UnitDone`."""
    from ..data.perturbations import num_frames

    def produce() -> Iterator[Batch]:
        for unit in units:
            size = batch_size if unit.kind is not UnitKind.PERTURBATION else \
                max(1, batch_size // num_frames(unit.name, source.params.value))
            for images, labels, frames in source.chunks(unit, size):
                x = normalize(images)
                yield Batch(unit, x.pin_memory() if pin_memory else x, labels, frames)
            yield UnitDone(unit)

    return produce


def prefetch(produce: Callable[[], Iterator[Any]], depth: int = 3) -> Iterator[Any]:
    """Run ``produce`` on a background thread, ``depth`` batches ahead; its errors re-raise here."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def put(item: object) -> bool:
        """Queue ``item`` unless the consumer has gone; False once it has."""
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def worker() -> None:
        try:
            for item in produce():
                if not put(item):
                    return
            put(done)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            put(exc)

    thread = threading.Thread(target=worker, name="pushpull-eval-data", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)

