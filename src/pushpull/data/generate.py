"""Write CIFAR-10/100-C/-P and ImageNet-C/-P in the official layouts, resumably.

Every file appears atomically (written beside its final name, then ``os.replace``d), so
a file that exists is complete. The big CIFAR ``.npy`` files are filled chunk by chunk
through a memory map ``<name>.npy.partial`` whose finished chunks are listed in
``<name>.npy.progress.json``: an interrupted run, started again with the same options,
redoes only the unfinished chunks. ImageNet outputs are one file per image, skipped when
present. Image i's randomness depends on (seed, name, severity, its index in the clean
set), so a ``--limit`` subset holds exactly the images a full run would. A folder's
``pushpull-benchmark.json`` records its options and the random-stream rule
(``pushpull.data.streams.STREAM_RULE``): a run with other options, or into a folder made under
another rule, is refused rather than mixed in.
"""

from __future__ import annotations

import functools
import itertools
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .._files import atomic_path, read_json, write_json
from .robustness_sets import (IMAGE_SUFFIXES, IMAGENET_C_JPEG, MANIFEST, SEVERITIES, DamagedFileError, check_npy,
                              read_image)
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


def save_npy(path: Path, array: np.ndarray) -> None:
    """``np.save`` that never leaves a partial file behind."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array)


class ChunkedNpy:
    """A uint8 ``.npy`` filled in numbered chunks that survives interruption.

    ``key`` identifies the run's options; a leftover partial file from other options is
    discarded rather than mixed in.
    """

    def __init__(self, path: Path, shape: tuple[int, ...], key: dict) -> None:
        self.path, self.shape, self.key = path, shape, key
        self.partial = path.with_name(path.name + ".partial")
        self.progress = path.with_name(path.name + ".progress.json")
        state = _read_progress(self.progress)
        if state.get("key") == key and self.partial.is_file() and self._partial_ok():
            self.done = set(state["done"])
        else:
            self.done = set()
            self.partial.unlink(missing_ok=True)
            np.lib.format.open_memmap(self.partial, mode="w+", dtype=np.uint8, shape=shape).flush()
        self._array = np.lib.format.open_memmap(self.partial, mode="r+")

    def _partial_ok(self) -> bool:  # damaged or not, a partial file is redone quietly: it is ours
        try:
            return check_npy(self.partial) == self.shape
        except ValueError:
            return False

    def write(self, chunk: int, rows: slice, data: np.ndarray) -> None:
        self._array[rows] = data
        self._array.flush()
        self.done.add(chunk)
        write_json(self.progress, {"key": self.key, "done": sorted(self.done)})

    def finish(self) -> None:
        self._array.flush()
        del self._array
        os.replace(self.partial, self.path)
        self.progress.unlink(missing_ok=True)


def _read_progress(path: Path) -> dict:
    """The chunk list of an interrupted file; {} when there is none or it is damaged (then all is redone)."""
    try:
        state = read_json(path) if path.is_file() else {}
    except ValueError:  # not JSON, or not text (read_json names both)
        state = {}
    return state if isinstance(state, dict) and isinstance(state.get("done", []), list) else {}


def _finished(path: Path, shape: tuple[int, ...]) -> bool:
    """Whether ``path`` is already complete; a damaged one is redone, a different file is never overwritten."""
    if not path.exists():
        return False
    try:
        found = check_npy(path)
    except DamagedFileError as err:
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


def _chunks(n: int) -> list[slice]:
    return [slice(a, min(a + CHUNK, n)) for a in range(0, n, CHUNK)]


def _manifest(out: Path, unrecorded_files_predate: bool = False, **info) -> None:
    """Record how the folder was made; refuse to mix runs with different options or stream rules.

    ``unrecorded_files_predate``: files in a folder without a manifest come from before the
    manifest, hence before the stream rule (ImageNet folders made under rule 1).
    """
    path = out / MANIFEST
    info["stream_rule"] = STREAM_RULE
    mixing = "resuming would mix images of two random-stream rules: delete the folder or use another --out"
    if not path.is_file():
        if unrecorded_files_predate and out.is_dir() and any(out.iterdir()):
            raise ValueError(f"{out} holds files but no {MANIFEST} (an official release, or made before "
                             f"random-stream rule {STREAM_RULE}): {mixing}")
    else:
        old = read_json(path, "manifest ")
        if old.get("stream_rule", 1) != STREAM_RULE:
            raise ValueError(f"{path} says random-stream rule {old.get('stream_rule', 1)}, this pushpull uses rule "
                             f"{STREAM_RULE} (stream ids from the names): {mixing}")
        clash = {k: (old.get(k), v) for k, v in info.items() if k != "names" and old.get(k) != v}
        if clash:
            raise ValueError(f"{out} was generated with other options {clash}; use another --out folder")
        info["names"] = sorted(set(old.get("names", [])) | set(info["names"]))
    write_json(path, info)


def make_cifar_c(images: np.ndarray, labels: np.ndarray, out: str | Path, corruptions: Sequence[str], *,
                 severities: Sequence[int] = SEVERITIES, indices: np.ndarray | None = None, seed: int = 0,
                 workers: int | None = None, dataset: str = "cifar10", progress: bool = True) -> list[Path]:
    """CIFAR-C files ``<out>/<corruption>.npy`` (+ ``labels.npy``) for already selected images.

    ``indices`` are the images' positions in the clean test set (their random streams).
    """
    from .corruptions import corrupt

    out, n = Path(out), len(images)
    indices = np.arange(n) if indices is None else np.asarray(indices)
    shape = (len(severities) * n,) + images.shape[1:]
    key = {"seed": seed, "severities": list(severities), "indices": _digest(indices)}
    _manifest(out, benchmark=f"{dataset}-c", seed=seed, severities=list(severities), n=n,
              indices=_digest(indices), names=list(corruptions))
    save_npy(out / "labels.npy", np.tile(labels.astype(np.uint8), len(severities)))
    todo = [name for name in corruptions if not _finished(out / f"{name}.npy", shape)]
    chunks = _chunks(n)
    with tqdm(total=len(todo) * len(severities) * len(chunks), desc="make-c", unit="chunk",
              disable=not progress) as bar:
        for name in todo:
            target = ChunkedNpy(out / f"{name}.npy", shape, key)
            bar.update(len(target.done))
            for b, severity in enumerate(severities):
                for c, rows in enumerate(chunks):
                    chunk_id = b * len(chunks) + c
                    if chunk_id in target.done:
                        continue
                    bar.set_postfix_str(f"{name} s{severity}")
                    data = corrupt(images[rows], name, severity, seed=seed, indices=indices[rows], workers=workers)
                    target.write(chunk_id, slice(b * n + rows.start, b * n + rows.stop), data)
                    bar.update()
            target.finish()
    return [out / f"{name}.npy" for name in corruptions]


def make_cifar_p(images: np.ndarray, labels: np.ndarray, out: str | Path, perturbations: Sequence[str], *,
                 indices: np.ndarray | None = None, seed: int = 0, workers: int | None = None,
                 dataset: str = "cifar10", progress: bool = True) -> list[Path]:
    """CIFAR-P files ``<out>/<perturbation>.npy`` (N, T, 32, 32, 3) (+ ``labels.npy``)."""
    from .perturbations import num_frames

    out, n = Path(out), len(images)
    indices = np.arange(n) if indices is None else np.asarray(indices)
    key = {"seed": seed, "indices": _digest(indices)}
    _manifest(out, benchmark=f"{dataset}-p", seed=seed, n=n, indices=_digest(indices), names=list(perturbations))
    save_npy(out / "labels.npy", labels.astype(np.uint8))
    shapes = {p: (n, num_frames(p)) + images.shape[1:] for p in perturbations}
    todo = [p for p in perturbations if not _finished(out / f"{p}.npy", shapes[p])]
    chunks = _chunks(n)
    with tqdm(total=len(todo) * len(chunks), desc="make-p", unit="chunk", disable=not progress) as bar:
        for name in todo:
            bar.set_postfix_str(name)
            target = ChunkedNpy(out / f"{name}.npy", shapes[name], key)
            bar.update(len(target.done))
            jobs = [(c, (images[chunks[c]], indices[chunks[c]])) for c in range(len(chunks)) if c not in target.done]
            work = functools.partial(_perturb_chunk, name=name, seed=seed)
            for c, frames in _parallel(work, jobs, workers):
                target.write(c, chunks[c], frames)
                bar.update()
            target.finish()
    return [out / f"{p}.npy" for p in perturbations]


def _perturb_chunk(images: np.ndarray, indices: np.ndarray, *, name: str, seed: int) -> np.ndarray:
    from .perturbations import perturb

    return perturb(images, name, seed=seed, indices=indices)


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


def _pending_batches(indices: np.ndarray, targets: Sequence[Path], batch: int) -> list[np.ndarray]:
    """Batches of the image indices whose target file does not exist yet."""
    todo = [i for i, target in zip(indices, targets) if not target.exists()]
    return [np.asarray(todo[a:a + batch]) for a in range(0, len(todo), batch)]


def make_imagenet_c(root: str | Path, out: str | Path, corruptions: Sequence[str], *,
                    severities: Sequence[int] = SEVERITIES, limit: int | None = None, seed: int = 0,
                    workers: int | None = None, batch: int = 64, progress: bool = True) -> int:
    """ImageNet-C: ``<out>/<corruption>/<s>/<wnid>/<file>``, 224 px, JPEG quality 85 (optimised), as the reference.

    Returns the number of files written (existing ones are kept).
    """
    from PIL import Image

    from .corruptions import corrupt

    out, files = Path(out), imagenet_val_files(root)
    indices = select_indices(len(files), limit)
    _manifest(out, True, benchmark="imagenet-c", seed=seed, names=list(corruptions))

    written = 0
    jobs = [(name, s) for name in corruptions for s in severities]
    with tqdm(total=len(jobs) * len(indices), desc="make-c", unit="img", disable=not progress) as bar:
        for name, severity in jobs:
            bar.set_postfix_str(f"{name} s{severity}")
            targets = [out / name / str(severity) / wnid / path.name for path, wnid in files]
            batches = _pending_batches(indices, [targets[i] for i in indices], batch)
            bar.update(len(indices) - sum(map(len, batches)))
            for chunk in batches:
                images = np.stack([load_resized(files[i][0], 224) for i in chunk])
                results = corrupt(images, name, severity, seed=seed, indices=chunk, params="imagenet", workers=workers)
                for i, result in zip(chunk, results):
                    with atomic_path(targets[i]) as tmp:
                        Image.fromarray(result).save(tmp, **IMAGENET_C_JPEG)
                written += len(chunk)
                bar.update(len(chunk))
    return written


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
                    seed: int = 0, workers: int | None = None, batch: int = 8, preset: str = "veryslow",
                    progress: bool = True) -> int:
    """ImageNet-P: ``<out>/<perturbation>/<wnid>/<file>.mp4``, 224 px frames of the image resized to 256 px.

    Returns the number of videos written (existing ones are kept).
    """
    out, files = Path(out), imagenet_val_files(root)
    indices = select_indices(len(files), limit)
    _manifest(out, True, benchmark="imagenet-p", seed=seed, names=list(perturbations))

    written = 0
    with tqdm(total=len(perturbations) * len(indices), desc="make-p", unit="seq", disable=not progress) as bar:
        for name in perturbations:
            bar.set_postfix_str(name)
            targets = [out / name / wnid / (path.stem + ".mp4") for path, wnid in files]
            batches = _pending_batches(indices, [targets[i] for i in indices], batch)
            bar.update(len(indices) - sum(map(len, batches)))
            jobs = [(len(chunk), ([files[i][0] for i in chunk], [targets[i] for i in chunk], chunk))
                    for chunk in batches]
            work = functools.partial(_imagenet_p_chunk, name=name, seed=seed, preset=preset)
            for count, _ in _parallel(work, jobs, workers):
                written += count
                bar.update(count)
    return written


def _imagenet_p_chunk(paths: list[Path], targets: list[Path], indices: np.ndarray, *, name: str, seed: int,
                      preset: str) -> None:
    from .perturbations import NOISE_SEQUENCES, perturb

    for path, target, index in zip(paths, targets, indices):  # one at a time: the resized images differ in shape
        frames = perturb(load_resized(path)[None], name, seed=seed, indices=[index], params="imagenet", crop=224)[0]
        write_video(target, frames, grain=name in NOISE_SEQUENCES, preset=preset)
