"""``pushpull merge-results``: the results of a job-array evaluation from its shards' partial files."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "merge-results", help="combine the partial results of `pushpull eval --shard K/N` tasks",
        description="Add up the raw counts of every shard's partial results (written by\n"
                    "`pushpull eval ... --shard K/N`) into the results file one process would have\n"
                    "written, number for number. Refuses shards of different models, weights, data,\n"
                    "benchmarks or settings, a shard given twice, and a missing or unfinished shard.",
        epilog="example:\n  pushpull merge-results results/r50.shard-*-of-8.json --out results/r50.json",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("parts", nargs="+", metavar="PART", help="the partial results files, one per shard")
    p.add_argument("--out", required=True, metavar="FILE", help="results JSON to write (CSV beside it)")
    p.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    from ..engine.results import merge_partials, write_results
    from .eval import format_summary

    out = Path(args.out)
    results = merge_partials([Path(p) for p in args.parts])
    write_results(results, out)
    print(format_summary(results))
    print(f"results: {out} and {out.with_suffix('.csv')} (from {len(args.parts)} shards)")
    return 0
