"""``fedimage keygen PATH``: a new 256-bit key file (:func:`fedimage.keygen`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from fedimage.privacy.pseudonyms import generate_key_file

HELP = "write a new 256-bit key file for pseudonyms or encryption (mode 0600)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", type=Path, help="key file to create (never overwritten)")
    parser.add_argument("--raw", action="store_true", help="32 raw bytes instead of 64 hex digits")


def run(args: argparse.Namespace) -> int:
    """Run ``fedimage keygen``; returns the exit status."""
    path = generate_key_file(args.path, raw=args.raw)
    print(f"wrote a 256-bit key to {path} (mode 0600); keep it secret, no copy is kept")
    return 0
