"""``fedimage kits STORE -o DEST --server HOST:PORT``: wraps :func:`fedimage.federation.make_kits`."""

from __future__ import annotations

import argparse
from pathlib import Path

from fedimage.cli.flags import add_key_options, store_key
from fedimage.exports.base import DEFAULT_QUALITY
from fedimage.federation.kits import DEFAULT_VALIDITY_DAYS, make_kits

HELP = "make per-site kits for a real Flower federation: a server kit and one kit per client"
DESCRIPTION = (
    "Make the kits of a federation over a store: authority/ (the CA; it stays with you), server/ "
    "(TLS certificate, every client's node public key, settings.json; no data) and clients/SPLIT/NAME/ "
    "(that user's data as an encrypted one-user store with its own key, the CA certificate, a node "
    "key pair for Flower's SuperNode authentication, node.toml). Needs the privacy extra."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("store", type=Path)
    parser.add_argument(
        "-o",
        "--output",
        dest="destination",
        type=Path,
        required=True,
        metavar="DEST",
        help="kits folder to create",
    )
    parser.add_argument(
        "--server", required=True, metavar="HOST:PORT", help="address clients connect to ([IPv6]:PORT)"
    )
    parser.add_argument(
        "--splits", metavar="SPLIT,...", help="splits whose users become clients (default: all)"
    )
    parser.add_argument(
        "--server-name",
        action="append",
        dest="server_names",
        metavar="NAME",
        help="another DNS name or IP address of the server for its certificate (repeatable)",
    )
    parser.add_argument(
        "--validity-days",
        type=int,
        default=DEFAULT_VALIDITY_DAYS,
        metavar="DAYS",
        help="days the certificates are valid",
    )
    parser.add_argument(
        "--quality", type=int, default=DEFAULT_QUALITY, help="JPEG quality of images that must be re-encoded"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace earlier kits at the destination")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_key_options(parser)


def run(args: argparse.Namespace) -> int:
    """Run ``fedimage kits``; returns the exit status."""
    report = make_kits(
        args.store,
        args.destination,
        args.server,
        key=store_key(args),
        splits=args.splits,
        overwrite=args.overwrite,
        server_names=args.server_names or (),
        validity_days=args.validity_days,
        quality=args.quality,
        quiet=args.quiet,
    )
    print(report.summary())
    return 0
