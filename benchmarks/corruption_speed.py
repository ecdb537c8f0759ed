"""Speed of the -C corruptions on one core, ours vs the reference way, in one run.

At 224x224 (the ImageNet-C table) it prints, per corruption, the CPU milliseconds per image of
the fast path (C kernels), the fast path's numpy code alone (``PUSHPULL_NATIVE=0``; what ran
before the kernels) and the per-image oracle (``corrupt_reference``: the reference generator's
algorithm, line by line), each the median over repeats of the mean over the 5 severities; then
the sums and the projected core-hours of the full ImageNet-C (50,000 images x 19 corruptions x
5 severities, from the per-severity costs). ``--sizes 640x427 1280x854`` adds the fast path's
ms per call at those sizes (the primitives the any-size API builds on). Everything runs in this
process with numpy/OpenCV/BLAS limited to one thread; timings are CPU time (``process_time``),
which a busy machine inflates less than wall time, measured interleaved.

    python benchmarks/corruption_speed.py                       # 224, photos, ~1-2 min
    python benchmarks/corruption_speed.py --repeats 5 --oracle-repeats 1 --sizes 640x427 1280x854
    python benchmarks/corruption_speed.py --params cifar        # 32x32 CIFAR table
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one core, before numpy loads its BLAS

import argparse  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from pushpull.data.corruptions import CORRUPTIONS, _native, corrupt, corrupt_reference  # noqa: E402
from pushpull.layers.config import set_native  # noqa: E402

IMAGENET_IMAGES, SEVERITIES = 50_000, 5


def photos(size: tuple[int, int], count: int) -> np.ndarray:
    """``count`` natural photos (sklearn's / matplotlib's samples, as the tests use) resized to (width, height)."""
    from PIL import Image

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from conftest import real_photos

    images = [np.asarray(Image.fromarray(p).resize(size, Image.BICUBIC)) for _, p in real_photos()]
    return np.stack([images[i % len(images)] for i in range(count)])


def cpu_ms(fn, images: np.ndarray, name: str, severity: int, params: str) -> float:
    """CPU milliseconds per image of ``fn`` on ``images``, one image per call."""
    start = time.process_time()
    for i in range(len(images)):
        fn(images[i:i + 1], name, severity, seed=0, indices=[i], params=params, workers=1)
    return (time.process_time() - start) * 1000 / len(images)


def fast(*args, **kwargs):
    return corrupt(*args, **kwargs)


def numpy_only(*args, **kwargs):
    with set_native(False):
        return corrupt(*args, **kwargs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=3, help="photos per measurement (fast path)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of the fast paths (median)")
    parser.add_argument("--oracle-repeats", type=int, default=1, help="repeats of the oracle (0: skip it)")
    parser.add_argument("--params", choices=("imagenet", "cifar"), default="imagenet", help="parameter table")
    parser.add_argument("--sizes", nargs="*", default=[], help="extra WxH sizes for the fast path, e.g. 640x427")
    parser.add_argument("--only", nargs="*", default=CORRUPTIONS, help="corruptions to time")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    side = 224 if args.params == "imagenet" else 32
    images = photos((side, side), args.images)
    corrupt(images[:1], "glass_blur", 1, params=args.params)  # build / load the C kernels outside the timings
    print(f"{args.params} table, {side}x{side} photo crops, one core; CPU ms per image, mean over severities "
          f"1-5, median of {args.repeats} (oracle: {args.oracle_repeats}); C kernels: "
          f"{'yes' if _native.kernels() is not None else 'NO (numpy only)'}; load {os.getloadavg()[0]:.1f}")
    header = f"{'corruption':18s} {'ours':>7s} {'numpy':>7s} {'oracle':>8s} {'speed-up':>9s}  ours per severity"
    print(header)
    totals = {"ours": np.zeros(SEVERITIES), "numpy": np.zeros(SEVERITIES), "oracle": np.zeros(SEVERITIES)}
    for name in args.only:
        rows = {"ours": [], "numpy": [], "oracle": []}
        for severity in range(1, SEVERITIES + 1):
            runs = {"ours": [], "numpy": [], "oracle": []}
            for rep in range(max(args.repeats, args.oracle_repeats)):  # interleaved
                if rep < args.repeats:
                    runs["ours"].append(cpu_ms(fast, images, name, severity, args.params))
                    runs["numpy"].append(cpu_ms(numpy_only, images, name, severity, args.params))
                if rep < args.oracle_repeats:
                    runs["oracle"].append(cpu_ms(corrupt_reference, images[:1], name, severity, args.params))
            for key, values in runs.items():
                rows[key].append(statistics.median(values) if values else float("nan"))
        for key in totals:
            totals[key] += rows[key]
        ours, base, oracle = (float(np.mean(rows[k])) for k in ("ours", "numpy", "oracle"))
        print(f"{name:18s} {ours:7.1f} {base:7.1f} {oracle:8.1f} {oracle / ours:8.0f}x  "
              + " ".join(f"{v:5.1f}" for v in rows["ours"]), flush=True)
    means = {k: float(np.mean(v)) for k, v in totals.items()}
    print(f"{'sum (19 at one severity)':26s} ours {means['ours']:.1f} ms, numpy {means['numpy']:.1f} ms, "
          f"oracle {means['oracle']:.0f} ms per image")
    if args.params == "imagenet" and len(args.only) == len(CORRUPTIONS):
        for key in totals:
            hours = totals[key].sum() / 1000 * IMAGENET_IMAGES / 3600
            print(f"projected ImageNet-C ({IMAGENET_IMAGES:,} x 19 x 5), {key:6s}: {hours:7.2f} core-hours")
        print(f"ratio oracle / ours: {means['oracle'] / means['ours']:.0f}x; numpy / ours: "
              f"{means['numpy'] / means['ours']:.1f}x")
    for size in args.sizes:
        width, height = (int(v) for v in size.lower().split("x"))
        big = photos((width, height), 1)
        print(f"{width}x{height} (one photo, ms per call, ours; mean over severities):")
        costs = []
        for name in args.only:
            try:
                per = [statistics.median(cpu_ms(fast, big, name, s, args.params) for _ in range(args.repeats))
                       for s in range(1, SEVERITIES + 1)]
            except ValueError as err:  # e.g. frost: the image is larger than the texture
                print(f"  {name:18s} n/a ({err})")
                continue
            costs.append(float(np.mean(per)))
            print(f"  {name:18s} {costs[-1]:8.1f}  max {max(per):.1f}", flush=True)
        print(f"  sum {sum(costs):.1f} ms")


if __name__ == "__main__":
    main()
