"""Federated training in Flower's simulation engine (the ``flower`` engine).

The simulation runs fedimage's own Flower apps, the ones a real deployment runs
(:mod:`fedimage.federation`): one simulated SuperNode per client of the store (train, val and
test users; :class:`~fedimage.federation.client_data.SimulationDirectory` maps partition ids to
them), the :class:`~fedimage.federation.server_loop.FederatedRounds` ServerApp (seeded cohorts,
FedAvg or FLAIR's server Adam, user-level DP with noise on the sum, SecAgg+ over Flower
messages, per-client evaluation), and fedimage's
:class:`~fedimage.training.tracking.ValidationTracker` fed with the validation metrics pooled
from the val clients.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from fedimage.errors import OptionError
from fedimage.extras import require
from fedimage.ray_cluster import local_init_args, loopback
from fedimage.store.reader import FederatedStore
from fedimage.training.options import TrainOptions
from fedimage.training.privacy import PrivacyCalibration
from fedimage.training.tracking import ValidationTracker

torch = require("torch")


def backend_config(cpus: int | None = None) -> dict[str, Any]:
    """Ray settings for Flower's simulation: one CPU per client, as many clients at once as CPUs.

    The instance is local and stays on loopback (run it inside :func:`fedimage.ray_cluster.loopback`);
    Ray's dashboard and usage reporting stay off (nothing leaves the machine).
    """
    if cpus is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    init_args = local_init_args(cpus)
    init_args.pop("configure_logging")  # Flower configures Ray's logging itself
    return {"client_resources": {"num_cpus": 1, "num_gpus": 0.0}, "init_args": init_args}


def check_options(config: TrainOptions) -> None:
    """Refuse settings the Flower engine cannot honour, before any work starts."""
    if config.dp is not None and config.dp.adaptive_quantile is not None:
        raise OptionError("`dp.adaptive_quantile` is not available with `engine` flower; use `engine` pfl")
    if config.secure_aggregation is not None and config.secure_aggregation.dropout:
        raise OptionError(
            "`secure_aggregation.dropout` simulates dropouts in the pfl engine; with `engine` flower clients "
            "drop out for real (a deployment) and the round goes on without them"
        )


def federation_settings(
    config: TrainOptions,
    *,
    num_outputs: int,
    crop: int,
    cohort_size: int,
    calibration: PrivacyCalibration | None,
    secagg_range: float | None,
    validate: bool,
    test: bool,
    noise_seed: int | None,
    min_clients: int | None = None,
    round_timeout: float = 3600.0,
    connect_timeout: float = 600.0,
) -> Any:
    """The :class:`~fedimage.federation.server_loop.FederationSettings` of a ``fedimage train`` config."""
    from fedimage.federation.protocol import Recipe
    from fedimage.federation.server_loop import FederationSettings, SecureAggregationSettings

    recipe = Recipe(
        model=config.model,
        num_outputs=num_outputs,
        crop=crop,
        labels=config.labels,
        local_epochs=config.local_epochs,
        batch_size=config.local_batch_size,
        lr=config.local_lr,
        max_grad_norm=config.local_max_grad_norm,
        max_images_per_user=config.max_images_per_user,
        seed=config.seed,
        eval_batch_size=config.eval_batch_size,
        dp_clip=config.dp.clip if calibration is not None and config.dp is not None else None,
    )
    secure = None
    if config.secure_aggregation is not None and secagg_range is not None:
        secure = SecureAggregationSettings(
            clip_range=secagg_range,
            modulus_bits=config.secure_aggregation.modulus_bits,
            threshold=config.secure_aggregation.threshold,
        )
    return FederationSettings(
        rounds=config.rounds,
        cohort_size=cohort_size,
        recipe=recipe,
        seed=config.seed,
        eval_every=config.eval_every,
        strategy=config.strategy,
        server_lr=config.server_lr,
        server_eps=config.server_eps,
        server_betas=tuple(config.server_betas),
        min_clients=cohort_size if min_clients is None else min_clients,
        round_timeout=round_timeout,
        connect_timeout=connect_timeout,
        dp_noise_multiplier=calibration.applied_noise_multiplier if calibration is not None else None,
        noise_seed=noise_seed,
        secure_aggregation=secure,
        validate=validate,
        test=test,
    )


def run_flower(
    model: torch.nn.Module,
    store: FederatedStore,
    config: TrainOptions,
    cohort_size: int,
    tracker: ValidationTracker,
    calibration: PrivacyCalibration | None,
    *,
    cpus: int | None = None,
    log: Callable[[str], None] = print,
) -> int:
    """Train ``model`` in place for ``config.rounds`` rounds in Flower's simulation; returns rounds run.

    Facts of the federation (each round's contributors, per-client evaluation, secure
    aggregation) go to ``tracker.extra`` for the run's summary.
    """
    check_options(config)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    from fedimage.federation.client_app import make_client_app
    from fedimage.federation.client_data import SimulationDirectory
    from fedimage.federation.flwr import require_flwr
    from fedimage.federation.server_app import ServerOutcome, TrackerObserver, make_server_app
    from fedimage.training.update_bounds import clip_range_for

    simulation = require_flwr("flwr.simulation")
    splits = [split for split in ("train", "val", "test") if split in store.splits and store.users(split)]
    directory = SimulationDirectory(store.path, store.key, splits, store.partition)
    secagg_range = None
    if config.secure_aggregation is not None:
        secagg_range, origin = clip_range_for(config, max(store.users("train").values(), default=1))
        log(
            f"secure aggregation: SecAgg+ over Flower messages, updates clipped to +-{secagg_range:.4g} a "
            f"coordinate ({origin}), {config.secure_aggregation.modulus_bits}-bit modulus"
        )
    info = tracker.checkpoint_info
    settings = federation_settings(
        config,
        num_outputs=info["num_outputs"],
        crop=info["crop"],
        cohort_size=cohort_size,
        calibration=calibration,
        secagg_range=secagg_range,
        validate="val" in splits,
        test="test" in splits,
        noise_seed=config.seed,
    )
    outcome = ServerOutcome()
    server_app = make_server_app(settings, model, TrackerObserver(tracker), outcome)
    client_app = make_client_app(directory)
    with _quiet_flower(), loopback():
        simulation.run_simulation(
            server_app=server_app,
            client_app=client_app,
            num_supernodes=directory.num_partitions,
            backend_config=backend_config(cpus),
        )
    if outcome.error is not None:
        raise outcome.error
    result = outcome.result
    if result is None:
        raise OptionError("Flower's simulation ended before fedimage's ServerApp started")
    tracker.extra.update(result.summary())
    if result.secure_aggregation is not None:
        tracker.extra["secure_aggregation"] = result.secure_aggregation
    if result.completed_rounds != config.rounds:
        raise OptionError(
            f"Flower's simulation stopped after {result.completed_rounds} of {config.rounds} rounds"
        )
    return result.completed_rounds


def _quiet_flower() -> Any:
    from fedimage.federation.quiet import quiet_flower

    return quiet_flower()
