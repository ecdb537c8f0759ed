"""``pushpull eval``: robustness of one model on the clean set and the -C/-P benchmarks."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..engine.stopping import RESUME_HINT
from . import UsageError
from ._options import (add_data, add_device, add_limit, add_no_progress, add_normalization, add_seed,
                       add_severities, add_shard, corruption_names, perturbation_names, positive_int)


def _key_value(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "eval", help="evaluate a model's robustness (E, CE, mCE, rCE, FP, mFR, T5D)",
        description="Evaluate a classifier on the clean test set and the -C/-P benchmarks. A benchmark is "
                    "read from --c-dir/--p-dir (official .npy layout) when given, else generated on the fly "
                    "from the clean test set (seeded, reproducible). Results: a JSON file (resumable) and a CSV. "
                    "Under torchrun the processes share the images and rank 0 writes the results; with --shard K/N "
                    "a job-array task writes partial results (OUT.shard-K-of-N.json) for `pushpull merge-results`.",
        epilog="examples:\n  pushpull eval runs/resnet20_pp.safetensors --data ~/data/cifar10 --limit 1000\n"
               "  pushpull eval resnet20_pp --pretrained --data D --limit 1000\n"
               "  pushpull eval resnet20 --weights w.safetensors --data D --c-dir D/CIFAR-10-C --p-dir D/CIFAR-10-P\n"
               "  pushpull eval timm:resnet18 --weights r18.pth --num-classes 10 --data D --benchmark cifar10-c\n"
               "  torchrun --nproc-per-node 8 -m pushpull eval runs/r50/model.safetensors --data VAL --benchmark imagenet-c "
               "--device cuda",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="MODEL",
                   help="saved model (.safetensors + .json), original push-pull checkpoint (file or folder), "
                        "registry name, torchvision:NAME or timm:NAME")
    p.add_argument("--weights", metavar="FILE", help="weights for a registry/torchvision/timm model")
    p.add_argument("--pretrained", nargs="?", const=True, metavar="WEIGHTS",
                   help="MODEL with its pretrained weights (the original authors' checkpoint), or with the named "
                        "weights (`pushpull weights list`); fetched into the weights cache the first time")
    p.add_argument("--allow-pickle", action="store_true",
                   help="allow a legacy checkpoint that needs a full, code-running unpickle (trusted files only)")
    p.add_argument("--arch", help="architecture of an original checkpoint whose folder name does not say "
                                   "(e.g. resnet20_pp)")
    p.add_argument("--num-classes", type=positive_int, help="number of classes of a registry/torchvision/timm model")
    p.add_argument("--model-arg", type=_key_value, action="append", default=[], metavar="KEY=VALUE",
                   help="extra keyword for the model builder, e.g. aa=2 (repeatable)")
    add_data(p, "clean test set: CIFAR root (python layout) or the ImageNet val folder (<wnid>/*.JPEG)",
             required=True)
    p.add_argument("--benchmark", default="cifar10-c,cifar10-p",
                   help="comma-separated, one dataset: cifar10-c, cifar10-p, cifar100-c, cifar100-p, imagenet-c, "
                        "imagenet-p (default: %(default)s)")
    p.add_argument("--c-dir", metavar="DIR", help="-C folder in the official layout; default: generate")
    p.add_argument("--p-dir", metavar="DIR", help="-P folder in the official layout; default: generate")
    p.add_argument("--corruptions", type=corruption_names, metavar="NAMES",
                   help="subset of corruptions, or 'benchmark' (15), 'extra' (4) (default: all 19; mCE uses the 15)")
    add_severities(p, "subset of severities (default: 1,2,3,4,5)")
    p.add_argument("--perturbations", type=perturbation_names, metavar="NAMES",
                   help="subset of perturbations, or 'all', 'validation', 'harder' (default: the 10 of mFR)")
    add_limit(p, "evaluate a strided subset of N test images / sequences")
    add_seed(p, "seed of generated benchmarks (default: 0)")
    p.add_argument("--flip-rule", choices=("hendrycks", "consecutive"), default="hendrycks",
                   help="hendrycks: noise sequences vs frame 0, others consecutive; consecutive: all "
                        "consecutive (the original push-pull code)")
    p.add_argument("--baseline", default="auto",
                   help="built-in baseline name, a results JSON file, 'auto' (the paper's) or 'none'")
    add_normalization(p, "default: the model's metadata, else the dataset's")
    p.add_argument("--label", help="the model's name in reports (default: its file's or folder's name, or the name as typed)")
    p.add_argument("--out", metavar="FILE", help="results JSON (default: results/<label>.json, see --label); CSV beside it")
    p.add_argument("--no-resume", action="store_true", help="start over even if --out holds a partial run")
    p.add_argument("--batch-size", type=positive_int, default=256,
                   help="images per forward pass; -P: whole sequences of about that many frames (default: 256)")
    add_device(p)
    add_shard(p, "test images (partial results, for merge-results)")
    add_no_progress(p)
    p.set_defaults(func=handler, resume_hint=RESUME_HINT)


def handler(args: argparse.Namespace) -> int:
    import torch

    from ..engine.distributed import process_group
    from ..engine.evaluate import evaluate
    from ..engine.results import partial_path

    _check_benchmark_options(args)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")

    from ..models.load import spec_label

    if args.no_resume:  # the same command would start over again
        args.resume_hint = "rerun without --no-resume to continue from what was saved"

    model = args.model
    if args.pretrained:
        from ..models.weights import pretrained_weights

        model = pretrained_weights(args.model, args.pretrained).name
    # The results file is named as the run is labelled: runs/r20/model.safetensors -> results/r20.json.
    stem = (args.label or spec_label(model)).replace(":", "_").replace("/", "_")
    out = Path(args.out) if args.out else Path("results") / f"{stem}.json"
    with process_group(device) as ctx:  # under torchrun: one group for the whole command
        results = evaluate(
            model, data=args.data, benchmarks=args.benchmark, c_dir=args.c_dir, p_dir=args.p_dir,
            limit=args.limit, seed=args.seed, corruptions=args.corruptions, severities=args.severities,
            perturbations=args.perturbations, flip_rule=args.flip_rule,
            baseline=None if args.baseline == "none" else args.baseline, mean=args.mean, std=args.std,
            weights=args.weights, num_classes=args.num_classes, model_kwargs=dict(args.model_arg),
            allow_pickle=args.allow_pickle, arch=args.arch, label=args.label, out=out,
            resume=not args.no_resume, batch_size=args.batch_size, device=device, progress=not args.no_progress,
            shard=args.shard)
    if not ctx.is_main:
        return 0
    if args.shard is not None:
        k, n = args.shard.index, args.shard.count
        print(f"partial results of shard {k}/{n}: {partial_path(out, args.shard)}; once all {n} shards are done: "
              f"pushpull merge-results {partial_path(out, args.shard).parent / f'{out.stem}.shard-*-of-{n}.json'} "
              f"--out {out}")
        return 0
    print(format_summary(results))
    print(f"results: {out} and {out.with_suffix('.csv')}")
    return 0


def format_summary(results: dict) -> str:
    """A short human-readable summary of a results dict."""
    s = results["summary"]
    data = results["data"]
    subset = f" (strided subset: {data['num_evaluated']} of {data['num_test_images']})" \
        if data["num_evaluated"] < data["num_test_images"] else ""
    copy = " (not the official test files: see the note above)" if data.get("official") is False else ""
    lines = [f"{results['model']['label']} on {data['dataset']}{subset}{copy}, baseline: {s['baseline'] or 'none'}"]

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.2f}%"

    def num(v: float | None, digits: int = 3) -> str:
        return "-" if v is None else f"{v:.{digits}f}"

    lines.append(f"  E {pct(s['error'])}  mCE {num(s['mCE'])}  rCE {num(s['rCE'])}  mFR {num(s['mFR'])}  "
                 f"mean CE {pct(s['mean_ce_unnormalized'])}  mFP {num(s['mFP'], 4)}  mT5D {num(s['mT5D'])}")
    for name, row in s["corruptions"].items():
        lines.append(f"  {name:<18} CE {pct(row['ce_unnormalized']):>7}  normalised {num(row['ce'])}  "
                     f"rCE {num(row['rce'])}")
    for name, row in s["perturbations"].items():
        lines.append(f"  {name:<18} FP {num(row['fp'], 4)}  FR {num(row['fr'])}  T5D {num(row['t5d'])}")
    return "\n".join(lines)


def _check_benchmark_options(args: argparse.Namespace) -> None:
    """A -C option without a -C benchmark (or -P without -P) would be ignored: say so instead."""
    from ..engine.evaluate import parse_benchmarks

    _, want_c, want_p = parse_benchmarks(args.benchmark)
    for wanted, kind, options in ((want_c, "-C", {"--c-dir": args.c_dir, "--corruptions": args.corruptions}),
                                  (want_p, "-P", {"--p-dir": args.p_dir, "--perturbations": args.perturbations})):
        given = [flag for flag, value in options.items() if value is not None]
        if given and not wanted:
            verb = "need" if len(given) > 1 else "needs"
            raise UsageError(f"{' and '.join(given)} {verb} a {kind} benchmark; --benchmark {args.benchmark} has none")
