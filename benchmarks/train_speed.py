"""Training throughput (images/s) of the paper's CIFAR networks, push-pull variants vs their plain network.

One training step = forward, cross-entropy, backward and an SGD (Nesterov) update, on a
random batch, as ``pushpull train`` runs it (channels_last + AMP on CUDA). The variants
are interleaved step by step and the median step time is reported, so background load hits
all of them alike; the ratios (variant rate / plain rate) are the numbers to read.

    python benchmarks/train_speed.py [--batch 128] [--reps 10] [--threads N] [--device cpu|cuda]
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
            "densenet40_12": ("densenet40_12", "densenet40_12_pp", "densenet40_12_b1")}


def make_step(name: str, batch: int, device: torch.device, cuda_speedups: bool):
    torch.manual_seed(0)
    memory_format = torch.channels_last if cuda_speedups else torch.preserve_format
    model = create_model(name).to(device, memory_format=memory_format).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4)
    scaler = torch.amp.GradScaler(device.type, enabled=cuda_speedups)
    x = torch.randn(batch, 3, 32, 32, device=device).to(memory_format=memory_format)
    y = torch.randint(0, 10, (batch,), device=device)

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
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    print(f"device {device}, threads {torch.get_num_threads()}, batch {args.batch}, median of {args.reps} steps"
          f"{', AMP + channels_last' if cuda else ''}\n")
    print("| model | step (ms) | images/s | ratio to plain | target |")
    print("|---|---:|---:|---:|---:|")
    for family in args.families:
        steps = {name: make_step(name, args.batch, device, cuda) for name in FAMILIES[family]}
        for step in steps.values():  # warm-up: allocator, kernel choice, pull-kernel caches
            step(), step()
        times: dict[str, list[float]] = {name: [] for name in steps}
        for _ in range(args.reps):
            for name, step in steps.items():
                start = time.perf_counter()
                step()
                times[name].append(time.perf_counter() - start)
        plain = statistics.median(times[family])
        for name, samples in times.items():
            median = statistics.median(samples)
            target = {"pp": "≥ 0.95", "b1": "≥ 0.65"}.get(name.rsplit("_", 1)[-1], "")
            print(f"| {name} | {1000 * median:.1f} | {args.batch / median:.0f} | {plain / median:.3f} | {target} |")


if __name__ == "__main__":
    main()
