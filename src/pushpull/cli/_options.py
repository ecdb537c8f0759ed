"""Options shared by several commands: one spelling, one validator, one help text each.

The validators are argparse ``type=`` functions, so a bad value is a usage error
(exit status 2) with a one-line message naming the option and the value.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping, Sequence

from pushpull._names import check_name, check_names, split_names
from pushpull.data.robustness_sets import SEVERITIES, check_severities


# --------------------------------------------------------------------------- value types


def positive_int(text: str) -> int:
    """An integer >= 1 (``--batch-size``, ``--limit``, ...)."""
    return _int_at_least(text, 1, "a positive integer")


def non_negative_int(text: str) -> int:
    """An integer >= 0 (``--workers``: 0 means in the main process; ``--seed``)."""
    return _int_at_least(text, 0, "a non-negative integer")


def positive_float(text: str) -> float:
    """A finite number > 0 (``--timeout``, ``--checkpoint-minutes``)."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def device_name(text: str) -> str | None:
    """A device torch knows (``cpu``, ``cuda:1``, ...), checked here so a typo is a usage error; ``auto``: None."""
    if text == "auto":
        return None
    import torch

    try:
        torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"expected cpu, cuda, cuda:1, ... or auto, got {text!r}") from None
    return text


def _int_at_least(text: str, low: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value


def severities(text: str) -> list[int]:
    """``1,3,5`` -> ``[1, 3, 5]``: the library's rule (:func:`~pushpull.data.robustness_sets.check_severities`)."""
    try:
        return check_severities(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def rgb(text: str) -> tuple[float, float, float]:
    """``0.49,0.48,0.45`` -> three floats (``--mean``, ``--std``)."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"expected three comma-separated numbers R,G,B, got {text!r}")
    return values  # type: ignore[return-value]


def names(kind: str, known: Callable[[], tuple[Sequence[str], Mapping[str, Sequence[str]]]]) -> Callable[[str], list[str]]:
    """A ``type=`` for a comma list of ``kind`` names (or group names), checked with close matches.

    ``known()`` returns (the names, the groups); it is called only when the option is
    given, so building the parser imports nothing heavy.
    """
    def parse(text: str) -> list[str]:
        choices, groups = known()
        try:
            return check_names(text, choices, kind, groups=groups)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    parse.__name__ = kind
    return parse


def one_name(kind: str, known: Callable[[], Sequence[str]]) -> Callable[[str], str]:
    """A ``type=`` for one ``kind`` name among ``known()`` (called only when the option is given), close matches."""
    def parse(text: str) -> str:
        try:
            return check_name(text, list(known()), kind)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    parse.__name__ = kind
    return parse


def _tables() -> Sequence[str]:
    from pushpull.data.corruptions.params import TABLES

    return list(TABLES)


def _corrupters() -> Sequence[str]:
    from pushpull.data.corruptions.per_image import CORRUPTERS

    return list(CORRUPTERS)


# --params: a parameter table (show-corruptions), or any per-image semantics (make-c --dataset folder).
table_name = one_name("parameter table", _tables)
corrupter_name = one_name("parameter table", _corrupters)


def corruption_groups() -> tuple[Sequence[str], Mapping[str, Sequence[str]]]:
    from pushpull.data.corruptions import CORRUPTION_GROUPS, CORRUPTIONS

    return CORRUPTIONS, CORRUPTION_GROUPS


def perturbation_groups() -> tuple[Sequence[str], Mapping[str, Sequence[str]]]:
    from pushpull.data.perturbations import ALL_PERTURBATIONS, HARDER_NOISE, PERTURBATIONS, VALIDATION_PERTURBATIONS

    return ALL_PERTURBATIONS, {"all": ALL_PERTURBATIONS, "benchmark": PERTURBATIONS,
                               "validation": VALIDATION_PERTURBATIONS, "harder": HARDER_NOISE}


corruption_names = names("corruption", corruption_groups)
perturbation_names = names("perturbation", perturbation_groups)


# --------------------------------------------------------------------------- shared options


def add_option(parser: argparse._ActionsContainer, *flags: str, hidden: Sequence[str] = (),
               **kwargs) -> argparse.Action:
    """``parser.add_argument(*flags, **kwargs)`` that also accepts the ``hidden`` old spellings.

    The old spellings parse as before but appear in no help or message, so scripts keep
    working while the documentation shows one spelling.
    """
    action = parser.add_argument(*flags, *hidden, **kwargs)
    action.option_strings[:] = [f for f in action.option_strings if f not in hidden]
    return action


def add_device(parser: argparse._ActionsContainer) -> None:
    """``--device cpu|cuda|cuda:1|...``; None (also ``auto``): CUDA when available, else the CPU."""
    parser.add_argument("--device", type=device_name, default=None,
                        help="cpu, cuda, cuda:1, ... (default: cuda when available)")


def add_data(parser: argparse._ActionsContainer, help: str, *, required: bool = False,
             hidden: Sequence[str] = ()) -> None:
    """``--data DIR``: the clean dataset's folder."""
    add_option(parser, "--data", hidden=hidden, required=required, metavar="DIR", help=help)


def add_severities(parser: argparse._ActionsContainer, help: str = "comma list of severities (default: 1,2,3,4,5)"
                   ) -> None:
    parser.add_argument("--severities", type=severities, default=list(SEVERITIES), metavar="S,S,...", help=help)


def add_normalization(parser: argparse._ActionsContainer, default: str) -> None:
    """``--mean R,G,B`` and ``--std R,G,B`` in [0, 1] units."""
    parser.add_argument("--mean", type=rgb, metavar="R,G,B", help=f"input normalisation mean in [0, 1] ({default})")
    parser.add_argument("--std", type=rgb, metavar="R,G,B", help=f"input normalisation std in [0, 1] ({default})")


def add_limit(parser: argparse._ActionsContainer, help: str) -> None:
    parser.add_argument("--limit", type=positive_int, default=None, metavar="N", help=help)


def add_workers(parser: argparse._ActionsContainer, help: str, default: int | None = None) -> None:
    parser.add_argument("--workers", type=non_negative_int, default=default, metavar="N", help=help)


def add_seed(parser: argparse._ActionsContainer, help: str) -> None:
    parser.add_argument("--seed", type=non_negative_int, default=0, help=help)


def add_no_progress(parser: argparse._ActionsContainer, help: str = "no progress bars") -> None:
    """``--no-progress`` (``--quiet`` is an old spelling, still accepted)."""
    add_option(parser, "--no-progress", hidden=("--quiet",), action="store_true", help=help)


def shard(text: str):  # noqa: ANN201 - engine.distributed.Shard, imported when the option is given
    """``K/N`` -> :class:`~pushpull.engine.distributed.Shard` (``--shard``)."""
    from pushpull.engine.distributed import parse_shard

    try:
        return parse_shard(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err).removeprefix(f"--shard {text!r}: ")) from None


def add_shard(parser: argparse._ActionsContainer, what: str) -> None:
    """``--shard K/N``: this job-array task's slice (0-based K); under torchrun each rank takes a part of it."""
    parser.add_argument("--shard", type=shard, default=None, metavar="K/N",
                        help=f"do slice K (from 0) of N of the {what}, e.g. $SLURM_ARRAY_TASK_ID/N "
                             "(under torchrun, each rank takes its part of it)")


def add_generation(parser: argparse.ArgumentParser, names_flag: str, names_type: Callable[[str], list[str]],
                   names_help: str, extra_datasets: Sequence[str] = ()) -> None:
    """What ``make-c`` and ``make-p`` share: where the clean data is, where to write, which images."""
    parser.add_argument("--dataset", required=True, choices=("cifar10", "cifar100", "imagenet", *extra_datasets),
                        help="clean source: CIFAR test split, or the ImageNet val folder (<data>/<wnid>/*.JPEG)"
                             + (", or any folder of images (folder)" if "folder" in extra_datasets else ""))
    add_data(parser, "folder of the clean dataset", required=True, hidden=("--root",))
    parser.add_argument("--out", required=True, help="output folder (official layout); rerun to resume")
    parser.add_argument(names_flag, type=names_type, default=None, metavar="NAMES", help=names_help)
    add_limit(parser, "only N images, evenly strided over the set (image k*total//N), labels to match")
    add_seed(parser, "seed of the per-image random streams (default 0)")
    add_workers(parser, "parallel workers (default: all cores, shared among the processes torchrun starts on a node)")
    add_no_progress(parser)
    add_shard(parser, "selected images")
    parser.add_argument("--merge", action="store_true",
                        help="CIFAR: assemble the .npy files once every --shard task is done (the same options, "
                             "without --shard); names the shards still missing")


def generation_shard(args: argparse.Namespace, ctx):  # noqa: ANN201 - engine.distributed.Shard
    """This run's job-array shard (whole without ``--shard``), after checking ``--merge`` against the others."""
    from pushpull.engine.distributed import Shard

    from . import UsageError

    if args.merge and args.shard is not None:
        raise UsageError("--merge assembles the shards' files: give it without --shard")
    if args.merge and args.dataset not in ("cifar10", "cifar100"):
        raise UsageError(f"--merge is for the CIFAR layouts; {args.dataset} outputs are one file per image and "
                         "need none")
    if args.merge and ctx.enabled:
        raise UsageError("--merge runs as one process, not under torchrun")
    return args.shard or Shard()


def shard_done(shard, command: str) -> str:  # noqa: ANN001 - engine.distributed.Shard
    """What a finished CIFAR job-array task says: what to run once all are done."""
    return (f"shard {shard} done; once all {shard.count} are, run pushpull {command} with the same options "
            "and --merge (no --shard)")


def load_clean_cifar(args: argparse.Namespace):  # noqa: ANN201 - (images, labels, indices)
    """The selected CIFAR test images, their labels and their indices in the test split."""
    from pushpull.data.cifar import load_cifar
    from pushpull.data.generate import select_indices

    images, labels = load_cifar(args.data, train=False, dataset=args.dataset)
    indices = select_indices(len(images), args.limit)
    return images[indices], labels[indices], indices
