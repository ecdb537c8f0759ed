"""Training throughput (images/s) of the paper's networks, push-pull variants vs their plain network.

One training step = forward, cross-entropy, backward and an SGD (Nesterov) update, on a
random batch, as ``pushpull train`` runs it (channels_last + AMP on CUDA). The variants
are interleaved step by step and the median step time is reported, so background load hits
all of them alike; the ratios (variant rate / plain rate) are the numbers to read.

    python benchmarks/train_speed.py [--batch 128] [--reps 10] [--threads N] [--device cpu|cuda]
                                     [--families resnet20 resnet18 ...] [--imagenet-size 160] [--clock wall|process]

On a shared machine ``--clock process`` times CPU seconds of this process instead of wall seconds
(steadier under background load; with several threads it also counts their spin-waiting).

The CIFAR families train on 32x32 inputs at ``--batch``; the ImageNet ones (ResNet-18/-50) on
``--imagenet-size`` inputs at ``--imagenet-batch`` (default 160 px, batch 16).
"""

from __future__ import annotations

import argparse
import statistics
import time
from contextlib import nullcontext

import torch
import torch.nn.functional as F

from pushpull import create_model

FAMILIES = {"resnet20": ("resnet20", "resnet20_pp", "resnet20_b1"),
            "densenet40_12": ("densenet40_12", "densenet40_12_pp", "densenet40_12_b1"),
            "resnet18": ("resnet18", "resnet18_pp", "resnet18_b1"),
            "resnet50": ("resnet50", "resnet50_pp", "resnet50_b1")}
IMAGENET = {"resnet18", "resnet50"}  # 1000 classes, inputs of --imagenet-size
DEFAULT_FAMILIES = ["resnet20", "densenet40_12"]
TARGETS = {"cifar": {"pp": "≥ 0.95", "b1": "≥ 0.65"}, "imagenet": {"pp": "≥ 0.92", "b1": "≥ 0.90"}}


def make_step(name: str, batch: int, device: torch.device, cuda_speedups: bool, size: int = 32, classes: int = 10):
    torch.manual_seed(0)
    memory_format = torch.channels_last if cuda_speedups else torch.preserve_format
    model = create_model(name).to(device, memory_format=memory_format).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4)
    scaler = torch.amp.GradScaler(device.type, enabled=cuda_speedups)
    x = torch.randn(batch, 3, size, size, device=device).to(memory_format=memory_format)
    y = torch.randint(0, classes, (batch,), device=device)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.float16) if cuda_speedups else nullcontext():
            loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--reps", type=int, default=10, help="timed steps per model (median reported)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--families", nargs="+", default=DEFAULT_FAMILIES, choices=list(FAMILIES))
    parser.add_argument("--imagenet-size", type=int, default=160)
    parser.add_argument("--imagenet-batch", type=int, default=16)
    parser.add_argument("--clock", choices=("wall", "process"), default="wall")
    args = parser.parse_args()
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    print(f"device {device}, threads {torch.get_num_threads()}, {args.clock} clock, median of {args.reps} steps"
          f"{', AMP + channels_last' if cuda else ''}\n")
    print("| model | input | step (ms) | images/s | ratio to plain | target |")
    print("|---|---|---:|---:|---:|---:|")
    for family in args.families:
        imagenet = family in IMAGENET
        batch, size = (args.imagenet_batch, args.imagenet_size) if imagenet else (args.batch, 32)
        steps = {name: make_step(name, batch, device, cuda, size, 1000 if imagenet else 10)
                 for name in FAMILIES[family]}
        for step in steps.values():  # warm-up: allocator, kernel choice, pull-kernel caches
            step(), step()
        times: dict[str, list[float]] = {name: [] for name in steps}
        for _ in range(args.reps):
            for name, step in steps.items():
                start = clock()
                step()
                times[name].append(clock() - start)
        plain = statistics.median(times[family])
        for name, samples in times.items():
            median = statistics.median(samples)
            target = TARGETS["imagenet" if imagenet else "cifar"].get(name.rsplit("_", 1)[-1], "")
            print(f"| {name} | {batch}×{size}² | {1000 * median:.1f} | {batch / median:.0f} | {plain / median:.3f} | "
                  f"{target} |")


if __name__ == "__main__":
    main()
