"""``fedimage train STORE``: FLAIR's federated benchmark (or the central baseline) on a store.

Importing this module needs no training dependency; :func:`run` imports them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tqdm import tqdm

from fedimage.cli.flags import add_key_options, store_key
from fedimage.errors import OptionError
from fedimage.training.options import LABEL_KINDS, MODELS, STRATEGIES, DPOptions, SecAggOptions, TrainOptions

DEFAULTS = TrainOptions()


HELP = "benchmark federated training on a store (FLAIR's recipe; pfl-research engine)"
DESCRIPTION = "FedAvg with FLAIR's defaults on a store's train users, validated on val, tested on test"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``train`` options; defaults are :class:`~fedimage.training.options.TrainOptions`'s."""
    parser.add_argument("store", type=Path)
    add_key_options(parser)
    parser.add_argument(
        "--partition-file",
        type=Path,
        help="train on a partition overlay's clients (fedimage repartition) instead of the store's users",
    )
    parser.add_argument(
        "-o",
        "--out",
        dest="output",
        type=Path,
        required=True,
        help="folder for metrics, summary, curves, checkpoint",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace the files of a previous run in --out"
    )
    parser.add_argument(
        "--engine",
        choices=("pfl", "flower"),
        default="pfl",
        help="pfl-research's simulator (default) or Flower's simulation engine (extra flower)",
    )
    add_strategy_option(parser, "(--engine flower)")
    parser.add_argument(
        "--central", action="store_true", help="non-federated baseline: all train images pooled"
    )
    parser.add_argument("--quiet", action="store_true", help="no per-round progress bar")
    parser.add_argument(
        "--no-validation",
        action="store_true",
        help="train although the store has no val users (the last evaluated round is kept)",
    )
    add_training_options(parser)


def add_strategy_option(parser: argparse.ArgumentParser, when: str = "") -> None:
    """``--strategy``: the server's optimizer."""
    parser.add_argument(
        "--strategy",
        choices=STRATEGIES,
        default=DEFAULTS.strategy,
        help=f"the server's step {when}: fedadam (FLAIR's central Adam: eta = --server-lr, "
        "tau = --server-eps) or fedavg".replace("  ", " "),
    )


def add_training_options(parser: argparse.ArgumentParser) -> None:
    """The model, training, DP and secure-aggregation options (``train`` and ``serve`` share them)."""
    model = parser.add_argument_group("model and data")
    model.add_argument("--model", choices=MODELS, default=DEFAULTS.model)
    model.add_argument("--labels", choices=LABEL_KINDS, default=DEFAULTS.labels)
    model.add_argument("--image-size", type=int, help="crop side (default 7/8 of the store's: 224 for 256)")
    model.add_argument(
        "--max-images-per-user",
        type=int,
        default=DEFAULTS.max_images_per_user,
        help="0: no cap",
    )

    fed = parser.add_argument_group("training (FLAIR's defaults)")
    fed.add_argument("--rounds", type=int, default=DEFAULTS.rounds, help="rounds (epochs with --central)")
    fed.add_argument("--eval-every", type=int, default=DEFAULTS.eval_every)
    fed.add_argument("--seed", type=int, default=DEFAULTS.seed)
    fed.add_argument(
        "--cohort-size", type=int, default=DEFAULTS.cohort_size, help="capped at the train users"
    )
    fed.add_argument("--local-epochs", type=int, default=DEFAULTS.local_epochs)
    fed.add_argument(
        "--batch-size",
        dest="local_batch_size",
        type=int,
        default=DEFAULTS.local_batch_size,
        help="local (or central) batch",
    )
    fed.add_argument("--local-lr", type=float, default=DEFAULTS.local_lr, help="local SGD learning rate")
    fed.add_argument(
        "--local-grad-clip",
        dest="local_max_grad_norm",
        type=float,
        default=DEFAULTS.local_max_grad_norm,
        help="local gradient norm clip; 0: off",
    )
    fed.add_argument("--server-lr", type=float, default=DEFAULTS.server_lr, help="central Adam learning rate")
    fed.add_argument("--server-eps", type=float, default=DEFAULTS.server_eps, help="central Adam epsilon")
    fed.add_argument(
        "--central-lr", type=float, default=DEFAULTS.central_lr, help="Adam learning rate of --central"
    )
    fed.add_argument("--eval-batch-size", type=int, default=DEFAULTS.eval_batch_size)

    dp = parser.add_argument_group("user-level differential privacy")
    dp.add_argument("--dp-epsilon", type=float, help="target epsilon (with --dp-delta and --clip)")
    dp.add_argument("--dp-delta", type=float)
    dp.add_argument("--clip", type=float, help="L2 clipping bound of each user's model update")
    dp.add_argument(
        "--noise-cohort", type=int, help="calibrate noise for this cohort, scaled to the simulated one"
    )
    dp.add_argument(
        "--adaptive-clip", type=float, metavar="QUANTILE", help="adapt the bound to this norm quantile"
    )
    secure = parser.add_argument_group("secure aggregation (SecAgg+; extra privacy)")
    secure.add_argument(
        "--secure-aggregation",
        action="store_true",
        help="the server sees only the SecAgg+ sum of each round's user updates",
    )
    secure.add_argument(
        "--secagg-threshold", type=int, help="clients needed per round (default: majority of neighbours)"
    )
    secure.add_argument("--secagg-bits", type=int, default=32, help="modulus bits of the masked sums")
    secure.add_argument(
        "--secagg-range",
        type=float,
        help="per-coordinate bound of an update (default: DP's --clip, else lr x grad clip x local steps)",
    )
    secure.add_argument(
        "--secagg-dropout",
        type=float,
        default=0.0,
        help="simulated chance a client drops out of a round (pfl engine)",
    )


def secagg_config(args: argparse.Namespace) -> SecAggOptions | None:
    """The secure aggregation settings, or None without --secure-aggregation (its options then refused)."""
    given = [
        flag
        for flag, value in (
            ("--secagg-threshold", args.secagg_threshold),
            ("--secagg-range", args.secagg_range),
            ("--secagg-bits", None if args.secagg_bits == 32 else args.secagg_bits),
            ("--secagg-dropout", args.secagg_dropout or None),
        )
        if value is not None
    ]
    if not args.secure_aggregation:
        if given:
            raise OptionError(f"{', '.join(given)} needs --secure-aggregation")
        return None
    return SecAggOptions(
        threshold=args.secagg_threshold,
        modulus_bits=args.secagg_bits,
        clip_range=args.secagg_range,
        dropout=args.secagg_dropout,
    )


def dp_config(args: argparse.Namespace) -> DPOptions | None:
    """The DP settings, or None when no DP flag is given; a partial set is an error."""
    required = {"--dp-epsilon": args.dp_epsilon, "--dp-delta": args.dp_delta, "--clip": args.clip}
    optional = (args.noise_cohort, args.adaptive_clip)
    if all(value is None for value in (*required.values(), *optional)):
        return None
    missing = [flag for flag, value in required.items() if value is None]
    if missing:
        raise OptionError(
            f"differential privacy needs --dp-epsilon, --dp-delta and --clip; missing {', '.join(missing)}"
        )
    return DPOptions(
        epsilon=args.dp_epsilon,
        delta=args.dp_delta,
        clip=args.clip,
        noise_cohort=args.noise_cohort,
        adaptive_quantile=args.adaptive_clip,
    )


def config_from_args(args: argparse.Namespace) -> TrainOptions:
    return TrainOptions(
        model=args.model,
        labels=args.labels,
        image_size=args.image_size,
        rounds=args.rounds,
        eval_every=args.eval_every,
        seed=args.seed,
        cohort_size=args.cohort_size,
        local_epochs=args.local_epochs,
        local_batch_size=args.local_batch_size,
        local_lr=args.local_lr,
        local_max_grad_norm=args.local_max_grad_norm or None,
        server_lr=args.server_lr,
        server_eps=args.server_eps,
        strategy=args.strategy,
        max_images_per_user=args.max_images_per_user or None,
        eval_batch_size=args.eval_batch_size,
        central=getattr(args, "central", False),
        no_validation=getattr(args, "no_validation", False),
        central_lr=args.central_lr,
        dp=dp_config(args),
        secure_aggregation=secagg_config(args),
    )


def run(args: argparse.Namespace) -> int:
    """Run ``fedimage train``; returns the exit status."""
    config = config_from_args(args)
    from fedimage.training.runner import train

    train(
        args.store,
        config,
        args.output,
        engine=args.engine,
        overwrite=args.overwrite,
        log=_log,
        key=store_key(args),
        progress=not args.quiet,
        partition=args.partition_file,
    )
    return 0


def _log(message: str) -> None:
    tqdm.write(message)  # above the progress bar, when there is one
