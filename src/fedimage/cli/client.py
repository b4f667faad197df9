"""``fedimage client KIT``: one site of a real federation (a thin wrapper over ``federation.run_client``)."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "join a federation from a client kit (Flower SuperNode; the site's data stays on the site)"
DESCRIPTION = (
    "Start a Flower SuperNode with the kit's CA certificate and node key; its ClientApp trains and "
    "evaluates on this site's bundle only. Exits when the server ends the run."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``client`` options: the kit, and an optional server address override."""
    from fedimage.federation.options import ClientOptions

    defaults = ClientOptions()
    parser.add_argument(
        "kit", type=Path, metavar="KIT", help="a client kit folder (kits/clients/SPLIT/CLIENT)"
    )
    parser.add_argument("--server", help="HOST:PORT of the server (default: the kit's)")
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="no TLS and no node authentication, loopback addresses only (tests on one machine)",
    )
    parser.add_argument(
        "--max-wait",
        type=float,
        default=defaults.max_wait,
        help="seconds to keep trying to reach the server before giving up",
    )
    parser.add_argument(
        "--max-retries",
        type=int,
        default=defaults.max_retries,
        help="reconnection attempts within --max-wait",
    )


def run(args: argparse.Namespace) -> int:
    """Run ``fedimage client``; returns the exit status."""
    from fedimage.federation.node import ClientOptions, run_client

    options = ClientOptions(
        server=args.server, max_wait=args.max_wait, max_retries=args.max_retries, insecure=args.insecure
    )
    run_client(args.kit, options, log=lambda line: print(line, flush=True))
    return 0
