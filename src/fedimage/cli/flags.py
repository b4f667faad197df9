"""What the command line shares: key options, and library parameter names turned into flags.

Library errors name Python parameters in backquotes (```workers` must be at least 1``); the
CLI shows the flag instead (``--workers must be at least 1``). A parameter's flag is found in
:data:`PARAMETER_FLAGS`, else from the command's own options (a parameter named like an
option's destination), so this is the one table to keep.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
from pathlib import Path
from typing import Any

from fedimage.errors import OptionError
from fedimage.partitioning import SCHEMES, SIZE_DISTRIBUTIONS, PartitionOptions
from fedimage.privacy.keys import Passphrase, StoreKey
from fedimage.privacy.pseudonyms import load_key

#: Parameters whose flag is not ``--`` + the parameter name with dashes.
PARAMETER_FLAGS = {
    "columns.image": "--image-column",
    "columns.user": "--user-column",
    "columns.labels": "--label-column",
    "columns.fine_labels": "--fine-label-column",
    "columns.split": "--split-column",
    "columns.image_id": "--image-id-column",
    "source_splits=False": "--split-column none",
    "pseudonyms": "--pseudonymize-key",
    "dp.epsilon": "--dp-epsilon",
    "dp.delta": "--dp-delta",
    "dp.clip": "--clip",
    "dp.noise_cohort": "--noise-cohort",
    "dp.adaptive_quantile": "--adaptive-clip",
    "secure_aggregation.threshold": "--secagg-threshold",
    "secure_aggregation.modulus_bits": "--secagg-bits",
    "secure_aggregation.clip_range": "--secagg-range",
    "secure_aggregation.dropout": "--secagg-dropout",
    "local_max_grad_norm": "--local-grad-clip",
    "local_batch_size": "--batch-size",
    "level": "--labels",
    "split": "--split",
    "key=KEYFILE": "--key KEYFILE",
    "key=Passphrase(...)": "--passphrase-env VARIABLE",
    "server_names": "--server-name",
    "validity_days": "--validity-days",
}
_PARAMETER = re.compile(r"`([^`\s]+)`")


def with_flags(message: str, parser: argparse.ArgumentParser) -> str:
    """``message`` with each backquoted parameter name replaced by its flag in ``parser``."""
    destinations = {
        action.dest: max(action.option_strings, key=len)
        for action in parser._actions  # argparse offers no public list of a parser's options
        if action.option_strings
    }

    def flag(match: re.Match[str]) -> str:
        name = match.group(1)
        return PARAMETER_FLAGS.get(name) or destinations.get(name) or match.group(0)

    return _PARAMETER.sub(flag, message)


def as_flags(message: str) -> str:
    """``message`` with each backquoted parameter name written as its usual flag (``--name-with-dashes``)."""

    def flag(match: re.Match[str]) -> str:
        name = match.group(1)
        return PARAMETER_FLAGS.get(name) or "--" + name.replace("_", "-")

    return _PARAMETER.sub(flag, message)


def default(options_class: type, name: str) -> Any:
    """The default of field ``name`` of a dataclass: the CLI shows the library's defaults."""
    for field in dataclasses.fields(options_class):
        if field.name == name:
            if field.default is not dataclasses.MISSING:
                return field.default
            if field.default_factory is not dataclasses.MISSING:
                return field.default_factory()
    raise KeyError(f"{options_class.__name__} has no field {name!r}")


def add_scheme_options(group: argparse._ArgumentGroup, *, scheme_required: bool = False) -> None:
    """``--partition`` and its parameters (shared by ``convert`` and ``repartition``)."""
    group.add_argument(
        "--partition",
        choices=SCHEMES if scheme_required else ("natural", *SCHEMES),
        required=scheme_required,
        help="the scheme that deals images into --num-clients clients"
        + ("" if scheme_required else "; natural: the source's users"),
    )
    group.add_argument(
        "--num-clients",
        type=int,
        default=default(PartitionOptions, "num_clients"),
        help="clients to deal images into",
    )
    group.add_argument(
        "--min-per-client",
        type=int,
        default=default(PartitionOptions, "min_per_client"),
        help="images every client gets",
    )
    group.add_argument(
        "--alpha",
        type=float,
        default=default(PartitionOptions, "alpha"),
        help="dirichlet: concentration",
    )
    group.add_argument(
        "--shards-per-client",
        type=int,
        default=default(PartitionOptions, "shards_per_client"),
        help="shards: label-sorted shards per client",
    )
    group.add_argument(
        "--classes-per-client",
        type=int,
        default=default(PartitionOptions, "classes_per_client"),
        help="pathological: labels per client",
    )
    group.add_argument(
        "--size-distribution",
        choices=SIZE_DISTRIBUTIONS,
        default=default(PartitionOptions, "size_distribution"),
        help="quantity",
    )
    group.add_argument(
        "--size-sigma",
        type=float,
        default=default(PartitionOptions, "size_sigma"),
        help="quantity: lognormal",
    )
    group.add_argument(
        "--size-exponent",
        type=float,
        default=default(PartitionOptions, "size_exponent"),
        help="quantity, powerlaw: Pareto shape",
    )
    group.add_argument(
        "--partition-key",
        metavar="COLUMN",
        help="column, continuous: the metadata column clients follow (column: one client per value)",
    )
    group.add_argument(
        "--strictness",
        type=float,
        default=default(PartitionOptions, "strictness"),
        help="continuous: 1 ranks images by the column alone, 0 ignores it (IID)",
    )


def scheme_options(args: argparse.Namespace, seed: int) -> PartitionOptions:
    """The :class:`PartitionOptions` that :func:`add_scheme_options`' flags name (``natural`` and no
    scheme: IID)."""
    return PartitionOptions(
        "iid" if args.partition in (None, "natural") else args.partition,
        num_clients=args.num_clients,
        min_per_client=args.min_per_client,
        seed=seed,
        alpha=args.alpha,
        shards_per_client=args.shards_per_client,
        classes_per_client=args.classes_per_client,
        size_distribution=args.size_distribution,
        size_sigma=args.size_sigma,
        size_exponent=args.size_exponent,
        key=args.partition_key,
        strictness=args.strictness,
    )


def add_key_options(parser: argparse.ArgumentParser) -> None:
    """``--key`` / ``--passphrase-env``: how a command opens an encrypted store."""
    group = parser.add_argument_group("encrypted stores")
    group.add_argument("--key", type=Path, metavar="KEYFILE", help="key file of an encrypted store")
    group.add_argument(
        "--passphrase-env", metavar="VARIABLE", help="environment variable holding the store's passphrase"
    )


def key_from_options(key_file: str | os.PathLike | None, passphrase_env: str | None) -> StoreKey | None:
    """The store key named by a key file option or a passphrase variable option, or None."""
    if key_file is not None and passphrase_env is not None:
        raise OptionError("give a key file or a passphrase variable, not both")
    if key_file is not None:
        return load_key(key_file)
    if passphrase_env is not None:
        return Passphrase.from_env(passphrase_env)
    return None


def store_key(args: argparse.Namespace) -> StoreKey | None:
    """The key that ``--key`` / ``--passphrase-env`` name, or None."""
    return key_from_options(args.key, args.passphrase_env)


class HelpFormatter(argparse.HelpFormatter):
    """Help that shows every option's default (none shown for flags off by default and None)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        quiet = action.default in (None, False, argparse.SUPPRESS) or not action.option_strings
        if "%(default)" in text or quiet:
            return text
        return f"{text} (default: %(default)s)".lstrip()


def show_defaults(parser: argparse.ArgumentParser) -> None:
    """Give options without a help text one, so that :class:`HelpFormatter` can show their default."""
    for action in parser._actions:  # argparse offers no public list of a parser's options
        if not action.help and action.option_strings and action.default not in (None, False):
            action.help = "(default: %(default)s)"
