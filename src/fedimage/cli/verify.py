"""``fedimage verify STORE``: re-check structure and checksums (:func:`fedimage.verify_store`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from fedimage.cli.flags import add_key_options, store_key
from fedimage.store.verify import verify_store

HELP = "re-check a store's structure and checksums"
EXIT_FAILED = 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("store", type=Path)
    parser.add_argument("--decode", action="store_true", help="also decode every stored JPEG")
    add_key_options(parser)


def run(args: argparse.Namespace) -> int:
    """Run ``fedimage verify``; returns the exit status (1 when a problem was found)."""
    report = verify_store(args.store, decode=args.decode, key=store_key(args))
    for problem in report.problems:
        print(f"BAD {problem}")
    status = "OK" if report.ok else f"FAILED ({len(report.problems)} problems)"
    print(
        f"{status}: {report.path}: {report.users_checked} user groups, {report.images_checked} images checked"
    )
    return 0 if report.ok else EXIT_FAILED
