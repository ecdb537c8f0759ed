"""Speed of the batched corruptions vs the per-image oracle, measured in one run.

Prints, per corruption (all 5 severities): fast-path throughput on N CIFAR test images, oracle
throughput on a small strided subset, the speed-up, and the projected time of the whole
CIFAR-10-C (19 corruptions x 5 severities x 10,000 images).

    python benchmarks/corruption_speed.py --data DIR [--n 10000] [--oracle-n 40] [--workers 2]
    python benchmarks/corruption_speed.py --data DIR --params imagenet --n 20 --oracle-n 2

Without --data it uses random images (speed barely depends on content). With ``--params
imagenet`` the CIFAR images are upsampled to 224x224 and the projection is for 50,000 images.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from pushpull.data.corruptions import CORRUPTIONS, corrupt, corrupt_reference


def _images(root: str | None, n: int, size: int) -> np.ndarray:
    if root is None:
        return np.random.default_rng(0).integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    from PIL import Image

    from pushpull.data.cifar import load_cifar

    images, _ = load_cifar(root, train=False)
    images = images[:n] if n >= len(images) else images[:: len(images) // n][:n]
    if size != images.shape[1]:
        images = np.stack([np.asarray(Image.fromarray(im).resize((size, size), Image.BILINEAR)) for im in images])
    return images


def _rate(fn, images: np.ndarray, name: str) -> tuple[float, float]:
    """(images per wall second, CPU seconds per image) over the 5 severities."""
    wall, cpu = time.perf_counter(), time.process_time()
    for severity in range(1, 6):
        fn(images, name, severity)
    count = 5 * len(images)
    return count / (time.perf_counter() - wall), (time.process_time() - cpu) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="folder holding cifar-10-batches-py (default: random images)")
    parser.add_argument("--n", type=int, default=10000, help="images for the fast path")
    parser.add_argument("--oracle-n", type=int, default=40, help="images for the oracle")
    parser.add_argument("--workers", type=int, default=None, help="fast-path threads (default: all cores)")
    parser.add_argument("--only", nargs="*", default=CORRUPTIONS, help="corruptions to time")
    parser.add_argument("--params", choices=("cifar", "imagenet"), default="cifar", help="parameter table")
    args = parser.parse_args()

    size, dataset = (32, 10000) if args.params == "cifar" else (224, 50000)
    images = _images(args.data, args.n, size)
    subset = images[:: max(1, len(images) // args.oracle_n)][: args.oracle_n]
    print(f"cores={os.cpu_count()} load={os.getloadavg()[0]:.2f} fast on {len(images)} images x 5 severities, "
          f"oracle on {len(subset)} x 5")
    print("wall: images per second; cpu: CPU seconds this process spent (all threads), which a busy machine"
          " inflates less than wall time")
    print(f"{'corruption':18s} {'fast img/s':>11s} {'oracle img/s':>13s} {'speed-up':>9s} {'fast all wall':>16s} "
          f"{'fast all cpu':>15s}")
    total_wall = total_cpu = 0.0
    for name in args.only:
        fast, fast_cpu = _rate(lambda x, n, s: corrupt(x, n, s, params=args.params, workers=args.workers),
                               images, name)
        slow, _ = _rate(lambda x, n, s: corrupt_reference(x, n, s, params=args.params), subset, name)
        total_wall += 5 * dataset / fast
        total_cpu += 5 * dataset * fast_cpu
        print(f"{name:18s} {fast:11.1f} {slow:13.1f} {fast / slow:8.1f}x {5 * dataset / fast:15.1f}s "
              f"{5 * dataset * fast_cpu:14.1f}s", flush=True)
    print(f"projected {args.params} -C ({len(args.only)} corruptions x 5 x {dataset:,}): {total_wall:.0f} s wall, "
          f"{total_cpu:.0f} CPU-s (load now {os.getloadavg()[0]:.2f})")


if __name__ == "__main__":
    main()
