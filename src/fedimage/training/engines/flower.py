"""Federated training in Flower's simulation engine (the ``flower`` engine), with optional user-level DP.

One Flower SuperNode per train user (partition id = index in the sorted user ids), the
ClientApp/ServerApp pair of :mod:`fedimage.training.engines.flower_apps`, Flower's ``FedAvg`` or
``FedAdam`` strategy, and fedimage's :class:`~fedimage.training.tracking.ValidationTracker`
called from the ServerApp after every ``eval_every`` rounds. DP uses Flower's
``DifferentialPrivacyServerSideFixedClipping`` with fedimage's PLD calibration.
"""

from __future__ import annotations

import os
from typing import Any

from fedimage.errors import OptionError
from fedimage.extras import require
from fedimage.ray_cluster import local_init_args, loopback
from fedimage.store.reader import FederatedStore
from fedimage.training.divergence import TrainingDiverged, check_model
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


def check_dp_support(config: TrainOptions) -> None:
    """Refuse DP settings the Flower engine cannot honour, before any work starts."""
    if config.dp is None:
        return
    if config.strategy != "fedavg":
        raise OptionError(
            "`engine` flower applies DP with Flower's DifferentialPrivacyServerSideFixedClipping, which "
            "adds noise after the inner strategy's step: use `strategy` fedavg (FedAdam's output would not "
            "be private), or `engine` pfl"
        )
    if config.dp.adaptive_quantile is not None:
        raise OptionError("`dp.adaptive_quantile` is not available with `engine` flower; use `engine` pfl")


def run_flower(
    model: torch.nn.Module,
    store: FederatedStore,
    config: TrainOptions,
    cohort_size: int,
    tracker: ValidationTracker,
    calibration: PrivacyCalibration | None,
    *,
    cpus: int | None = None,
) -> int:
    """Train ``model`` in place for ``config.rounds`` rounds in Flower's simulation; returns rounds run."""
    check_dp_support(config)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    from fedimage.loaders.flower import StorePartitioner
    from fedimage.training.engines import flower_apps

    simulation = flower_apps.require_flwr("flwr.simulation")
    partitioner = StorePartitioner(  # pickled to each client: it reopens the store (with its key)
        store.path,
        "train",
        labels=config.labels,
        max_images_per_user=config.max_images_per_user,
        key=store.key,
    )
    info = tracker.checkpoint_info
    recipe = flower_apps.LocalRecipe.from_config(config, info["num_outputs"], info["crop"])
    recorder = flower_apps.MetricsRecorder()
    dp = config.dp if calibration is not None else None
    strategy = flower_apps.build_strategy(
        config.strategy,
        cohort_size=cohort_size,
        server_lr=config.server_lr,
        server_eps=config.server_eps,
        server_betas=config.server_betas,
        dp_noise_multiplier=calibration.applied_noise_multiplier if calibration is not None else None,
        dp_clip=dp.clip if dp is not None else None,
        train_metrics=recorder,
    )
    rounds_done = 0
    diverged: list[TrainingDiverged] = []

    def on_round(server_round: int, state: dict[str, Any], train_metrics: dict[str, float]) -> None:
        nonlocal rounds_done
        rounds_done = server_round
        model.load_state_dict(state)
        try:
            check_model(model, server_round)
        except TrainingDiverged as error:
            diverged.append(error)  # raised here it would end in Flower's server thread
            raise
        tracker.round_done(server_round)
        if server_round % config.eval_every == 0 or server_round == config.rounds:
            tracker(server_round, model, train_metrics)

    server_app = flower_apps.make_server_app(
        strategy,
        model.state_dict(),
        rounds=config.rounds,
        num_nodes=partitioner.num_partitions,
        cohort_size=cohort_size,
        seed=config.seed,
        on_round=on_round,
        recorder=recorder,
    )
    client_app = flower_apps.make_client_app(partitioner, recipe)
    with flower_apps.quiet_flower(), loopback():
        simulation.run_simulation(
            server_app=server_app,
            client_app=client_app,
            num_supernodes=partitioner.num_partitions,
            backend_config=backend_config(cpus),
        )
    if diverged:
        raise diverged[0]
    if rounds_done != config.rounds:
        raise OptionError(f"Flower's simulation stopped after {rounds_done} of {config.rounds} rounds")
    return rounds_done
