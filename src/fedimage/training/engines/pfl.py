"""FedAvg on pfl-research's simulator (the ``pfl`` engine), with optional user-level central DP."""

from __future__ import annotations

import math
from typing import Any

from fedimage.extras import require
from fedimage.store.reader import FederatedStore
from fedimage.training.divergence import check_model
from fedimage.training.options import TrainOptions
from fedimage.training.privacy import PrivacyCalibration, clipping_indicator_noise
from fedimage.training.tracking import ValidationTracker

torch = require("torch")


def _scalar_metrics(metrics: Any) -> dict[str, float]:
    """pfl's aggregate metrics as plain floats (names as pfl prints them)."""
    values = {}
    for name, value in metrics:
        overall = getattr(value, "overall_value", value)
        try:
            number = float(overall)
        except (TypeError, ValueError):
            continue
        if math.isfinite(number):
            values[str(name)] = number
    return values


def privacy_mechanism(calibration: PrivacyCalibration, clip: float, adaptive_quantile: float | None) -> Any:
    """pfl's central Gaussian mechanism for the calibrated noise: fixed clipping or adaptive clipping."""
    privacy = require("pfl.privacy")
    adaptive = require("pfl.privacy.adaptive_clipping")
    applied = calibration.applied_noise_multiplier
    if adaptive_quantile is None:
        return privacy.CentrallyAppliedPrivacyMechanism(privacy.GaussianMechanism(clip, applied))
    return adaptive.AdaptiveClippingGaussianMechanism(
        make_gaussian_mechanism=lambda bound: privacy.GaussianMechanism(bound, applied),
        initial_clipping_bound=clip,
        clipping_indicator_noise_stddev=clipping_indicator_noise(calibration.cohort_size, applied),
        adaptive_clipping_norm_quantile=adaptive_quantile,
    )


def run_fedavg(
    model: torch.nn.Module,
    store: FederatedStore,
    config: TrainOptions,
    cohort_size: int,
    tracker: ValidationTracker,
    calibration: PrivacyCalibration | None,
    secure_aggregation: Any = None,
) -> int:
    """Train ``model`` in place for ``config.rounds`` FedAvg rounds; returns the rounds run.

    ``secure_aggregation`` (a :class:`~fedimage.training.secure_aggregation.SecureAggregation`)
    goes last among the postprocessors, so it sees clipped updates and the noise is added to its sum.
    """
    require("pfl")
    from pfl.aggregate.simulate import SimulatedBackend
    from pfl.algorithm import FederatedAveraging, NNAlgorithmParams
    from pfl.callback.base import TrainingProcessCallback
    from pfl.hyperparam import NNTrainHyperParams
    from pfl.model.pytorch import PyTorchModel

    from fedimage.loaders.pfl import FixedDenominator, StoreFederatedDataset

    train_data = StoreFederatedDataset(
        store,
        "train",
        cohort_size=cohort_size,
        labels=config.labels,
        max_images_per_user=config.max_images_per_user,
        seed=config.seed,
    )
    postprocessors: list[Any] = [FixedDenominator(cohort_size)]
    if calibration is not None and config.dp is not None:
        postprocessors.append(privacy_mechanism(calibration, config.dp.clip, config.dp.adaptive_quantile))
    server_optimizer = torch.optim.Adam(
        model.parameters(), lr=config.server_lr, eps=config.server_eps, betas=config.server_betas
    )
    pfl_model = PyTorchModel(
        model=model, local_optimizer_create=torch.optim.SGD, central_optimizer=server_optimizer
    )
    aggregator = None
    if secure_aggregation is not None:
        from fedimage.training.secure_aggregation import WithheldAggregator

        postprocessors.append(secure_aggregation)
        aggregator = WithheldAggregator()
    backend = SimulatedBackend(
        training_data=train_data, val_data=None, postprocessors=postprocessors, aggregator=aggregator
    )
    rounds_done = 0

    class Validate(TrainingProcessCallback):
        def after_central_iteration(
            self, aggregate_metrics: Any, model: Any, *, central_iteration: int
        ) -> Any:
            nonlocal rounds_done
            rounds_done = central_iteration + 1
            check_model(model.pytorch_model, rounds_done)
            tracker.round_done(rounds_done)
            if rounds_done % config.eval_every == 0 or rounds_done == config.rounds:
                tracker(rounds_done, model.pytorch_model, _scalar_metrics(aggregate_metrics))
            return False, require("pfl.metrics").Metrics()

    FederatedAveraging().run(
        algorithm_params=NNAlgorithmParams(
            central_num_iterations=config.rounds,
            evaluation_frequency=config.eval_every,
            train_cohort_size=cohort_size,
            val_cohort_size=None,
        ),
        backend=backend,
        model=pfl_model,
        model_train_params=NNTrainHyperParams(
            local_learning_rate=config.local_lr,
            local_num_epochs=config.local_epochs,
            local_batch_size=config.local_batch_size,
            local_max_grad_norm=config.local_max_grad_norm,
        ),
        callbacks=[Validate()],
        send_metrics_to_platform=False,
    )
    return rounds_done
