"""``pushpull demo``: the main job, offline: a plain ConvNet vs its push-pull twin under corruptions."""

from __future__ import annotations

import argparse

from ..engine.stopping import RESUME_HINT
from ._options import add_data, add_device, add_no_progress, add_seed, corruption_names, positive_int


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo", help="train a small plain / push-pull network pair and compare their robustness (offline)",
        description="Train a small ConvNet and its push-pull twin (same seed; only the first layer differs) on "
                    "scikit-learn's handwritten digits (offline, about a minute on 2 CPU cores), evaluate both on "
                    "corrupted test images, print the table and save a plot. With --data CIFAR_DIR the same "
                    "runs on CIFAR-10 (10 epochs; much longer on a CPU). Re-running resumes and reuses the runs.")
    parser.add_argument("--out", default="pushpull-demo", help="output folder (default: ./pushpull-demo)")
    add_data(parser, "CIFAR-10 folder (python layout) instead of the digits")
    parser.add_argument("--epochs", type=positive_int, default=None, help="override the demo recipe's epochs")
    add_seed(parser, "seed of everything random")
    add_device(parser)
    parser.add_argument("--corruptions", type=corruption_names, default=None, metavar="NAMES",
                        help="comma list of corruptions to evaluate (default: noises, blurs, contrast, pixelate, jpeg)")
    add_no_progress(parser)
    parser.set_defaults(func=handler, resume_hint=RESUME_HINT)


def handler(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..demo import DEMO_CORRUPTIONS, format_table, near_chance, run_demo

    results = run_demo(args.out, args.data, epochs=args.epochs, seed=args.seed, device=args.device,
                       corruptions=args.corruptions or DEMO_CORRUPTIONS, progress=not args.no_progress)
    out = Path(args.out)
    n = results["test_images"]
    print(f"\n{results['setting']}: top-1 error, mean over severities 1-5 ({n} test images, one seed)\n")
    print(format_table(results["errors"], n))
    print("\n95% intervals (Wilson) are drawn in the plot; gaps inside them are not evidence.")
    excluded = near_chance(results["errors"], n)
    if excluded:
        print(f"Near chance for at least one network (so left out of the last mean): {', '.join(excluded)}.")
    print(f"\nplot: {out / 'results.png'}   table: {out / 'results.md'}   all numbers: {out / 'results.json'}")
    print(f"done in {results['seconds']:.0f} s")
    return 0
