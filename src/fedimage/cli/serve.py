"""``fedimage serve KIT -o RUN``: the server of a real federation (a thin wrapper over ``federation.serve``).

Importing this module needs no training or Flower dependency; :func:`run` imports them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fedimage.cli.train import add_strategy_option, add_training_options, config_from_args

HELP = "run a federation's server from its kit (Flower SuperLink, TLS, node authentication)"
DESCRIPTION = (
    "Start a Flower SuperLink with the server kit's certificate, let in only the kit's nodes, train "
    "with the training flags of `fedimage train`, and write metrics.jsonl, summary.json, checkpoint.pt"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``serve`` options: the kit, where to listen, round bounds, and ``train``'s training options."""
    from fedimage.federation.options import ServeOptions

    defaults = ServeOptions()
    parser.add_argument("server_kit", type=Path, metavar="KIT", help="the kits' server folder")
    parser.add_argument(
        "-o", "--out", dest="output", type=Path, required=True, help="folder for the run's outputs"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace the files of a previous run in --out"
    )
    parser.add_argument(
        "--address",
        default=defaults.address,
        help="HOST:PORT the SuperLink listens on (0.0.0.0: every interface)",
    )
    parser.add_argument(
        "--min-clients",
        type=int,
        help="replies a round needs to proceed (default: half the cohort, rounded up)",
    )
    parser.add_argument(
        "--round-timeout",
        type=float,
        default=defaults.round_timeout,
        help="seconds a round waits for its clients' replies",
    )
    parser.add_argument(
        "--connect-timeout",
        type=float,
        default=defaults.connect_timeout,
        help="seconds to wait for --min-clients train clients at the start",
    )
    parser.add_argument(
        "--run-timeout", type=float, help="seconds the whole run may take (default: from the rounds)"
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="no TLS and no node authentication, loopback addresses only (tests on one machine)",
    )
    add_strategy_option(parser)
    add_training_options(parser)


def run(args: argparse.Namespace) -> int:
    """Run ``fedimage serve``; returns the exit status."""
    from fedimage.federation.serve import ServeOptions, serve

    options = ServeOptions(
        address=args.address,
        min_clients=args.min_clients,
        round_timeout=args.round_timeout,
        connect_timeout=args.connect_timeout,
        run_timeout=args.run_timeout,
        overwrite=args.overwrite,
        insecure=args.insecure,
    )
    serve(args.server_kit, args.output, config_from_args(args), options, log=_log)
    return 0


def _log(line: str) -> None:
    print(line, flush=True)
