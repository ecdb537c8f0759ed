"""Generation split over processes (torchrun ranks, job-array shards) and put back together.

Which images a process makes: :func:`shard_items`, its contiguous slice of the selected
images (:class:`~pushpull.engine.distributed.Shard`). A per-image layout (ImageNet, a
folder) needs nothing more: every image is its own file. A CIFAR ``.npy`` is written as
chunk files ``<name>.npy.parts-<key>/<start>-<stop>.npy`` (rows of the final array) by
whichever process makes those rows, and assembled once every row is there: by the run's
first process after a barrier (one process, torchrun), or by ``--merge`` after a job array.
Every image has its own random stream, so a chunk's bytes do not depend on which process
made it: chunks of runs split differently (a run resumed with another process count) fit.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO, TypeVar

import numpy as np
from tqdm.auto import tqdm

from .._files import atomic_path, read_json, write_json
from ..engine.distributed import DistContext, GlobalCount, Shard, all_reduce, barrier
from .robustness_sets import check_npy

PLAN = "pushpull-shards.json"  # a job array's shard count, until --merge
Items = TypeVar("Items", bound=Sequence)


def shard_items(items: Items, shard: Shard) -> Items:
    """The items ``shard`` makes (e.g. its part of the selected image indices): the same in every process."""
    start, stop = shard.bounds(len(items))
    return items[start:stop]


def save_npy(path: Path, array: np.ndarray) -> None:
    """``np.save`` that never leaves a partial file behind."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array)


class NpyChunks:
    """A uint8 ``.npy`` of ``shape`` made of chunk files, each a run of rows, from any number of processes.

    ``key`` (the run's options) names the chunk folder, so chunks of other options are never mixed in.
    """

    def __init__(self, path: Path, shape: tuple[int, ...], key: dict) -> None:
        self.path, self.shape = Path(path), tuple(shape)
        digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
        self.folder = self.path.with_name(f"{self.path.name}.parts-{digest}")

    def _file(self, rows: slice) -> Path:
        return self.folder / f"{rows.start}-{rows.stop}.npy"

    def has(self, rows: slice) -> bool:
        return self._whole(self._file(rows), rows.stop - rows.start)

    def write(self, rows: slice, data: np.ndarray) -> None:
        save_npy(self._file(rows), data)

    def _whole(self, file: Path, count: int) -> bool:
        """Whether chunk ``file`` of ``count`` rows exists in full; a damaged one is removed (and said)."""
        if not file.is_file():
            return False
        try:
            check_npy(file, (count, *self.shape[1:]))
        except ValueError as err:
            tqdm.write(f"redoing a damaged chunk: {str(err).split('; ')[0]}", file=sys.stderr)
            file.unlink(missing_ok=True)
            return False
        return True

    def _chunks(self) -> list[tuple[int, int, Path]]:
        """(start, stop, file) of the whole chunk files."""
        found = []
        for file in self.folder.glob("[0-9]*-[0-9]*.npy") if self.folder.is_dir() else []:
            start, stop = (int(part) for part in file.stem.split("-"))
            if self._whole(file, stop - start):
                found.append((start, stop, file))
        return sorted(found)

    def _coverage(self) -> tuple[list[tuple[int, int, Path]], np.ndarray]:
        """The whole chunks, and a mask over the final array's rows: True where no chunk holds the row yet."""
        chunks = self._chunks()
        missing = np.ones(self.shape[0], bool)
        for start, stop, _ in chunks:
            missing[start:stop] = False
        return chunks, missing

    def discard(self) -> None:
        """Remove the chunk folder, if any (once the final file is whole)."""
        shutil.rmtree(self.folder, ignore_errors=True)

    def missing_rows(self) -> np.ndarray:
        return self._coverage()[1]

    def assemble(self) -> None:
        """Write the final file from the chunks (atomically), then remove them; every row must be there."""
        chunks, missing = self._coverage()
        if missing.any():
            raise RuntimeError(f"{self.folder}: rows from {int(np.argmax(missing))} of {self.path.name} are missing; "
                               "rerun to make them")
        row = int(np.prod(self.shape[1:]))
        with atomic_path(self.path) as tmp:
            array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=self.shape)  # header, holes
            start_of_data = array.offset
            del array
            with open(tmp, "r+b") as final:
                filled = 0  # chunks of runs split differently may overlap: they hold the same bytes
                for start, stop, file in chunks:
                    if stop > filled:
                        with open(file, "rb") as chunk:
                            skip = max(filled, start) - start
                            _copy_bytes(chunk, final, (stop - start - skip) * row,
                                       _data_offset(file) + skip * row, start_of_data + (start + skip) * row)
                        filled = stop
        self.discard()


def _data_offset(path: Path) -> int:
    """Where the array's bytes start in ``.npy`` file ``path`` (after its header)."""
    return np.load(path, mmap_mode="r").offset


def _copy_bytes(source: BinaryIO, target: BinaryIO, count: int, source_at: int, target_at: int) -> None:
    """Copy ``count`` bytes between open files, in the kernel where it can (no pass through Python's memory)."""
    block = 1 << 26
    while count > 0:
        try:
            done = os.copy_file_range(source.fileno(), target.fileno(), count, source_at, target_at)
        except (AttributeError, OSError):  # not Linux, or a filesystem pair that cannot
            source.seek(source_at)
            done = os.pwrite(target.fileno(), source.read(min(count, block)), target_at)
        if done <= 0:
            raise OSError(f"{source.name} ended {count} bytes early")
        count, source_at, target_at = count - done, source_at + done, target_at + done


def check_plan(out: Path, shard: Shard, write: bool) -> None:
    """Job-array tasks of one folder agree on N (so ``--merge`` can name a missing shard); recorded by ``write``."""
    path = out / PLAN
    if path.is_file():
        count = read_json(path, "shard plan ").get("count")
        if count != shard.count:
            raise ValueError(f"{out} is being made in {count} shards ({path}); this run says --shard {shard}: "
                             f"use K/{count}, or finish those and --merge first")
    elif write:
        write_json(path, {"count": shard.count})


def merge_chunks(out: Path, targets: dict[str, NpyChunks], images: int) -> None:
    """Assemble every target once all its rows exist; else one error naming the shards still to run.

    ``images``: the number of selected images (the rows of a -C file are severity blocks of them).
    """
    missing = {name: target.missing_rows().reshape(-1, images).any(0) for name, target in targets.items()}
    short = [name for name, mask in missing.items() if mask.any()]
    if short:
        lacking = np.logical_or.reduce([missing[name] for name in short])
        names = ", ".join(short[:3]) + (f" and {len(short) - 3} more" if len(short) > 3 else "")
        plan = out / PLAN
        count = read_json(plan, "shard plan ").get("count") if plan.is_file() else None
        if not isinstance(count, int) or count < 1:
            raise ValueError(f"cannot merge {out}: images from {int(np.argmax(lacking))} on are missing ({names}) "
                             "and no --shard task has started here; run the --shard K/N tasks first")
        shards = ", ".join(str(Shard(k, count)) for k in range(count)
                           if lacking[slice(*Shard(k, count).bounds(images))].any())
        raise ValueError(f"cannot merge {out}: missing the images of --shard {shards} ({names} incomplete); run "
                         f"--shard {shards} with the same options, then --merge again")
    for target in targets.values():
        target.assemble()
    (out / PLAN).unlink(missing_ok=True)


class TeamBar:
    """One progress bar, on rank 0, counting the work of every process of the run.

    ``todo`` and ``done``: this process's units still to make and already made (a resumed
    run starts from the global ``done``). Every process must open it at the same point.
    """

    def __init__(self, ctx: DistContext, todo: int, done: int, *, progress: bool, **tqdm_args) -> None:
        total_todo, total_done = (int(v) for v in all_reduce([todo, done], ctx))
        self.ctx, self.count = ctx, GlobalCount(ctx, total_done)
        self.bar = tqdm(total=total_todo + total_done, initial=total_done, disable=not (progress and ctx.is_main),
                        **tqdm_args)

    def update(self, n: int) -> None:
        self.bar.update(self.count.add(n) - self.bar.n)

    def __enter__(self) -> TeamBar:
        return self

    def __exit__(self, kind: type | None, *_) -> None:
        if kind is None:  # after an error the others may be gone: no waiting for them
            barrier(self.ctx)
            self.bar.update(self.bar.total - self.bar.n)
        self.bar.close()
