"""Settings of a training run, validated on construction (FLAIR's recipe as defaults)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from fedimage.errors import OptionError
from fedimage.labels import LABEL_LEVELS

MODELS = ("resnet18gn", "cnn")
LABEL_KINDS = LABEL_LEVELS  # the command line's --labels choices
#: Server strategies of the ``flower`` engine (the pfl engine always runs FedAvg + central Adam).
STRATEGIES = ("fedadam", "fedavg")


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise OptionError(message)


@dataclass(frozen=True)
class DPOptions:
    """User-level central DP: clip each user's update to L2 norm ``clip``, add calibrated Gaussian noise.

    ``noise_cohort`` (FLAIR's 5,000) calibrates the noise for that cohort and scales it down
    to the simulated one; ``adaptive_quantile`` turns on Andrew et al.'s quantile-tracking
    clipping bound, starting from ``clip``.
    """

    epsilon: float
    delta: float
    clip: float
    noise_cohort: int | None = None
    adaptive_quantile: float | None = None

    def __post_init__(self) -> None:
        _check(
            self.epsilon > 0 and math.isfinite(self.epsilon), f"`dp.epsilon` must be > 0, got {self.epsilon}"
        )
        _check(0 < self.delta < 1, f"`dp.delta` must be in (0, 1), got {self.delta}")
        _check(self.clip > 0 and math.isfinite(self.clip), f"`dp.clip` must be > 0, got {self.clip}")
        _check(
            self.noise_cohort is None or self.noise_cohort >= 1,
            f"`dp.noise_cohort` must be >= 1, got {self.noise_cohort}",
        )
        _check(
            self.adaptive_quantile is None or 0 < self.adaptive_quantile < 1,
            f"`dp.adaptive_quantile` must be a quantile in (0, 1), got {self.adaptive_quantile}",
        )


@dataclass(frozen=True)
class SecAggOptions:
    """SecAgg+ of every round's user updates (see :mod:`fedimage.training.secure_aggregation`).

    ``threshold``: clients (and shares) needed for a round to finish (default a strict majority
    of a client's neighbours); ``clip_range``: the per-coordinate bound of the quantization (default
    the DP clip, else a bound derived from local training); ``dropout``: the chance, seeded, that a
    simulated client drops out during a round (spread over the protocol's four stages).
    """

    threshold: int | None = None
    modulus_bits: int = 32
    clip_range: float | None = None
    dropout: float = 0.0

    def __post_init__(self) -> None:
        _check(
            self.threshold is None or self.threshold >= 2,
            f"`secure_aggregation.threshold` must be >= 2, got {self.threshold}",
        )
        _check(
            8 <= self.modulus_bits <= 64,
            f"`secure_aggregation.modulus_bits` must be in 8..64, got {self.modulus_bits}",
        )
        _check(
            self.clip_range is None or (self.clip_range > 0 and math.isfinite(self.clip_range)),
            f"`secure_aggregation.clip_range` must be > 0, got {self.clip_range}",
        )
        _check(0 <= self.dropout < 1, f"`secure_aggregation.dropout` must be in [0, 1), got {self.dropout}")


@dataclass(frozen=True)
class TrainOptions:
    """Everything that defines a run. Defaults are FLAIR's federated benchmark settings.

    ``image_size`` None means 7/8 of the store's image side (224 for FLAIR's 256).
    With ``central`` the model trains on all train images pooled (``rounds`` epochs,
    Adam at ``central_lr``); the federated settings are then unused.
    """

    model: str = "resnet18gn"
    labels: str = "coarse"
    image_size: int | None = None
    rounds: int = 5000
    eval_every: int = 20
    seed: int = 0
    cohort_size: int = 200
    local_epochs: int = 2
    local_batch_size: int = 16
    local_lr: float = 0.01
    local_max_grad_norm: float | None = 10.0
    server_lr: float = 0.1
    server_eps: float = 0.01
    server_betas: tuple[float, float] = (0.9, 0.99)
    strategy: str = "fedadam"
    max_images_per_user: int | None = 512
    eval_batch_size: int = 512
    central: bool = False
    #: Train although the store has no validation users: the last evaluated round is kept as best.
    no_validation: bool = False
    central_lr: float = 1e-3
    dp: DPOptions | None = None
    secure_aggregation: SecAggOptions | None = None

    def __post_init__(self) -> None:
        _check(self.model in MODELS, f"`model` must be one of {', '.join(MODELS)}, got {self.model!r}")
        _check(
            self.labels in LABEL_KINDS,
            f"`labels` must be one of {', '.join(LABEL_KINDS)}, got {self.labels!r}",
        )
        _check(
            self.strategy in STRATEGIES,
            f"`strategy` must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}",
        )
        _check(
            self.image_size is None or self.image_size >= 8,
            f"`image_size` must be >= 8, got {self.image_size}",
        )
        for name in (
            "rounds",
            "eval_every",
            "cohort_size",
            "local_epochs",
            "local_batch_size",
            "eval_batch_size",
        ):
            value = getattr(self, name)
            _check(
                isinstance(value, int) and value >= 1, f"--{name.replace('_', '-')} must be >= 1, got {value}"
            )
        _check(
            self.max_images_per_user is None or self.max_images_per_user >= 1,
            f"`max_images_per_user` must be >= 1, got {self.max_images_per_user}",
        )
        for name in ("local_lr", "server_lr", "server_eps", "central_lr"):
            value = getattr(self, name)
            _check(value > 0 and math.isfinite(value), f"--{name.replace('_', '-')} must be > 0, got {value}")
        _check(
            self.local_max_grad_norm is None or self.local_max_grad_norm > 0,
            f"`local_max_grad_norm` must be > 0, got {self.local_max_grad_norm}",
        )
        _check(not (self.central and self.dp), "`central` trains without users: it cannot take DP flags")
        _check(
            not (self.central and self.secure_aggregation),
            "`central` trains without users: there is nothing to aggregate securely",
        )
        _check(
            not (self.secure_aggregation and self.dp and self.dp.adaptive_quantile),
            "`secure_aggregation` needs a fixed clipping bound: it cannot be combined with "
            "`dp.adaptive_quantile`",
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
