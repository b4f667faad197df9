"""``fedimage repartition STORE -o PARTS.parquet --partition SCHEME``: a partition overlay of a store
(a thin wrapper over :func:`fedimage.analysis.overlay.repartition`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from fedimage.cli.flags import add_key_options, add_scheme_options, scheme_options, store_key
from fedimage.conversion.splits import SplitRatios
from fedimage.partitioning import SKEW_STRATEGIES

HELP = "deal a store's images into other clients: a small overlay file, no image rewritten"
DESCRIPTION = (
    "Write a partition overlay (image_id, split, client) of a store under another partition scheme; "
    "open the store with it (fedimage.open(store, partition=FILE), fedimage inspect/report --partition)"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("store", type=Path, help="the store to re-partition")
    parser.add_argument("-o", "--output", type=Path, required=True, help="overlay file to write (.parquet)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing overlay file")
    scheme = parser.add_argument_group("partition")
    add_scheme_options(scheme, scheme_required=True)
    scheme.add_argument("--seed", type=int, default=0, help="seeds the scheme and the clients' splits")
    scheme.add_argument(
        "--split", default="0.8,0.1,0.1", help="train,val,test client ratios (or name=ratio pairs)"
    )
    scheme.add_argument(
        "--labels",
        choices=("coarse", "fine"),
        default="coarse",
        help="labels a label-skew scheme follows",
    )
    scheme.add_argument(
        "--skew-label",
        choices=SKEW_STRATEGIES,
        default="rarest",
        help="which label of an image it follows",
    )
    add_key_options(parser)


def run(args: argparse.Namespace) -> int:
    """Run ``fedimage repartition``; returns the exit status."""
    from fedimage.analysis.overlay import repartition

    report = repartition(
        args.store,
        args.output,
        scheme_options(args, args.seed),
        SplitRatios.parse(args.split),
        labels=args.labels,
        skew=args.skew_label,
        key=store_key(args),
        overwrite=args.overwrite,
    )
    print(report.summary())
    return 0
