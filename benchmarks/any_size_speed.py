"""Speed of ``pushpull.corrupt_image`` vs imagecorruptions 1.1.2 on a real photo, one core, in one run.

Prints, per corruption at one severity, the median CPU milliseconds per call at 640x427 (scikit-learn's
china.jpg, native size) and 1280x854 (the same photo upsampled, bicubic): ours and imagecorruptions'
(the installed package, minimally patched as ``tests/test_corrupt_image.py`` patches it; said absent
when it cannot be imported). Corruption by corruption, ours then theirs, so machine load hits both
alike; not call by call: after a multi-second reference call ours ran 3-5x slower (cold caches).

    PYTHONPATH=src:DIR python benchmarks/any_size_speed.py [--severity 3] [--repeats 3] [--sizes 640x427 1280x854]

(DIR: where ``pip install --target DIR --no-deps imagecorruptions==1.1.2 scikit-image lazy_loader
imageio tifffile networkx`` put it.)
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # one core, set before numpy loads
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from pushpull.data.corruptions.any_size import corrupt_image, get_corruption_names  # noqa: E402

TESTS = Path(__file__).resolve().parents[1] / "tests"


def _photo(size: tuple[int, int]) -> np.ndarray:
    from sklearn.datasets import load_sample_image

    photo = load_sample_image("china.jpg")  # 427 x 640
    if photo.shape[1::-1] != size:
        photo = np.asarray(Image.fromarray(photo).resize(size, Image.BICUBIC))
    return photo


def _imagecorruptions():
    """The patched imagecorruptions module, or the reason it is absent."""
    sys.path.insert(0, str(TESTS))
    try:
        from test_corrupt_image import patched_imagecorruptions

        return patched_imagecorruptions(), None
    except ImportError as err:
        return None, str(err)


def _ms(fn) -> float:
    """CPU milliseconds of one call: single-threaded, so the wall time on an idle core, and far less
    sensitive than wall time to other jobs on a shared machine."""
    start = time.process_time()
    fn()
    return (time.process_time() - start) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--severity", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3, help="calls per corruption and size (median reported)")
    parser.add_argument("--sizes", nargs="*", default=["640x427", "1280x854"], help="WIDTHxHEIGHT")
    parser.add_argument("--only", nargs="*", default=get_corruption_names("all"), help="corruptions to time")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    theirs, absent = _imagecorruptions()
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes]
    photos = {size: _photo(size) for size in sizes}
    print(f"severity {args.severity}, median CPU ms of {args.repeats} calls, one core; imagecorruptions: "
          + ("1.1.2, patched" if theirs else f"absent ({absent})"))
    header = "".join(f" | {w}x{h} ours ms | imagecorruptions ms | speed-up" for w, h in sizes)
    print(f"| corruption{header} |")
    print("|---" * (1 + 3 * len(sizes)) + "|")
    totals = {size: [0.0, 0.0] for size in sizes}
    for name in args.only:
        row = f"| {name}"
        for size in sizes:
            photo, ours, ref = photos[size], [], []
            corrupt_image(photo, args.severity, name)  # warm-up: lazy imports, built kernels, cached textures
            for r in range(args.repeats):  # ours in a block: right after a multi-second reference call, caches
                ours.append(_ms(lambda: corrupt_image(photo, args.severity, name, seed=0, index=r)))  # are cold
            for r in range(args.repeats if theirs is not None else 0):
                np.random.seed(r)
                ref.append(_ms(lambda: theirs.corrupt(photo, args.severity, name)))
            a = statistics.median(ours)
            b = statistics.median(ref) if ref else float("nan")
            totals[size][0] += a
            totals[size][1] += b
            row += f" | {a:.1f} | {b:.0f} | {b / a:.0f}x" if ref else f" | {a:.1f} | - | -"
        print(row + " |", flush=True)
    row = "| **all**"
    for size in sizes:
        a, b = totals[size]
        row += f" | {a:.0f} | {b:.0f} | {b / a:.0f}x" if theirs else f" | {a:.0f} | - | -"
    print(row + " |")


if __name__ == "__main__":
    main()
