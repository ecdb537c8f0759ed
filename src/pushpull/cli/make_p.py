"""``pushpull make-p``: generate CIFAR-10/100-P or ImageNet-P in the official layout."""

from __future__ import annotations

import argparse

from ..engine.stopping import RESUME_HINT
from ._options import add_generation, load_clean_cifar, perturbation_names


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "make-p", help="generate a -P benchmark (CIFAR-10/100-P, ImageNet-P)",
        description="Turn every clean test image into perturbation sequences and write the official layout: "
                    "<name>.npy (N, T, 32, 32, 3) + labels.npy (CIFAR), <name>/<wnid>/<file>.mp4 (ImageNet). "
                    "Interrupted runs resume: run the same command again.")
    add_generation(parser, "--perturbations", perturbation_names,
                   "comma list of perturbations, or 'benchmark' (the 10, the default), "
                   "'validation', 'harder' (noise _2/_3), 'all'")
    parser.add_argument("--preset", default="veryslow", help="x264 preset of ImageNet-P videos (reference: veryslow)")
    parser.set_defaults(func=run, resume_hint=RESUME_HINT)


def run(args: argparse.Namespace) -> int:
    from pushpull.data import generate as gen
    from pushpull.data.perturbations import PERTURBATIONS

    names = args.perturbations or list(PERTURBATIONS)
    progress = not args.no_progress
    if args.dataset == "imagenet":
        count = gen.make_imagenet_p(args.data, args.out, names, limit=args.limit, seed=args.seed, preset=args.preset,
                                   workers=args.workers, progress=progress)
        print(f"wrote {count} videos under {args.out}")
        return 0
    images, labels, indices = load_clean_cifar(args)
    paths = gen.make_cifar_p(images, labels, args.out, names, indices=indices, seed=args.seed, workers=args.workers,
                            dataset=args.dataset, progress=progress)
    print(f"{len(paths)} perturbations x {len(images)} images in {args.out}")
    return 0
