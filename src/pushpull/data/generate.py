"""Write CIFAR-10/100-C/-P and ImageNet-C/-P in the official layouts, resumably, on any number of processes.

Every file appears atomically (written beside its final name, then ``os.replace``d), so
a file that exists is complete. A CIFAR ``.npy`` is made of chunk files (1000 images of
one severity each, :class:`~pushpull.data.shards.NpyChunks`), assembled when all are
there: an interrupted run, started again with the same options, redoes only the missing
chunks. ImageNet outputs are one file per image, skipped when present. Image i's
randomness depends on (seed, name, severity, its index in the clean set), so a ``--limit``
subset holds exactly the images a full run would, and a run split over processes
(``ctx``: a torchrun group; ``shard``: a job-array task, assembled by ``merge=True``)
writes the same bytes as one process. A folder's ``pushpull-benchmark.json`` records its
options and the random-stream rule (``pushpull.data.streams.STREAM_RULE``): a run with
other options, or into a folder made under another rule, is refused rather than mixed in.
"""

from __future__ import annotations

import functools
import itertools
import os
import sys
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .._files import BackgroundWrites, atomic_path, locked, read_json, write_json
from ..engine.distributed import DistContext, Shard, all_reduce, barrier, cores_per_process, process_shard
from .robustness_sets import (IMAGE_SUFFIXES, IMAGENET_C_JPEG, MANIFEST, SEVERITIES, DamagedFileError, check_npy,
                              encode_image, read_image)
from .shards import NpyChunks, TeamBar, check_plan, merge_chunks, save_npy, shard_items
from .streams import STREAM_RULE

CHUNK = 1000  # CIFAR images per resumable unit


def select_indices(total: int, limit: int | None) -> np.ndarray:
    """Indices of the images to process: all, or ``limit`` of them evenly strided over the set.

    Striding (index ⌊k·total/limit⌋) keeps every class in class-major test splits.
    """
    if limit is None or limit >= total:
        return np.arange(total)
    if limit < 1:
        raise ValueError(f"limit must be a positive number of images, got {limit}")
    return np.arange(limit) * total // limit


def _finished(path: Path, shape: tuple[int, ...], report: bool = True) -> bool:
    """Whether ``path`` is already complete; a damaged one is redone (said when ``report``), a different file is
    never overwritten."""
    if not path.exists():
        return False
    try:
        found = check_npy(path)
    except DamagedFileError as err:
        if report:
            tqdm.write(f"redoing a damaged file: {str(err).split('; ')[0]}", file=sys.stderr)
        return False
    if found != shape:
        raise ValueError(f"{path} exists with shape {found}, this run makes {shape}; use another --out folder")
    return True


def _parallel(fn: Callable, jobs: list[tuple[object, tuple]], workers: int | None) -> Iterator[tuple[object, object]]:
    """(key, fn(*args)) for each job (key, args), in completion order, on up to ``workers`` processes."""
    workers = (os.cpu_count() or 1) if workers is None else workers
    if workers <= 1 or len(jobs) <= 1:
        for key, args in jobs:
            yield key, fn(*args)
        return
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    queue = iter(jobs)
    with ProcessPoolExecutor(workers) as pool:
        running = {pool.submit(fn, *args): key for key, args in itertools.islice(queue, 2 * workers)}
        try:
            while running:
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    yield running.pop(future), future.result()
                    for key, args in itertools.islice(queue, 1):
                        running[pool.submit(fn, *args)] = key
        finally:
            pool.shutdown(cancel_futures=True)


def _chunks(start: int, stop: int) -> list[slice]:
    return [slice(a, min(a + CHUNK, stop)) for a in range(start, stop, CHUNK)]


def _old_file(path: Path) -> bool:
    """Not a file another process of this run is writing now (the manifest, or a hidden temporary file)."""
    return not path.name.startswith(".") and path.name != MANIFEST


def claim_manifest(out: Path, unrecorded_files_predate: bool = False, write: bool = True, **info) -> None:
    """Record how the folder was made (when ``write``: a run's first process); refuse to mix runs with different
    options or stream rules.

    ``unrecorded_files_predate``: files in a folder without a manifest come from before the
    manifest, hence before the stream rule (ImageNet folders made under rule 1).
    """
    path = out / MANIFEST
    # locked while writing: concurrent tasks of a job array, given different names, each add theirs
    with locked(out) if write else nullcontext():
        info["stream_rule"] = STREAM_RULE
        mixing = "resuming would mix images of two random-stream rules: delete the folder or use another --out"
        if not path.is_file():
            if unrecorded_files_predate and out.is_dir() and any(_old_file(p) for p in out.iterdir()):
                raise ValueError(f"{out} holds files but no {MANIFEST} (an official release, or made before "
                                 f"random-stream rule {STREAM_RULE}): {mixing}")
        else:
            old = read_json(path, "manifest ")
            if old.get("stream_rule", 1) != STREAM_RULE:
                raise ValueError(f"{path} says random-stream rule {old.get('stream_rule', 1)}, this pushpull uses rule "
                                 f"{STREAM_RULE} (stream ids from the names): {mixing}")
            clash = {k: (old.get(k), v) for k, v in info.items() if k != "names" and old.get(k) != v}
            if "n" in clash:
                clash.pop("indices", None)  # which images follows from how many: their digest says nothing more
            if clash:
                said = ", ".join(f"{k} {was} (now {now})" for k, (was, now) in clash.items())
                raise ValueError(f"{out} was generated with other options: {said}; use another --out folder")
            info["names"] = list(old.get("names", [])) + info["names"]
        info["names"] = sorted(set(info["names"]))  # the same bytes whichever process or shard writes first
        if write:
            write_json(path, info)


def _cifar_targets(out: Path, labels: np.ndarray, images: int, shapes: dict[str, tuple[int, ...]], key: dict,
                   shard: Shard, ctx: DistContext, merge: bool, manifest: dict) -> dict[str, NpyChunks]:
    """The files still to make, as chunks, after checking the folder's manifest; with ``merge``, assemble them.

    The first process records the manifest and the labels (after a merge: only if it succeeded).
    """
    claim_manifest(out, write=False, **manifest)
    if not shard.whole:
        check_plan(out, shard, write=ctx.is_main)
    targets = {}
    for name, shape in shapes.items():
        chunks = NpyChunks(out / f"{name}.npy", shape, key)
        if not _finished(out / f"{name}.npy", shape, report=ctx.is_main):
            targets[name] = chunks
        elif ctx.is_main:  # chunks left by a concurrent run of the same command: the file holds their rows
            chunks.discard()
    if merge:
        merge_chunks(out, targets, images)
    if ctx.is_main:
        claim_manifest(out, **manifest)
        save_npy(out / "labels.npy", labels)
    return targets


def _assemble(target: NpyChunks, shard: Shard, ctx: DistContext) -> None:
    """After this process's chunks of a file: a run that makes every shard assembles it once all are written."""
    if shard.whole:
        barrier(ctx)
        if ctx.is_main:
            target.assemble()


def _rows(slices: Sequence[slice]) -> int:
    return sum(rows.stop - rows.start for rows in slices)


def make_cifar_c(images: np.ndarray, labels: np.ndarray, out: str | Path, corruptions: Sequence[str], *,
                 severities: Sequence[int] = SEVERITIES, indices: np.ndarray | None = None, seed: int = 0,
                 workers: int | None = None, dataset: str = "cifar10", progress: bool = True, shard: Shard = Shard(),
                 ctx: DistContext = DistContext(), merge: bool = False) -> list[Path]:
    """CIFAR-C files ``<out>/<corruption>.npy`` (+ ``labels.npy``) for already selected images.

    ``indices`` are the images' positions in the clean test set (their random streams). Each
    process of ``ctx`` (a torchrun group) makes its part of job-array task ``shard``; the
    files of a job array are assembled by one more call with ``merge=True`` once all tasks are done.
    """
    out, n = Path(out), len(images)
    indices = np.arange(n) if indices is None else np.asarray(indices)
    shape = (len(severities) * n,) + images.shape[1:]
    key = {"seed": seed, "severities": list(severities), "indices": _digest(indices)}
    targets = _cifar_targets(out, np.tile(labels.astype(np.uint8), len(severities)), n,
                             {name: shape for name in corruptions}, key, shard, ctx, merge,
                             dict(benchmark=f"{dataset}-c", seed=seed, severities=list(severities), n=n,
                                  indices=_digest(indices), names=list(corruptions)))
    if merge:
        return [out / f"{name}.npy" for name in corruptions]
    workers = cores_per_process() if workers is None else workers
    mine = _chunks(*process_shard(ctx, shard).bounds(n))
    blocks = [(severity, rows, slice(b * n + rows.start, b * n + rows.stop))  # rows of the images, of the file
              for b, severity in enumerate(severities) for rows in mine]
    jobs = [(name, (images[rows], indices[rows], target, final, name, severity, seed))
            for name, target in targets.items() for severity, rows, final in blocks if not target.has(final)]
    count = sum(len(args[0]) for _, args in jobs)
    with TeamBar(ctx, count, len(targets) * len(severities) * _rows(mine) - count, progress=progress, desc="make-c",
                 unit="img") as bar:
        _write_chunks(targets, jobs, _corrupt_chunk, workers, bar, shard, ctx)
    return [out / f"{name}.npy" for name in corruptions]


def _corrupt_chunk(images: np.ndarray, indices: np.ndarray, target: NpyChunks, rows: slice, name: str, severity: int,
                   seed: int) -> int:
    """Make and write one chunk of a -C file (in a pool worker); its number of images."""
    from .corruptions import corrupt

    target.write(rows, corrupt(images, name, severity, seed=seed, indices=indices, workers=1))
    return rows.stop - rows.start


def _write_chunks(targets: dict[str, NpyChunks], jobs: list[tuple[str, tuple]], make: Callable[..., int],
                  workers: int, bar: TeamBar, shard: Shard, ctx: DistContext) -> None:
    """Run ``make(*args)`` for each job (target name, args) on a pool of ``workers`` processes; each writes a chunk
    of its target and returns its rows. A target is assembled once all its chunks are written, while the pool
    works on the next ones, in the order of ``targets`` in every process (a barrier each, when sharded)."""
    left = Counter(name for name, _ in jobs)
    unassembled = list(targets)
    for name, made in _parallel(make, jobs, workers):
        left[name] -= 1
        bar.update(made)
        bar.bar.set_postfix_str(name)
        while unassembled and not left[unassembled[0]]:
            _assemble(targets[unassembled.pop(0)], shard, ctx)
    for name in unassembled:
        _assemble(targets[name], shard, ctx)


def make_cifar_p(images: np.ndarray, labels: np.ndarray, out: str | Path, perturbations: Sequence[str], *,
                 indices: np.ndarray | None = None, seed: int = 0, workers: int | None = None,
                 dataset: str = "cifar10", progress: bool = True, shard: Shard = Shard(),
                 ctx: DistContext = DistContext(), merge: bool = False) -> list[Path]:
    """CIFAR-P files ``<out>/<perturbation>.npy`` (N, T, 32, 32, 3) (+ ``labels.npy``); processes as ``make_cifar_c``."""
    from .perturbations import num_frames

    out, n = Path(out), len(images)
    indices = np.arange(n) if indices is None else np.asarray(indices)
    key = {"seed": seed, "indices": _digest(indices)}
    targets = _cifar_targets(out, labels.astype(np.uint8), n,
                             {p: (n, num_frames(p)) + images.shape[1:] for p in perturbations}, key, shard, ctx, merge,
                             dict(benchmark=f"{dataset}-p", seed=seed, n=n, indices=_digest(indices),
                                  names=list(perturbations)))
    if merge:
        return [out / f"{p}.npy" for p in perturbations]
    workers = cores_per_process() if workers is None else workers
    mine = _chunks(*process_shard(ctx, shard).bounds(n))
    jobs = [(name, (images[rows], indices[rows], target, rows, name, seed))
            for name, target in targets.items() for rows in mine if not target.has(rows)]
    count = sum(len(args[0]) for _, args in jobs)
    with TeamBar(ctx, count, len(targets) * _rows(mine) - count, progress=progress, desc="make-p", unit="seq") as bar:
        _write_chunks(targets, jobs, _perturb_chunk, workers, bar, shard, ctx)
    return [out / f"{p}.npy" for p in perturbations]


def _perturb_chunk(images: np.ndarray, indices: np.ndarray, target: NpyChunks, rows: slice, name: str,
                   seed: int) -> int:
    """Make and write one chunk of a -P file (in a pool worker); its number of sequences."""
    from .perturbations import perturb

    target.write(rows, perturb(images, name, seed=seed, indices=indices))
    return rows.stop - rows.start


def _digest(indices: np.ndarray) -> str:
    """A short fingerprint of the image selection, to tell runs apart."""
    import hashlib

    return f"{len(indices)}:" + hashlib.sha1(np.asarray(indices, np.int64).tobytes()).hexdigest()[:16]


# --------------------------------------------------------------------------- ImageNet


def imagenet_val_files(root: str | Path) -> list[tuple[Path, str]]:
    """(file, wnid) of a clean ImageNet val folder ``<root>/<wnid>/*.JPEG`` (or ``<root>/val/...``)."""
    root = Path(root)
    folder = root / "val" if (root / "val").is_dir() else root
    if not folder.is_dir():
        raise FileNotFoundError(f"ImageNet val folder missing: {folder}")
    files = [(path, wnid.name) for wnid in sorted(p for p in folder.iterdir() if p.is_dir())
             for path in sorted(wnid.iterdir()) if path.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise FileNotFoundError(f"no images under {folder}/<wnid>/ (expected the ImageNet val layout)")
    return files


def load_resized(path: Path, crop: int | None = None) -> np.ndarray:
    """The reference's preprocessing: shorter side to 256 (bilinear), then a centre crop ``crop``."""
    import torchvision.transforms.functional as TF

    img = TF.resize(read_image(path), 256)
    return np.asarray(img if crop is None else TF.center_crop(img, crop))


def pending_images(mine: Sequence[int], files: Sequence[tuple[Path, str]],
                   outputs: Sequence[tuple[object, Path]], name_of: Callable[[Path], str]) -> dict[int, list]:
    """Image index -> the outputs (e.g. (corruption, severity)) whose file ``<folder>/<wnid>/<name_of(file)>`` is
    missing, for the images ``mine`` (of ``files``, (file, wnid)) that have any; in the order of ``mine``.

    One listing per folder instead of one look-up per file (slow on a cluster's network filesystem).
    """
    by_wnid: dict[str, list[int]] = {}
    for i in mine:
        by_wnid.setdefault(files[i][1], []).append(i)
    todo: dict[int, list] = {}
    for what, folder in outputs:
        for wnid, images in by_wnid.items():
            there = set(os.listdir(folder / wnid)) if (folder / wnid).is_dir() else set()
            for i in images:
                if name_of(files[i][0]) not in there:
                    todo.setdefault(i, []).append(what)
    return {i: todo[i] for i in mine if i in todo}


def write_per_image(todo: dict[int, list], files: Sequence[tuple[Path, str]], make: Callable[[list], int], *,
                    done: int, batch: int, workers: int, ctx: DistContext, progress: bool, desc: str,
                    unit: str) -> int:
    """Run ``make`` on batches [(file, wnid, index, outputs to write)] of :func:`pending_images`' ``todo`` on a
    pool of ``workers`` processes, which decode, corrupt and encode; the number of files all processes wrote.

    ``done``: outputs of this process already there (for the progress bar of the whole run).
    """
    images = list(todo)
    size = max(1, min(batch, -(-len(images) // (16 * max(workers, 1)))))  # enough batches that no worker waits
    jobs = [(sum(len(todo[i]) for i in chunk), ([(*files[i], i, todo[i]) for i in chunk],))
            for chunk in (images[a:a + size] for a in range(0, len(images), size))]
    written = 0
    with TeamBar(ctx, sum(map(len, todo.values())), done, progress=progress, desc=desc, unit=unit) as bar:
        for count, _ in _parallel(make, jobs, workers):
            written += count
            bar.update(count)
    return int(all_reduce([written], ctx)[0])


def make_imagenet_c(root: str | Path, out: str | Path, corruptions: Sequence[str], *,
                    severities: Sequence[int] = SEVERITIES, limit: int | None = None, seed: int = 0,
                    workers: int | None = None, batch: int = 8, progress: bool = True, shard: Shard = Shard(),
                    ctx: DistContext = DistContext()) -> int:
    """ImageNet-C: ``<out>/<corruption>/<s>/<wnid>/<file>``, 224 px, JPEG quality 85 (optimised), as the reference.

    Each process of ``ctx`` makes its part of job-array task ``shard``, on ``workers``
    processes. Returns the number of files written (existing ones are kept).
    """
    out, files = Path(out), imagenet_val_files(root)
    mine = shard_items(select_indices(len(files), limit), process_shard(ctx, shard))
    claim_manifest(out, True, write=ctx.is_main, benchmark="imagenet-c", seed=seed, names=list(corruptions))
    outputs = [((name, s), out / name / str(s)) for name in corruptions for s in severities]
    todo = pending_images(mine, files, outputs, lambda path: path.name)
    make = functools.partial(_corrupt_files, out=out, seed=seed)
    return write_per_image(todo, files, make, done=len(mine) * len(outputs) - sum(map(len, todo.values())),
                            batch=batch, workers=cores_per_process() if workers is None else workers, ctx=ctx,
                            progress=progress, desc="make-c", unit="img")


def _corrupt_files(work: list[tuple[Path, str, int, list[tuple[str, int]]]], *, out: Path, seed: int) -> int:
    """Decode each clean image once, then write its missing corrupted files (on a thread: no waiting for the disk)."""
    from .corruptions import corrupt

    clean = {index: load_resized(path, 224) for path, _, index, _ in work}
    by_output: dict[tuple[str, int], list[tuple[int, Path]]] = {}
    for path, wnid, index, missing in work:
        for name, severity in missing:
            by_output.setdefault((name, severity), []).append((index, out / name / str(severity) / wnid / path.name))
    with BackgroundWrites() as files:
        for (name, severity), items in by_output.items():
            results = corrupt(np.stack([clean[i] for i, _ in items]), name, severity, seed=seed,
                              indices=[i for i, _ in items], params="imagenet", workers=1)
            for (_, target), result in zip(items, results):
                files.write(target, encode_image(result, **IMAGENET_C_JPEG))
    return sum(len(missing) for *_, missing in work)


def write_video(path: Path, frames: np.ndarray, *, crf: int = 20, grain: bool = False,
                preset: str = "veryslow") -> None:
    """uint8 (T, H, W, 3) frames as H.264 at 1 frame/s, yuv444p, as the reference's ffmpeg call."""
    import av

    with atomic_path(path) as tmp, av.open(str(tmp), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=1)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv444p"  # what ffmpeg picks for RGB input without -pix_fmt
        stream.options = {"preset": preset, **({"tune": "grain"} if grain else {"crf": str(crf)})}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
        container.mux(stream.encode())


def make_imagenet_p(root: str | Path, out: str | Path, perturbations: Sequence[str], *, limit: int | None = None,
                    seed: int = 0, workers: int | None = None, batch: int = 4, preset: str = "veryslow",
                    progress: bool = True, shard: Shard = Shard(), ctx: DistContext = DistContext()) -> int:
    """ImageNet-P: ``<out>/<perturbation>/<wnid>/<file>.mp4``, 224 px frames of the image resized to 256 px.

    Processes as :func:`make_imagenet_c`. Returns the number of videos written (existing ones are kept).
    """
    out, files = Path(out), imagenet_val_files(root)
    mine = shard_items(select_indices(len(files), limit), process_shard(ctx, shard))
    claim_manifest(out, True, write=ctx.is_main, benchmark="imagenet-p", seed=seed, names=list(perturbations))
    todo = pending_images(mine, files, [(name, out / name) for name in perturbations], lambda path: path.stem + ".mp4")
    make = functools.partial(_perturb_files, out=out, seed=seed, preset=preset)
    return write_per_image(todo, files, make, done=len(mine) * len(perturbations) - sum(map(len, todo.values())),
                            batch=batch, workers=cores_per_process() if workers is None else workers, ctx=ctx,
                            progress=progress, desc="make-p", unit="seq")


def _perturb_files(work: list[tuple[Path, str, int, list[str]]], *, out: Path, seed: int, preset: str) -> int:
    """Decode each clean image once, then write its missing perturbation videos."""
    from .perturbations import NOISE_SEQUENCES, perturb

    for path, wnid, index, missing in work:  # one at a time: the resized images differ in shape
        clean = load_resized(path)[None]
        for name in missing:
            frames = perturb(clean, name, seed=seed, indices=[index], params="imagenet", crop=224)[0]
            write_video(out / name / wnid / (path.stem + ".mp4"), frames, grain=name in NOISE_SEQUENCES, preset=preset)
    return sum(len(missing) for *_, missing in work)
