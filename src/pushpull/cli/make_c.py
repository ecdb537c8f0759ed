"""``pushpull make-c``: generate CIFAR-10/100-C or ImageNet-C in the official layout."""

from __future__ import annotations

import argparse

from ._options import add_common, load_clean_cifar, parse_names


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "make-c", help="generate a -C benchmark (CIFAR-10/100-C, ImageNet-C)",
        description="Corrupt the clean test set with every corruption and severity and write the official "
                    "layout: <name>.npy + labels.npy (CIFAR), <name>/<s>/<wnid>/<file>.JPEG (ImageNet). "
                    "Interrupted runs resume: run the same command again.")
    add_common(parser, "--corruptions", "comma list of corruptions, or 'benchmark' (the 15), 'extra' (4), "
                                        "'all' (19, the default, as the official release)")
    parser.add_argument("--severities", default="1,2,3,4,5", help="comma list of severities (default 1,2,3,4,5)")
    parser.set_defaults(func=run)


def parse_severities(text: str) -> list[int]:
    try:
        severities = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        severities = []
    if not severities or any(s not in range(1, 6) for s in severities) or len(set(severities)) != len(severities):
        raise SystemExit(f"error: --severities must be distinct values from 1..5, got {text!r}")
    return severities


def run(args: argparse.Namespace) -> int:
    from pushpull.data.corruptions import BENCHMARK_CORRUPTIONS, CORRUPTIONS, EXTRA_CORRUPTIONS
    from pushpull.data import generate as gen

    groups = {"all": CORRUPTIONS, "benchmark": BENCHMARK_CORRUPTIONS, "extra": EXTRA_CORRUPTIONS}
    names = parse_names(args.corruptions, groups, "all", "corruption")
    severities = parse_severities(args.severities)
    progress = not args.no_progress
    if args.dataset == "imagenet":
        count = gen.make_imagenet_c(args.root, args.out, names, severities=severities, limit=args.limit,
                                   seed=args.seed, workers=args.workers, progress=progress)
        print(f"wrote {count} images under {args.out}")
        return 0
    images, labels, indices = load_clean_cifar(args)
    paths = gen.make_cifar_c(images, labels, args.out, names, severities=severities, indices=indices, seed=args.seed,
                            workers=args.workers, dataset=args.dataset, progress=progress)
    print(f"{len(paths)} corruptions x {len(severities)} severities x {len(images)} images in {args.out}")
    return 0
