"""Images/s of the whole CIFAR-10-C evaluation pipeline next to the bare model, in one run.

The pipeline (``pushpull.evaluate``) reads CIFAR-10-C-format ``.npy`` arrays from disk
(memory-mapped), converts and normalises them on a background thread and runs the model
under ``torch.inference_mode``; the bare rate is the same model on already-normalised
tensors in memory, same batch size. Data: random images written in the official layout
(a clean test split of N images and K corruption files of 5 x N rows). Target on CPU:
pipeline >= 85% of the bare rate.

    python benchmarks/eval_speed.py [--images 2048] [--corruptions 3] [--model resnet20]
"""

from __future__ import annotations

import argparse
import pickle
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import pushpull
from pushpull.data.constants import CIFAR10_MEAN, CIFAR10_STD
from pushpull.engine.evaluate import Normalize, evaluate


def write_layout(root: Path, n: int, corruptions: list[str]) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, n)
    (root / "cifar-10-batches-py").mkdir()
    with open(root / "cifar-10-batches-py" / "test_batch", "wb") as f:
        pickle.dump({"data": images.transpose(0, 3, 1, 2).reshape(n, -1), "labels": labels.tolist()}, f)
    (root / "C").mkdir()
    np.save(root / "C" / "labels.npy", np.tile(labels, 5).astype(np.uint8))
    for name in corruptions:
        np.save(root / "C" / f"{name}.npy", rng.integers(0, 256, (5 * n, 32, 32, 3), dtype=np.uint8))


def timed(fn) -> tuple[float, float]:  # noqa: ANN001
    """(wall seconds, process CPU seconds) of ``fn()``: CPU time is steadier on a shared machine."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def run_bare(model: torch.nn.Module, batches: list[torch.Tensor]) -> None:
    with torch.inference_mode():
        for x in batches:
            model(x).argmax(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2048, help="clean test images (rows per severity)")
    parser.add_argument("--corruptions", type=int, default=3, help="corruption files (x 5 severities)")
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved bare/pipeline rounds")
    args = parser.parse_args()
    from pushpull.data.corruptions import CORRUPTIONS

    names = list(CORRUPTIONS[:args.corruptions])
    model = pushpull.create_model(args.model).eval()
    total = args.images * (1 + 5 * len(names))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_layout(root, args.images, names)
        rng = np.random.default_rng(1)
        normalize = Normalize(CIFAR10_MEAN, CIFAR10_STD)
        sizes = [min(args.batch_size, args.images - a) for a in range(0, args.images, args.batch_size)]
        batches = [normalize(rng.integers(0, 256, (size, 32, 32, 3), dtype=np.uint8))  # the pipeline's batches
                   for _ in range(1 + 5 * len(names)) for size in sizes]
        run_bare(model, batches[:2])  # warm-up
        bare, pipe = [], []
        for _ in range(args.rounds):  # interleaved, so drifting machine load hits both alike
            bare.append(timed(lambda: run_bare(model, batches)))
            pipe.append(timed(lambda: evaluate(model, data=root, benchmarks="cifar10-c", c_dir=root / "C",
                                               corruptions=names, batch_size=args.batch_size, baseline=None,
                                               progress=False)))
    print(f"model {args.model}, {torch.get_num_threads()} threads, batch {args.batch_size}; "
          f"{args.images} test images x (clean + {len(names)} corruptions x 5 severities) = {total} images; "
          f"medians of {args.rounds} interleaved rounds")
    for k, clock in enumerate(("wall", "CPU")):
        b, p = (np.array([total / r[k] for r in rates]) for rates in (bare, pipe))
        print(f"[{clock:>4} time] bare model {np.median(b):7.0f} images/s | pipeline {np.median(p):7.0f} images/s | "
              f"ratio {np.median(p / b):.3f} (rounds: {', '.join(f'{r:.2f}' for r in p / b)}; target >= 0.85)")


if __name__ == "__main__":
    main()
