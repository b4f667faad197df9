"""The ``fedimage`` command line: one module per command, each a thin wrapper over the Python API.

Every command module has ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``. Library
errors name Python parameters; :func:`main` shows them as this command's flags
(:func:`fedimage.cli.flags.with_flags`) on one line, with exit status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from types import ModuleType

from fedimage._version import __version__
from fedimage.cli import (
    client,
    convert,
    demo,
    example,
    export,
    inspect,
    keygen,
    kits,
    repartition,
    report,
    serve,
    train,
    verify,
)
from fedimage.cli.flags import HelpFormatter, show_defaults, with_flags
from fedimage.errors import FedimageError

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

#: The commands, in the order ``fedimage --help`` lists them.
COMMANDS: dict[str, ModuleType] = {
    "convert": convert,
    "demo": demo,
    "inspect": inspect,
    "verify": verify,
    "keygen": keygen,
    "report": report,
    "repartition": repartition,
    "export": export,
    "kits": kits,
    "train": train,
    "serve": serve,
    "client": client,
    "example": example,
}


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The ``fedimage`` parser, and each command's own parser."""
    parser = argparse.ArgumentParser(
        prog="fedimage",
        description="Turn image collections into federated-learning stores (FLAIR-compatible HDF5).",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"fedimage {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    parsers = {}
    for name, module in COMMANDS.items():
        parsers[name] = commands.add_parser(
            name,
            help=module.HELP,
            description=getattr(module, "DESCRIPTION", module.HELP),
            formatter_class=HelpFormatter,
        )
        module.add_arguments(parsers[name])
        show_defaults(parsers[name])
    return parser, parsers


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fedimage`` command; returns the exit status."""
    parser, parsers = build_parser()
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command].run(args)
    except FedimageError as error:
        print(f"error: {with_flags(str(error), parsers[args.command])}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        resume = " (rerun with --resume to keep the shards already written)"
        print(f"interrupted{resume if args.command == 'convert' else ''}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # e.g. `fedimage inspect store.h5 | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


__all__ = ["COMMANDS", "build_parser", "main"]
