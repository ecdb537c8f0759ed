"""``pushpull make-p``: generate CIFAR-10/100-P or ImageNet-P in the official layout."""

from __future__ import annotations

import argparse

from ..engine.stopping import RESUME_HINT
from ._options import add_generation, generation_shard, load_clean_cifar, perturbation_names, shard_done


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "make-p", help="generate a -P benchmark (CIFAR-10/100-P, ImageNet-P)",
        description="Turn every clean test image into perturbation sequences and write the official layout: "
                    "<name>.npy (N, T, 32, 32, 3) + labels.npy (CIFAR), <name>/<wnid>/<file>.mp4 (ImageNet). "
                    "Interrupted runs resume: run the same command again. Runs on many processes under torchrun, "
                    "or as job-array tasks (--shard K/N, then --merge for CIFAR); the files are the same as one "
                    "process writes.")
    add_generation(parser, "--perturbations", perturbation_names,
                   "comma list of perturbations, or 'benchmark' (the 10, the default), "
                   "'validation', 'harder' (noise _2/_3), 'all'")
    parser.add_argument("--preset", default="veryslow", help="x264 preset of ImageNet-P videos (reference: veryslow)")
    parser.set_defaults(func=run, resume_hint=RESUME_HINT)


def run(args: argparse.Namespace) -> int:
    from pushpull.data import generate as gen
    from pushpull.data.perturbations import PERTURBATIONS
    from pushpull.engine.distributed import process_group

    names = args.perturbations or list(PERTURBATIONS)
    with process_group("cpu") as ctx:  # torchrun's processes (gloo), or one process
        shard = generation_shard(args, ctx)
        common = dict(seed=args.seed, workers=args.workers, progress=not args.no_progress and not args.merge,
                      shard=shard, ctx=ctx)
        if args.dataset == "imagenet":
            count = gen.make_imagenet_p(args.data, args.out, names, limit=args.limit, preset=args.preset, **common)
            done = f"wrote {count} videos under {args.out}"
        else:
            images, labels, indices = load_clean_cifar(args)
            paths = gen.make_cifar_p(images, labels, args.out, names, indices=indices, dataset=args.dataset,
                                    merge=args.merge, **common)
            done = (f"{len(paths)} perturbations x {len(images)} images in {args.out}" if shard.whole
                    else shard_done(shard, "make-p"))
        if ctx.is_main:
            print(done)
    return 0
