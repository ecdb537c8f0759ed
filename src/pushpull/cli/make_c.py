"""``pushpull make-c``: generate CIFAR-10/100-C or ImageNet-C in the official layout."""

from __future__ import annotations

import argparse

from ..engine.stopping import RESUME_HINT
from ._options import (add_generation, add_severities, corruption_names, generation_shard, load_clean_cifar,
                       shard_done)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "make-c", help="generate a -C benchmark (CIFAR-10/100-C, ImageNet-C)",
        description="Corrupt the clean test set with every corruption and severity and write the official "
                    "layout: <name>.npy + labels.npy (CIFAR), <name>/<s>/<wnid>/<file>.JPEG (ImageNet). "
                    "Interrupted runs resume: run the same command again. Runs on many processes under torchrun, "
                    "or as job-array tasks (--shard K/N, then --merge for CIFAR); the files are the same as one "
                    "process writes.")
    add_generation(parser, "--corruptions", corruption_names,
                   "comma list of corruptions, or 'benchmark' (the 15), 'extra' (4), "
                   "'all' (19, the default, as the official release)")
    add_severities(parser)
    parser.set_defaults(func=run, resume_hint=RESUME_HINT)


def run(args: argparse.Namespace) -> int:
    from pushpull.data import generate as gen
    from pushpull.data.corruptions import CORRUPTIONS
    from pushpull.engine.distributed import process_group

    names = args.corruptions or list(CORRUPTIONS)
    severities = args.severities
    with process_group("cpu") as ctx:  # torchrun's processes (gloo), or one process
        shard = generation_shard(args, ctx)
        common = dict(severities=severities, seed=args.seed, workers=args.workers,
                      progress=not args.no_progress and not args.merge, shard=shard, ctx=ctx)
        if args.dataset == "imagenet":
            count = gen.make_imagenet_c(args.data, args.out, names, limit=args.limit, **common)
            done = f"wrote {count} images under {args.out}"
        else:
            images, labels, indices = load_clean_cifar(args)
            paths = gen.make_cifar_c(images, labels, args.out, names, indices=indices, dataset=args.dataset,
                                    merge=args.merge, **common)
            done = (f"{len(paths)} corruptions x {len(severities)} severities x {len(images)} images in {args.out}"
                    if shard.whole else shard_done(shard, "make-c"))
        if ctx.is_main:
            print(done)
    return 0
