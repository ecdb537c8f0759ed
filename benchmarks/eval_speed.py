"""Images/s of the whole CIFAR-10-C evaluation pipeline next to the bare model, in one run;
with ``--processes``, images/s and CPU use of 1 vs 2 processes (torchrun) on an ImageNet-style folder.

The pipeline (``pushpull.evaluate``) reads CIFAR-10-C-format ``.npy`` arrays from disk
(memory-mapped), converts and normalises them on a background thread and runs the model
under ``torch.inference_mode``; the bare rate is the same model on already-normalised
tensors in memory, same batch size. Data: random images written in the official layout
(a clean test split of N images and K corruption files of 5 x N rows). Target on CPU:
pipeline >= 85% of the bare rate.

``--processes``: a val folder of real photo crops (``tests/conftest.write_photo_imagenet``,
3 wnids), evaluated (clean + one corruption generated on the fly, JPEG round trip included)
by one process and by a ``torchrun --standalone --nproc-per-node 2`` group, alternately.
Each run times ``evaluate`` between two barriers (after start-up) and reads every process's
CPU time (all its threads), so "cores busy" = CPU seconds / wall seconds; the whole
command's wall time, start-up included, is printed too. Medians of ``--rounds``.

    python benchmarks/eval_speed.py [--images 2048] [--corruptions 3] [--model resnet20]
    python benchmarks/eval_speed.py --processes [--per-class 16] [--model resnet18] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import resource
import subprocess
import sys
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
    parser.add_argument("--model", help="default: resnet20 (resnet18 with --processes)")
    parser.add_argument("--batch-size", type=int, help="default: 256 (16 with --processes)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved bare/pipeline (or 1/2-process) rounds")
    parser.add_argument("--processes", action="store_true", help="1 vs 2 processes on an ImageNet-style folder")
    parser.add_argument("--per-class", type=int, default=16, help="--processes: photo crops per wnid (3 wnids)")
    parser.add_argument("--worker", nargs=2, metavar=("FOLDER", "TIMINGS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(Path(args.worker[0]), Path(args.worker[1]), args.model, args.batch_size)
    if args.processes:
        return scaling(args.model or "resnet18", args.batch_size or 16, args.per_class, args.rounds)
    args.model, args.batch_size = args.model or "resnet20", args.batch_size or 256
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


# ----------------------------------------------------------------------------- 1 vs 2 processes

SCALING_UNITS = dict(benchmarks="imagenet-c", corruptions=["gaussian_noise"], severities=[3])


def worker(folder: Path, timings: Path, model_name: str, batch_size: int) -> None:
    """One process of a run (under torchrun): time ``evaluate`` between barriers; rank 0 writes every timing."""
    from pushpull.engine.distributed import all_gather_object, process_group

    model = pushpull.create_model(model_name, num_classes=3).eval()
    with process_group("cpu") as ctx:
        evaluate(model, data=folder, limit=2, batch_size=batch_size, baseline=None, progress=False, **SCALING_UNITS)
        all_gather_object(None, ctx)  # a barrier: start-up (imports, a first batch) is not timed
        wall, cpu = time.perf_counter(), _cpu_seconds()
        evaluate(model, data=folder, batch_size=batch_size, baseline=None, progress=False, **SCALING_UNITS)
        all_gather_object(None, ctx)
        mine = (time.perf_counter() - wall, _cpu_seconds() - cpu)
        every = all_gather_object(mine, ctx)
    if ctx.is_main:
        timings.write_text(json.dumps({"wall": max(w for w, _ in every), "cpu": sum(c for _, c in every)}))


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # every thread of this process
    return usage.ru_utime + usage.ru_stime


def scaling(model: str, batch_size: int, per_class: int, rounds: int) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from conftest import write_photo_imagenet

    runs: dict[int, list[dict]] = {1: [], 2: []}
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "val"
        n = len(write_photo_imagenet(folder, per_class=per_class))
        images = n * (1 + len(SCALING_UNITS["corruptions"]))
        for _ in range(rounds):  # alternated, so drifting machine load hits both alike
            for nproc in (1, 2):
                timings = Path(tmp) / "timings.json"
                tic = time.perf_counter()
                subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                                str(nproc), __file__, "--worker", str(folder), str(timings), "--model", model,
                                "--batch-size", str(batch_size)], check=True, env=os.environ.copy())
                runs[nproc].append({**json.loads(timings.read_text()), "command": time.perf_counter() - tic})
    print(f"model {model} (3 classes), batch {batch_size}, {os.cpu_count()} CPUs; {n} photo crops 256x256 "
          f"x (clean + {', '.join(SCALING_UNITS['corruptions'])} s3 generated) = {images} images per run; "
          f"medians of {rounds} alternated rounds; machine load average {load:.1f} before, "
          f"{os.getloadavg()[0]:.1f} after")
    rate = {}
    for nproc, rounds in runs.items():
        rate[nproc] = np.median([images / r["wall"] for r in rounds])
        busy = np.median([r["cpu"] / r["wall"] for r in rounds])
        command = np.median([r["command"] for r in rounds])
        print(f"{nproc} process{'es' if nproc > 1 else '  '}: {rate[nproc]:6.1f} images/s, {busy:.2f} cores busy "
              f"(CPU s / wall s); whole command {command:.1f} s with start-up")
    ratios = [(images / b["wall"]) / (images / a["wall"]) for a, b in zip(runs[1], runs[2])]
    print(f"ratio 2/1 processes: {rate[2] / rate[1]:.2f} (rounds: {', '.join(f'{r:.2f}' for r in ratios)})")


if __name__ == "__main__":
    main()
