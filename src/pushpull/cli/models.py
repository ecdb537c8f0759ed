"""``pushpull models [PATTERN]``: the registry with parameter counts and FLOPs."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "models", help="list the registered models with parameters and FLOPs",
        description="List registered models (fnmatch PATTERN, e.g. 'resnet20*' or 'ResNet-20-b1'), with parameter "
                    "counts and forward FLOPs for one image at the native resolution (multiply-add = 2 FLOPs).")
    parser.add_argument("pattern", nargs="?", default=None, help="fnmatch pattern over model names")
    parser.add_argument("--aa", type=int, default=0, choices=(0, 2, 3, 5),
                        help="anti-aliasing filter size (0: none; 2, 3, 5)")
    parser.add_argument("--no-flops", action="store_true", help="skip the FLOP count (faster)")
    parser.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    from .._names import unknown_name_message
    from ..models import list_models, model_info
    from ..models.stats import model_stats

    names = list_models(args.pattern)
    if not names:
        raise ValueError(unknown_name_message("model pattern", args.pattern, list_models(),
                                              hint=" (no model matches it; `pushpull models` lists them all)"))
    print(f"{'model':<22} {'family':<16} {'variant':<7} {'input':<11} {'params':>12} {'GFLOPs':>9}")
    for name in names:
        info = model_info(name)
        params, flops = model_stats(name, args.aa, flops=not args.no_flops)
        size = "x".join(map(str, info.input_size))
        gflops = "-" if flops is None else f"{flops / 1e9:.3f}"
        print(f"{name:<22} {info.family:<16} {info.variant:<7} {size:<11} {params:>12,} {gflops:>9}")
    return 0
