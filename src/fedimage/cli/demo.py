"""``fedimage demo``: convert the embedded sample and summarize it (:func:`fedimage.convert_sample`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from fedimage.analysis.summary import format_summary, summarize
from fedimage.cli.convert import report_text
from fedimage.conversion.sample import convert_sample
from fedimage.imaging.standardize import STORAGE_MODES

HELP = "convert the embedded Open Clip Art sample and summarize it"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", type=Path, default=Path("out/sample.h5"), help="store to write")
    parser.add_argument("--storage", choices=STORAGE_MODES, default="jpeg", help="how images are stored")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Run ``fedimage demo``; returns the exit status."""
    report = convert_sample(args.output, storage=args.storage, workers=args.workers, quiet=args.quiet)
    print(report_text(report))
    print()
    print(format_summary(summarize(args.output)))
    return 0
