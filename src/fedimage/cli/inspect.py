"""``fedimage inspect STORE``: a store's summary (:func:`fedimage.summarize`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fedimage.analysis.summary import format_summary, summarize
from fedimage.cli.flags import add_key_options, store_key
from fedimage.store.opening import open_store

HELP = "summarize a store"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("store", type=Path)
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument(
        "--partition", type=Path, help="summarize a partition overlay's clients (fedimage repartition)"
    )
    add_key_options(parser)


def run(args: argparse.Namespace) -> int:
    """Run ``fedimage inspect``; returns the exit status."""
    with open_store(args.store, key=store_key(args), partition=args.partition) as store:
        summary = summarize(store)
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0
