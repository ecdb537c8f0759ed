"""``pushpull report``: the paper's tables (Markdown, CSV, LaTeX) and Figure 3 from results files."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "report", help="tables (md/csv/tex) and the CE-vs-FP figure from `pushpull eval` results",
        description="Build Table 1 style summary (E, mCE, rCE, mFR), per-corruption CE and per-perturbation FP\n"
                    "tables and Figure 3 (CE vs FP scatter) as PNG and SVG. Rows are named by each run's --label\n"
                    "(else its model, plus what tells alike runs apart) and state n and flip rule; the best value\n"
                    "per column is bold among comparable rows (same n, same flip rule); data notes are footnoted.",
        epilog="example:\n  pushpull report results/*.json --out report/\n"
               "  pushpull report results/resnet20*.json --baseline results/resnet20.json --out report-vs-r20/",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", nargs="+", metavar="RESULTS", help="results JSON files of `pushpull eval`")
    p.add_argument("--baseline", default="auto",
                   help="built-in baseline name, a results JSON file, 'auto' (the paper's) or 'none'")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--no-figure", action="store_true", help="tables only")
    p.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    from ..report import write_report

    written = write_report(args.results, args.out, baseline=None if args.baseline == "none" else args.baseline,
                           figure=not args.no_figure)
    for path in written:
        print(path)
    return 0
