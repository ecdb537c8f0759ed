"""``pushpull weights list|download|verify|import|register``: the pretrained-weights table and its cache."""

from __future__ import annotations

import argparse

from ._options import add_no_progress, positive_float


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "weights", help="list, download, verify, import or register pretrained weights",
        description="Pretrained weights: the original authors' CIFAR-10 checkpoints (downloaded once, checked "
                    "against their pinned sha256 before they are read, converted to safetensors) and your own "
                    "registered training runs. The cache is $PUSHPULL_WEIGHTS_DIR, else "
                    "<torch hub dir>/checkpoints/pushpull.",
        epilog="examples:\n  pushpull weights list\n  pushpull weights download resnet20_pp.official\n"
               "  pushpull weights import ~/Downloads/model_best.pth.tar\n"
               "  pushpull weights register runs/r20 --name my-r20 && pushpull eval my-r20 --data D",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    p = actions.add_parser("list", help="the table: names, models, measured error, cache state")
    p.add_argument("pattern", nargs="?", help="fnmatch pattern over weights or model names")
    p.add_argument("--json", action="store_true", help="every field of every entry, as JSON")
    p.set_defaults(func=_list)

    p = actions.add_parser("download", help="fetch, verify and convert weights into the cache")
    p.add_argument("names", nargs="*", help="weights or model names (default: all the original checkpoints)")
    p.add_argument("--timeout", type=positive_float, help="seconds without data before giving up (default: "
                                                 "$PUSHPULL_DOWNLOAD_TIMEOUT, else 30)")
    add_no_progress(p, "no progress bar")
    p.set_defaults(func=_download)

    p = actions.add_parser("verify", help="check the cached files against their pinned and recorded sha256")
    p.add_argument("names", nargs="*", help="weights names (default: all)")
    p.set_defaults(func=_verify)

    p = actions.add_parser("import", help="install a checkpoint downloaded by hand (recognised by its sha256)")
    p.add_argument("files", nargs="+", metavar="FILE", help="an original model_best.pth.tar")
    p.set_defaults(func=_import)

    p = actions.add_parser("register", help="keep a trained model under a weights name")
    p.add_argument("run", metavar="RUN", help="a `pushpull train` folder, or a saved model (.safetensors + .json)")
    p.add_argument("--name", required=True, help="the weights name to load it by, e.g. my-r20")
    p.add_argument("--overwrite", action="store_true", help="replace weights registered under that name")
    p.set_defaults(func=_register)


def _list(args: argparse.Namespace) -> int:
    import json

    from ..models.weights import converted_path, get_weights, list_weights

    names = list_weights(args.pattern)
    if not names:
        raise ValueError(f"no weights match {args.pattern!r}; all weights: {', '.join(list_weights())}")
    table = [get_weights(name) for name in names]
    if args.json:
        print(json.dumps([w.describe() for w in table], indent=2))
        return 0
    print(f"{'weights':<26} {'model':<18} {'top-1 error':>11} {'MB':>6}  {'cached':<6}  licence")
    for w in table:
        error = "-" if w.top1_error is None else f"{w.top1_error:.2f}%"
        cached = "yes" if converted_path(w).is_file() else "no"
        print(f"{w.name:<26} {w.model:<18} {error:>11} {w.size / 1e6:>6.2f}  {cached:<6}  {w.license.split(' (')[0]}")
    measured = sorted({w.measured_on for w in table})
    print("\nerror measured on: " + "\n                   ".join(measured))
    return 0


def _download(args: argparse.Namespace) -> int:
    from ..models.weights import OFFICIAL, get_weights, weights_file

    for name in args.names or list(OFFICIAL):
        weights = get_weights(name)
        path = weights_file(weights, progress=not args.no_progress, timeout=args.timeout)
        print(f"{weights.name}: {path}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from ..models.weights import list_weights, verify_weights

    for name in args.names or list_weights():
        print(verify_weights(name))
    return 0


def _import(args: argparse.Namespace) -> int:
    from ..models.weights import converted_path, import_weights_file

    for file in args.files:
        weights = import_weights_file(file)
        print(f"{file} is {weights.name}: installed as {converted_path(weights)}")
    return 0


def _register(args: argparse.Namespace) -> int:
    from ..models.weights import register_weights

    weights = register_weights(args.run, args.name, overwrite=args.overwrite)
    print(f"registered {args.run} as {weights.name} ({weights.model}): {weights.file}; load it with "
          f"load_model({weights.name!r}) or `pushpull eval {weights.name} ...`")
    return 0
