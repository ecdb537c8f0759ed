"""``pushpull import-official PATH --model NAME --out FILE``: convert an original checkpoint to our format."""

from __future__ import annotations

import argparse

from ._options import add_option


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "import-official", help="convert an original push-pull checkpoint to a saved model",
        description="Convert a checkpoint of the original push-pull code (a legacy torch.save file) into a "
                    "pushpull saved model (.safetensors + .json sidecar), recording its input normalisation and "
                    "source. The file is read without executing code unless --allow-pickle is given.")
    parser.add_argument("path", help="the checkpoint or its folder, e.g. .../resnet-20-pp/model_best.pth.tar")
    add_option(parser, "--arch", hidden=("--model",), default=None,
               help="architecture, a registry name (resnet20_pp, densenet40_12, ...); default: from the folder name "
                    "(the same option as eval's --arch)")
    parser.add_argument("--out", required=True, type=safetensors_path, help="output weights file (.safetensors)")
    parser.add_argument("--allow-pickle", action="store_true",
                        help="allow a full unpickle (can run arbitrary code: only for files you trust)")
    parser.set_defaults(func=handler)


def safetensors_path(text: str) -> str:
    if not text.endswith(".safetensors"):
        raise argparse.ArgumentTypeError(f"expected a .safetensors file, got {text!r}")
    return text


def handler(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..models import import_official
    from ..models.io import sidecar_path

    model = import_official(args.path, args.arch, out=args.out, allow_pickle=args.allow_pickle)
    params = sum(p.numel() for p in model.parameters())
    print(f"imported {args.path} -> {args.out} (+ {sidecar_path(Path(args.out)).name}), {params:,} parameters")
    return 0
