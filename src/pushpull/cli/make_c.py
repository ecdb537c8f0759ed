"""``pushpull make-c``: generate CIFAR-10/100-C or ImageNet-C in the official layout, or corrupt any folder."""

from __future__ import annotations

import argparse

from ..engine.stopping import RESUME_HINT
from ._options import (add_generation, add_severities, corrupter_name, corruption_names, generation_shard,
                       load_clean_cifar, positive_int, shard_done)


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
                   "'all' (19, the default, as the official release)", extra_datasets=("folder",))
    add_severities(parser)
    folder = parser.add_argument_group("--dataset folder", "every image under --data at its own size, written as "
                                       "<out>/<corruption>/<severity>/<relative path> (COCO-C style)")
    folder.add_argument("--params", type=corrupter_name, default=None,
                        help="parameter table: imagenet (default), cifar, tinyimagenet, imagenet64, or imagecorruptions "
                             "(that package's size rules, as COCO-C / Cityscapes-C)")
    folder.add_argument("--format", choices=("png", "jpeg"), default=None, help="output format (default png)")
    folder.add_argument("--quality", type=positive_int, default=None, help="JPEG quality, 1..100 (default 85)")
    parser.set_defaults(func=run, resume_hint=RESUME_HINT)


def run(args: argparse.Namespace) -> int:
    from pushpull.data import generate as gen
    from pushpull.data.corruptions import CORRUPTIONS
    from pushpull.engine.distributed import process_group

    names = args.corruptions or list(CORRUPTIONS)
    severities = args.severities
    given = [flag for flag in ("params", "format", "quality") if getattr(args, flag) is not None]
    if given and args.dataset != "folder":
        raise ValueError(f"--{', --'.join(given)}: only with --dataset folder")
    with process_group("cpu") as ctx:  # torchrun's processes (gloo), or one process
        shard = generation_shard(args, ctx)
        progress = not args.no_progress and not args.merge
        if args.dataset == "folder":  # one file per image: each process writes its own slice
            from pushpull.data.folder import make_folder_c

            count = make_folder_c(args.data, args.out, names, severities=severities, params=args.params or "imagenet",
                                  fmt=args.format or "png", quality=args.quality, seed=args.seed, limit=args.limit,
                                  shard=shard, ctx=ctx, workers=args.workers, progress=progress)
            done = f"wrote {count} images under {args.out}"
        elif args.dataset == "imagenet":
            count = gen.make_imagenet_c(args.data, args.out, names, severities=severities, limit=args.limit,
                                        seed=args.seed, workers=args.workers, progress=progress, shard=shard, ctx=ctx)
            done = f"wrote {count} images under {args.out}"
        else:
            images, labels, indices = load_clean_cifar(args)
            paths = gen.make_cifar_c(images, labels, args.out, names, severities=severities, indices=indices,
                                    seed=args.seed, workers=args.workers, dataset=args.dataset, progress=progress,
                                    shard=shard, ctx=ctx, merge=args.merge)
            done = (f"{len(paths)} corruptions x {len(severities)} severities x {len(images)} images in {args.out}"
                    if shard.whole else shard_done(shard, "make-c"))
        if ctx.is_main:
            print(done)
    return 0
