"""Speed of the push-pull layer against a plain convolution, measured in one process.

For the paper's shapes, times forward (autograd on), forward+backward and eval-mode inference
(``no_grad``; the fast path reuses its cached pull kernel) of ``nn.Conv2d``, the reference
push-pull and the fast push-pull, and prints a Markdown table with the ratios to the plain
convolution. Measurements are interleaved (one rep of every variant per round) and the
median is reported, so background load affects all variants alike. On a shared machine,
``--clock process`` times CPU seconds of this process instead of wall seconds (steadier
under background load; with several threads it also counts their spin-waiting).

    python benchmarks/layer_speed.py [--threads 2] [--reps 15] [--device cpu] [--clock wall|process] [--shapes 0 3]

On Linux, glibc returns large freed blocks to the OS and page-faults them back on every
call; ``MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=4294967296`` in the
environment keeps them, which makes all timings (conv included) lower and steadier.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch
from torch import nn

from pushpull import PushPullConv2d

# (label, in_channels, out_channels, kernel, stride, padding, spatial size, batch): the CIFAR
# stem and first stage, the ImageNet stem (7x7 stride 2, a 15x15 pull) and its first stage (at 224
# px, and at the 160 px of benchmarks/train_speed.py)
SHAPES = [("3→16 @32², b128", 3, 16, 3, 1, 1, 32, 128), ("16→16 @32², b128", 16, 16, 3, 1, 1, 32, 128),
          ("64→64 @56², b32", 64, 64, 3, 1, 1, 56, 32), ("3→64 7×7/2 @224², b16", 3, 64, 7, 2, 3, 224, 16),
          ("64→64 @56², b16", 64, 64, 3, 1, 1, 56, 16), ("64→64 @40², b16", 64, 64, 3, 1, 1, 40, 16)]
MODES = ("fwd", "fwd+bwd", "infer")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _step(layer: nn.Module, x: torch.Tensor, grad: torch.Tensor, mode: str) -> Callable[[], None]:
    def run() -> None:
        if mode == "infer":
            with torch.no_grad():
                layer(x)
        elif mode == "fwd":
            layer(x)
        else:
            layer(x).backward(grad)
    return run


def time_variants(variants: dict[str, Callable[[], None]], reps: int, device: torch.device,
                  clock: Callable[[], float] = time.perf_counter) -> dict[str, float]:
    """Median seconds per call of each variant, interleaving the variants rep by rep."""
    for fn in variants.values():  # warm-up (allocator, kernel selection, caches)
        for _ in range(2):
            fn()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(reps):
        for name, fn in variants.items():
            _sync(device)
            start = clock()
            fn()
            _sync(device)
            times[name].append(clock() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--clock", choices=("wall", "process"), default="wall")
    parser.add_argument("--shapes", nargs="+", type=int, help="indices into SHAPES (default: all)")
    args = parser.parse_args()
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)

    print(f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}, "
          f"{args.clock} clock, median of {args.reps} interleaved reps\n")
    print("| shape | mode | conv ms | reference ms | fast ms | reference/conv | fast/conv |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for label, c_in, c_out, k, stride, pad, size, batch in [SHAPES[i] for i in args.shapes or range(len(SHAPES))]:
        layers = {
            "conv": nn.Conv2d(c_in, c_out, k, stride, pad, device=device),
            "reference": PushPullConv2d(c_in, c_out, k, stride, pad, device=device, impl="reference"),
            "fast": PushPullConv2d(c_in, c_out, k, stride, pad, device=device),
        }
        x = torch.randn(batch, c_in, size, size, device=device)
        grad = torch.randn(batch, c_out, (size + 2 * pad - k) // stride + 1, (size + 2 * pad - k) // stride + 1,
                           device=device)
        for mode in MODES:
            for layer in layers.values():
                layer.train(mode != "infer")
            xm = x.requires_grad_(mode == "fwd+bwd")
            t = time_variants({name: _step(layer, xm, grad, mode) for name, layer in layers.items()},
                              args.reps, device, clock)
            print(f"| {label} | {mode} | {t['conv'] * 1e3:.2f} | {t['reference'] * 1e3:.2f} | "
                  f"{t['fast'] * 1e3:.2f} | {t['reference'] / t['conv']:.2f}× | {t['fast'] / t['conv']:.2f}× |")
            for layer in layers.values():
                layer.zero_grad(set_to_none=True)


if __name__ == "__main__":
    main()
