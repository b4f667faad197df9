"""``fedimage export STORE --to FORMAT DEST``: a thin wrapper over :func:`fedimage.export`."""

from __future__ import annotations

import argparse
from pathlib import Path

from fedimage.cli.flags import add_key_options, default, store_key
from fedimage.exports import EXPORT_FORMATS, ExportOptions, export

HELP = "export a store (ml-flair HDF5/TFRecords, folders, Parquet, client bundles)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("store", type=Path)
    parser.add_argument("--to", required=True, choices=EXPORT_FORMATS, help="format to write")
    parser.add_argument("destination", type=Path, help="file (flair-central) or folder to create")
    parser.add_argument(
        "--quality", type=int, default=default(ExportOptions, "quality"), help="JPEG quality for raw stores"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing destination")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_key_options(parser)


def run(args: argparse.Namespace) -> int:
    """Run ``fedimage export``; returns the exit status."""
    options = ExportOptions(overwrite=args.overwrite, quiet=args.quiet, quality=args.quality)
    print(export(args.store, args.to, args.destination, options, key=store_key(args)).summary())
    return 0
