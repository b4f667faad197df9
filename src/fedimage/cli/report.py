"""``fedimage report STORE... -o DIR``: heterogeneity report (:func:`fedimage.heterogeneity_report`)."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "heterogeneity report of stores: stats.json, PNGs, report.html"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("stores", type=Path, nargs="+", help="one or more stores, shown side by side")
    parser.add_argument("-o", "--output", type=Path, required=True, help="folder to write into")
    parser.add_argument("--split", action="append", dest="splits", help="only this split (repeatable)")
    parser.add_argument(
        "--labels", choices=("coarse", "fine"), default="coarse", dest="level", help="label vocabulary"
    )
    parser.add_argument("--top-clients", type=int, default=30, help="clients in the heatmap")
    parser.add_argument(
        "--partition",
        action="append",
        dest="partitions",
        type=Path,
        help="an overlay of the one store given (fedimage repartition); repeat it to compare overlays",
    )


def run(args: argparse.Namespace) -> int:
    """Run ``fedimage report``; returns the exit status."""
    from fedimage.analysis.report import heterogeneity_report  # matplotlib (the `report` extra) when asked

    files = heterogeneity_report(
        args.stores, args.output, args.splits, args.level, args.top_clients, partitions=args.partitions
    )
    print(files.table)
    print(f"\nwrote {files.html} ({len(files.plots)} plots, statistics in {files.stats})")
    return 0
