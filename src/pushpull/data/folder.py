"""Any folder of images corrupted at each image's own size: ``<out>/<corruption>/<severity>/<relative path>``.

The layout COCO-C and Cityscapes-C use. Every image under the folder (sorted relative paths,
hidden files skipped) is read as RGB (grey, palette, CMYK and 16-bit images converted, an
alpha channel dropped: :func:`read_rgb`), corrupted by a per-image semantics chosen by name
(``corruptions.per_image.CORRUPTERS``: one per parameter table), and written as PNG or
JPEG. Image ``p``'s randomness comes only from (seed, corruption, severity,
``streams.path_key(p)``): never from its place in the listing, so adding files, ``--limit``
or sharding (``Shard.bounds`` over the sorted paths) leave every image as it was. Files appear
atomically, so a rerun skips the ones present; the folder's manifest refuses a rerun with
other options.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import numpy as np

from .._files import BackgroundWrites
from .._names import check_name
from ..engine.distributed import DistContext, Shard, cores_per_process, process_shard
from .corruptions.per_image import Corrupter, get_corrupter
from .robustness_sets import SEVERITIES, DamagedFileError, encode_image, read_image
from .streams import path_key

# What PIL reads that a folder of photographs may hold (names ending otherwise are not images).
SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
FORMATS = {"png": (".png",), "jpeg": (".jpg", ".jpeg")}  # output format -> the suffixes that name it
DEFAULT_QUALITY = 85  # the ImageNet-C release's JPEG quality


def folder_images(root: str | Path) -> list[str]:
    """The image files under ``root``: relative POSIX paths, sorted; hidden files and folders skipped."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder missing: {root}")
    found = sorted(path.relative_to(root).as_posix() for path in root.rglob("*")
                   if path.suffix.lower() in SUFFIXES and path.is_file()
                   and not any(part.startswith(".") for part in path.relative_to(root).parts))
    if not found:
        raise FileNotFoundError(f"no image files ({', '.join(SUFFIXES)}) under {root}")
    return found


def output_name(relative: str, fmt: str) -> str:
    """``relative`` with its suffix kept when it already names ``fmt`` (``.jpg``, ``.JPEG``), else ``.png``/``.jpg``."""
    path = PurePosixPath(relative)
    return relative if path.suffix.lower() in FORMATS[fmt] else str(path.with_suffix(FORMATS[fmt][0]))


def read_rgb(path: str | Path) -> np.ndarray:
    """An image file as uint8 (H, W, 3) RGB; ``DamagedFileError`` naming the file when it cannot be read.

    Conversions (PIL's): grey and palette images get three equal channels, an alpha channel
    is dropped (not composited), CMYK/YCbCr are converted; 16-bit images keep their high byte
    (as PIL reads 16-bit RGB PNGs). EXIF orientation is not applied: the pixels as stored.
    """
    from PIL import Image

    try:
        with Image.open(path) as img:  # the header only: the modes ``read_image``'s RGB conversion would clip
            if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
                grey = np.asarray(img)
                if grey.min() < 0 or grey.max() > 65535:
                    raise DamagedFileError(f"{path}: 32-bit integer image; convert it to 8 or 16 bits first")
                return np.repeat((grey.astype(np.uint32) >> 8).astype(np.uint8)[..., None], 3, axis=2)
            if img.mode == "F":
                raise DamagedFileError(f"{path}: floating-point image (mode F); convert it to 8-bit first")
    except OSError as err:  # UnidentifiedImageError is an OSError too
        raise DamagedFileError(f"cannot read {path}: {err}; replace or remove the file") from None
    return np.asarray(read_image(path))  # the package's one decoder: every pixel, a cut file named


def _image_size(path: Path) -> tuple[int, int]:
    """(height, width) from the file's header, without decoding its pixels."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            return img.height, img.width
    except OSError as err:
        raise DamagedFileError(f"cannot read {path}: {err}; replace or remove the file") from None


def _check_folder(root: Path, out: Path, images: Sequence[str], fmt: str) -> None:
    """Refuse outputs inside the input folder and two inputs that would write one output (``a.jpg``, ``a.png``)."""
    if out.resolve().is_relative_to(root.resolve()):
        raise ValueError(f"--out {out} is inside the image folder {root}: a rerun would read its own outputs")
    seen: dict[str, str] = {}
    for relative in images:
        target = output_name(relative, fmt)
        if target in seen:
            raise ValueError(f"{root / seen[target]} and {root / relative} would both be written as {target}; "
                             f"rename one or choose --format to match")
        seen[target] = relative


def _check_sizes(root: Path, images: Sequence[str], corrupter: Corrupter, names: Sequence[str],
                 severities: Sequence[int]) -> None:
    for relative in images:
        height, width = _image_size(root / relative)
        for name in names:
            for severity in severities:
                why = corrupter.problem(height, width, name, severity)
                if why:
                    raise ValueError(f"{root / relative} is {height}x{width}: {why}")


def make_folder_c(root: str | Path, out: str | Path, corruptions: Sequence[str], *,
                  severities: Sequence[int] = SEVERITIES, params: str = "imagenet", fmt: str = "png",
                  quality: int | None = None, seed: int = 0, limit: int | None = None, shard: Shard = Shard(),
                  ctx: DistContext = DistContext(), workers: int | None = None, progress: bool = True) -> int:
    """Corrupt every image under ``root`` into ``<out>/<corruption>/<severity>/<relative path>``; returns files written.

    ``params``: a name of ``corruptions.per_image.CORRUPTERS`` (default: the ImageNet-C table at each image's size).
    ``fmt``: ``"png"`` or ``"jpeg"`` (``quality``, default 85, optimised as the ImageNet-C release).
    ``limit``: N images strided over the sorted paths. Each process of ``ctx`` (torchrun) makes its
    part of job-array task ``shard`` (:class:`~pushpull.engine.distributed.Shard`, slices of the
    sorted paths), on a pool of ``workers`` processes. Files already present are kept (they are
    complete: every file is written atomically).
    """
    from .generate import claim_manifest, pending_images, select_indices, write_per_image
    from .shards import shard_items

    root, out = Path(root), Path(out)
    corrupter = get_corrupter(params)
    fmt = check_name(fmt, FORMATS, "output format")
    if quality is not None and fmt != "jpeg":
        raise ValueError(f"a quality ({quality}) is for JPEG output; with --format {fmt} leave it out")
    quality = DEFAULT_QUALITY if quality is None else int(quality)
    if not 1 <= quality <= 100:
        raise ValueError(f"JPEG quality must be in 1..100, got {quality}")
    images = folder_images(root)
    _check_folder(root, out, images, fmt)
    mine = shard_items(select_indices(len(images), limit), process_shard(ctx, shard))
    _check_sizes(root, [images[i] for i in mine], corrupter, corruptions, severities)
    claim_manifest(out, True, write=ctx.is_main, benchmark="folder-c", source=str(root.resolve()), params=params,
                   format=fmt, quality=quality if fmt == "jpeg" else None, seed=seed, names=list(corruptions))
    files = [(root / relative, str(PurePosixPath(relative).parent)) for relative in images]  # (file, its folder)
    outputs = [((name, s), out / name / str(s)) for name in corruptions for s in severities]
    todo = pending_images(mine, files, outputs, lambda path: output_name(path.name, fmt))
    save = {"format": "PNG"} if fmt == "png" else {"format": "JPEG", "quality": quality, "optimize": True}
    make = functools.partial(_corrupt_files, root=root, out=out, params=params, fmt=fmt, save=save, seed=seed)
    return write_per_image(todo, files, make, done=len(mine) * len(outputs) - sum(map(len, todo.values())),
                           batch=2, workers=cores_per_process() if workers is None else workers, ctx=ctx,
                           progress=progress, desc="make-c", unit="img")


def _corrupt_files(work: list[tuple[Path, str, int, list[tuple[str, int]]]], *, root: Path, out: Path, params: str,
                   fmt: str, save: dict, seed: int) -> int:
    """Read each image once, then write its missing corrupted files (in a pool worker, on a thread); the number written."""
    corrupter = get_corrupter(params)
    with BackgroundWrites() as files:
        for path, _, _, missing in work:
            relative = path.relative_to(root).as_posix()
            image, key = read_rgb(path), path_key(relative)
            for name, severity in missing:
                try:
                    result = corrupter.corrupt(image, name, severity, seed, key)
                except ValueError as err:  # what the size check could not foresee: say which file
                    raise ValueError(f"{path}: {name} severity {severity}: {err}") from None
                files.write(out / name / str(severity) / output_name(relative, fmt), encode_image(result, **save))
    return sum(len(missing) for *_, missing in work)
