"""Options shared by ``make-c`` and ``make-p``: where the clean data is, where to write, which images."""

from __future__ import annotations

import argparse
from collections.abc import Sequence


def add_common(parser: argparse.ArgumentParser, names_flag: str, names_help: str) -> None:
    parser.add_argument("--dataset", required=True, choices=("cifar10", "cifar100", "imagenet"),
                        help="clean source: CIFAR test split, or the ImageNet val folder (<root>/<wnid>/*.JPEG)")
    parser.add_argument("--root", required=True, help="folder of the clean dataset")
    parser.add_argument("--out", required=True, help="output folder (official layout); rerun to resume")
    parser.add_argument(names_flag, default=None, help=names_help)
    parser.add_argument("--limit", type=int, default=None,
                        help="only N images, evenly strided over the set (image k*total//N), labels to match")
    parser.add_argument("--seed", type=int, default=0, help="seed of the per-image random streams (default 0)")
    parser.add_argument("--workers", type=int, default=None, help="parallel workers (default: all cores)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def parse_names(text: str | None, groups: dict[str, Sequence[str]], default: str, what: str) -> list[str]:
    """A comma list of names, or a group name ('all', ...); unknown names are an error naming them."""
    if text is None:
        return list(groups[default])
    names: list[str] = []
    for item in (t.strip() for t in text.split(",") if t.strip()):
        names.extend(groups.get(item, [item]))
    unknown = [n for n in names if n not in groups["all"]]
    if unknown or not names:
        raise SystemExit(f"error: unknown {what} {', '.join(unknown) or repr(text)}; choose from "
                         f"{', '.join(groups['all'])} or one of {', '.join(g for g in groups if g != 'all')}, all")
    return list(dict.fromkeys(names))


def load_clean_cifar(args: argparse.Namespace):  # noqa: ANN201 - (images, labels, indices)
    """The selected CIFAR test images, their labels and their indices in the test split."""
    from pushpull.data.cifar import load_cifar
    from pushpull.data.generate import select_indices

    images, labels = load_cifar(args.root, train=False, dataset=args.dataset)
    indices = select_indices(len(images), args.limit)
    return images[indices], labels[indices], indices
