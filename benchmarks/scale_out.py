"""make-c on 1 vs 2 processes: images/s and CPU utilisation, measured in one run.

Each configuration is a fresh command, as a user starts it:

  1 process, no pool   ``--workers 1``: decode, corrupt and encode in the main process
  1 process            the default: a pool of worker processes sized to the cores
  2 processes          ``torchrun --standalone --nproc-per-node 2`` (gloo), each with its share of cores

on a photo folder in the ImageNet layout (real photographs, ``tests/conftest.write_photo_imagenet``;
224 px JPEGs out) and on CIFAR-10 (random images in the official layout, or ``--cifar DIR``).
The configurations run interleaved, ``--repeats`` times; the table shows medians. CPU
utilisation = CPU time of the command and all its children / wall time / cores. Start-up
(python, torch, listing, torchrun's rendezvous) is measured by running the same command again
on its finished output, which then has nothing left to make; "gen." columns subtract it: the
rate and the CPU utilisation while generating. Images = output images (clean images x
corruptions x severities).

    python benchmarks/scale_out.py [--repeats 3] [--photos-per-class 20] [--cifar-images 3000] [--cifar DIR]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pushpull

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
from conftest import write_fake_cifar10, write_photo_imagenet  # noqa: E402 - the tests' photo folder and fake CIFAR

CONFIGS = {
    "1 process, no pool": ([sys.executable, "-m", "pushpull"], ["--workers", "1"]),
    "1 process": ([sys.executable, "-m", "pushpull"], []),
    "2 processes": ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                     "-m", "pushpull"], []),
}


def run_once(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the command and every child it waited for)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    run = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - start
    if run.returncode:
        sys.exit(f"failed ({run.returncode}): {' '.join(argv)}\n{run.stderr[-2000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, float, float, float]:
    """The command's (wall, CPU) seconds, then its start-up's: the same command again, with nothing left to make
    (python, torch, listing the folder and, for torchrun, the rendezvous)."""
    return run_once(argv, env) + run_once(argv, env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--photos-per-class", type=int, default=20, help="photo crops per wnid (3 wnids)")
    parser.add_argument("--cifar-images", type=int, default=3000, help="random CIFAR test images")
    parser.add_argument("--cifar", type=Path, help="a folder holding cifar-10-batches-py to use instead")
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(pushpull.__file__).parents[1]),
                                                        os.environ.get("PYTHONPATH", "")]))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_photo_imagenet(tmp / "photos", per_class=args.photos_per_class)
        cifar = args.cifar or write_fake_cifar10(tmp / "cifar", n_test=args.cifar_images).root
        photos = 3 * args.photos_per_class
        cifar_count = args.cifar_images if args.cifar is None else 10000
        sets = {  # name: (make-c options, output images)
            "photos (ImageNet layout)": (["--dataset", "imagenet", "--data", str(tmp / "photos"), "--severities",
                                          "3"], photos * 19),  # the default: all 19 corruptions
            "CIFAR-10": (["--dataset", "cifar10", "--data", str(cifar), "--corruptions",
                          "gaussian_noise,defocus_blur,contrast,jpeg_compression", "--severities", "3", "--limit",
                          str(cifar_count)], cifar_count * 4),
        }
        times: dict[tuple[str, str], list[tuple[float, float, float, float]]] = {}
        for repeat in range(args.repeats):
            for data, (options, _) in sets.items():
                for config, (prefix, extra) in CONFIGS.items():
                    out = tmp / "out"
                    shutil.rmtree(out, ignore_errors=True)
                    argv = [*prefix, "make-c", *options, *extra, "--out", str(out)]
                    times.setdefault((data, config), []).append(timed(argv, env))
            print(f"repeat {repeat + 1}/{args.repeats} done", file=sys.stderr)

    print(f"make-c, {cores} cores, medians of {args.repeats} interleaved runs (torch {__import__('torch').__version__})")
    print(f"{'data':26} {'configuration':20} {'images/s':>9} {'CPU use':>8} {'start-up s':>11} {'gen. img/s':>11} "
          f"{'gen. CPU use':>13}")
    for data, (_, count) in sets.items():
        rates = {}
        for config in CONFIGS:
            runs = times[(data, config)]
            wall = statistics.median(w for w, *_ in runs)
            use = statistics.median(c / w / cores for w, c, *_ in runs)
            start = statistics.median(w0 for *_, w0, _ in runs)
            generating = statistics.median(w - w0 for w, _, w0, _ in runs)
            gen_use = statistics.median((c - c0) / (w - w0) / cores for w, c, w0, c0 in runs)
            rates[config] = (count / wall, count / generating)
            print(f"{data:26} {config:20} {rates[config][0]:9.1f} {use:8.0%} {start:11.1f} {rates[config][1]:11.1f} "
                  f"{gen_use:13.0%}")
        one, two = rates["1 process"], rates["2 processes"]
        print(f"{data:26} 2 processes / 1 process: {two[0] / one[0]:.2f}x ({two[1] / one[1]:.2f}x while generating); "
              f"pool / no pool: {one[0] / rates['1 process, no pool'][0]:.2f}x "
              f"({one[1] / rates['1 process, no pool'][1]:.2f}x while generating)")


if __name__ == "__main__":
    main()
