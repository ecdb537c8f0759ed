"""``pushpull train``: a model of the zoo with one of the paper's recipes, every recipe field overridable."""

from __future__ import annotations

import argparse

from ..engine.stopping import RESUME_HINT
from . import UsageError
from ._options import add_data, add_device, add_limit, add_no_progress, add_seed, add_workers, non_negative_int, positive_float, positive_int


def recipe_options() -> list:
    """The recipe fields the command line overrides: all those with a help text."""
    import dataclasses

    from ..recipes import Recipe

    return [f for f in dataclasses.fields(Recipe) if "help" in f.metadata]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train", help="train a model with one of the paper's recipes (CPU, GPU, torchrun)",
        description="Train a model of the zoo with a recipe of the paper (section 4.3). Recipe fields can be "
                    "overridden one by one. Checkpoints are written every epoch, every --checkpoint-minutes and on "
                    "Ctrl-C / SIGTERM; rerunning the same command continues exactly. Multi-GPU / multi-node: launch with torchrun "
                    "(e.g. torchrun --nproc-per-node 4 -m pushpull train ...).")
    parser.add_argument("--model", help="model name (pushpull models lists them), e.g. resnet20_b1")
    parser.add_argument("--recipe", help="recipe name or JSON file (default: the paper's recipe for the model)")
    parser.add_argument("--list-recipes", action="store_true", help="list the shipped recipes and exit")
    add_data(parser, "dataset folder: CIFAR python layout, or ImageNet with train/ and val/")
    parser.add_argument("--download", action="store_true", help="download CIFAR with torchvision when missing")
    parser.add_argument("--out", help="run folder (default: runs/<model>-<recipe>[-limit<N>])")
    # Rerunning always continues; the flag of earlier versions is still accepted.
    parser.add_argument("--resume", action="store_true", help=argparse.SUPPRESS)
    add_limit(parser, "train on N images, evenly strided over the training set (image k*total//N), for a quick "
                      "look; the test set stays whole")

    group = parser.add_argument_group("recipe overrides (default: the recipe's value)")
    for f in recipe_options():
        flag = "--" + f.name.replace("_", "-")
        help_text = f.metadata["help"]
        if f.type == "bool":
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif f.type == "tuple[int, ...]":
            group.add_argument(flag, type=non_negative_int, nargs="*", default=None, metavar="EPOCH", help=help_text)
        else:
            number = positive_int if f.name in ("epochs", "batch_size") else non_negative_int
            group.add_argument(flag, type={"int": number, "float": float, "str": str}[f.type], default=None,
                               help=help_text)

    group = parser.add_argument_group("model options")
    group.add_argument("--aa", type=int, default=None, choices=(0, 2, 3, 5), help="anti-aliasing filter size (2, 3, 5)")
    group.add_argument("--alpha", type=float, default=None, help="push-pull inhibition strength")
    group.add_argument("--scale", type=float, default=None, help="push-pull pull-kernel scale")
    group.add_argument("--trainable-alpha", action="store_true", default=None, help="learn alpha per channel")

    group = parser.add_argument_group("how to run")
    add_device(group)
    add_workers(group, "data-loading processes per training process (default: up to 4, one CPU fewer than "
                       "this process may use; 0: in the training process)")
    group.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                       help="mixed precision (default: on for CUDA)")
    group.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                       help="channels-last memory format (default: on for CUDA)")
    group.add_argument("--sync-bn", action="store_true", help="synchronise BatchNorm over processes (torchrun)")
    add_seed(group, "seed of initialisation, order and augmentation")
    group.add_argument("--deterministic", action="store_true", help="deterministic algorithms only (slower on GPU)")
    group.add_argument("--checkpoint-minutes", type=positive_float, default=10.0,
                       help="also checkpoint this often in an epoch")
    group.add_argument("--max-steps", type=positive_int, default=None,
                       help="stop at this many steps in all (after a checkpoint), saving the model so far")
    add_no_progress(group, "no progress bars (logs only)")
    parser.set_defaults(func=handler, resume_hint=RESUME_HINT)


def handler(args: argparse.Namespace) -> int:
    from ..recipes import default_recipe, list_recipes, load_recipe

    if args.list_recipes:
        for name in list_recipes():
            print(f"{name:30s} {load_recipe(name).description}")
        return 0
    if not args.model:
        raise UsageError("--model is required (see pushpull models)")
    overrides = {f.name: getattr(args, f.name) for f in recipe_options() if getattr(args, f.name) is not None}
    model_kwargs = {k: getattr(args, k) for k in ("aa", "alpha", "scale", "trainable_alpha")
                    if getattr(args, k) is not None}
    recipe = args.recipe or default_recipe(args.model)
    out = args.out or f"runs/{args.model}-{recipe if '/' not in recipe else 'custom'}" + (
        f"-limit{args.limit}" if args.limit else "")
    from ..engine.train import train

    result = train(args.model, recipe, args.data, out, model_kwargs=model_kwargs, download=args.download,
                   seed=args.seed, device=args.device, workers=args.workers, amp=args.amp,
                   channels_last=args.channels_last, sync_bn=args.sync_bn, deterministic=args.deterministic,
                   checkpoint_minutes=args.checkpoint_minutes, max_steps=args.max_steps, limit=args.limit,
                   progress=not args.no_progress, **overrides)
    if result.model_path is not None:
        data = f" --data {args.data}" if args.data else ""
        print(f"saved {result.model_path} (robustness: pushpull eval {result.model_path}{data})")
    if result.stopped_by in ("SIGINT", "SIGTERM"):  # the shell's code for a process ended by that signal
        import signal

        return 128 + signal.Signals[result.stopped_by].value
    return 0
