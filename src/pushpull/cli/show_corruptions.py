"""``pushpull show-corruptions``: a contact sheet of one image under every corruption and severity."""

from __future__ import annotations

import argparse

from ._options import add_seed, corruption_names, table_name


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "show-corruptions", help="draw one image under every corruption (rows) and severity (columns)",
        description="Write a labelled PNG grid: the clean image, then severities 1-5 of each corruption, at the "
                    "benchmark's resolution (CIFAR: 32 px centre square; Tiny-ImageNet, ImageNet-64: 64 px "
                    "centre square; ImageNet: resize 256, crop 224).")
    parser.add_argument("image", help="any image file PIL can read")
    parser.add_argument("--out", required=True, type=png_path, help="PNG file to write")
    parser.add_argument("--params", type=table_name, default="cifar",
                        help="parameter table and image size: cifar, imagenet, tinyimagenet, imagenet64 "
                             "(default cifar)")
    parser.add_argument("--corruptions", type=corruption_names, default=None, metavar="NAMES",
                        help="comma list, or 'benchmark' (the 15), 'extra' (4) (default: all 19)")
    add_seed(parser, "seed of the random corruptions (default 0)")
    parser.set_defaults(func=run)


def png_path(text: str) -> str:
    if not text.lower().endswith(".png"):
        raise argparse.ArgumentTypeError(f"expected a .png file, got {text!r}")
    return text


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pushpull.data.contact_sheet import contact_sheet, prepare_image
    from pushpull.data.corruptions import CORRUPTIONS
    from pushpull._files import atomic_path

    names = args.corruptions or list(CORRUPTIONS)
    if Path(args.image).is_dir():
        raise IsADirectoryError(f"{args.image} is a folder: give one image file (make-c --dataset folder does folders)")
    if not Path(args.image).is_file():
        raise FileNotFoundError(f"image not found: {args.image}")
    out = Path(args.out)
    sheet = contact_sheet(prepare_image(args.image, args.params), names, params=args.params, seed=args.seed)
    with atomic_path(out) as tmp:
        sheet.save(tmp, format="PNG")
    print(f"wrote {out.resolve()}: {sheet.width}x{sheet.height} px, "
          f"{len(names)} corruption(s) x (clean + severities 1-5)")
    return 0
