"""The server's step: from the sum of a round's client updates to the next global model.

The clients' deltas are summed (in plaintext, or as SecAgg+ reveals only their sum), Gaussian
noise is added to the sum when the run is private, the sum is divided by the cohort size (the
fixed denominator DP needs; without DP by the number of contributors) and the server optimizer
applies the mean delta:

- ``fedavg``: ``x += mean``;
- ``fedadam``: FLAIR's server Adam as Flower's ``FedAdam`` computes it (Keras' Adam: epsilon
  ``tau`` added to the uncorrected root, bias correction counted from ``t + 1``):
  ``m = b1 m + (1 - b1) d``, ``v = b2 v + (1 - b2) d^2``,
  ``x += eta * sqrt(1 - b2^(t+1)) / (1 - b1^(t+1)) * m / (sqrt(v) + tau)``.

Aggregation is uniform over clients (every client weighs 1), as in fedimage's pfl engine: it is
what bounds a user's influence for DP and keeps the engines comparable.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fedimage.errors import OptionError

SERVER_OPTIMIZERS = ("fedavg", "fedadam")


@dataclass
class ServerOptimizer:
    """Applies a round's mean delta to the global parameters (a flat float64 vector)."""

    name: str = "fedadam"
    lr: float = 0.1
    eps: float = 0.01
    betas: tuple[float, float] = (0.9, 0.99)
    _m: np.ndarray | None = field(default=None, repr=False)
    _v: np.ndarray | None = field(default=None, repr=False)
    _steps: int = 0

    def __post_init__(self) -> None:
        if self.name not in SERVER_OPTIMIZERS:
            raise OptionError(f"`strategy` must be one of {', '.join(SERVER_OPTIMIZERS)}, got {self.name!r}")

    def step(self, parameters: np.ndarray, mean_delta: np.ndarray) -> np.ndarray:
        """The parameters after one round."""
        if self.name == "fedavg":
            return parameters + mean_delta
        beta_1, beta_2 = self.betas
        if self._m is None or self._v is None:
            self._m = np.zeros_like(mean_delta)
            self._v = np.zeros_like(mean_delta)
        self._m = beta_1 * self._m + (1 - beta_1) * mean_delta
        self._v = beta_2 * self._v + (1 - beta_2) * np.square(mean_delta)
        t = self._steps
        self._steps += 1
        eta = self.lr * np.sqrt(1 - beta_2 ** (t + 1)) / (1 - beta_1 ** (t + 1))
        return parameters + eta * self._m / (np.sqrt(self._v) + self.eps)


@dataclass(frozen=True)
class GaussianNoise:
    """DP's noise on a round's sum: standard deviation ``multiplier * clip``, drawn from ``seed``.

    ``seed`` None draws from the OS (a deployment); a simulation passes its run seed so that a
    run is reproducible.
    """

    multiplier: float
    clip: float
    seed: int | None = None

    def add(self, total: np.ndarray, server_round: int) -> np.ndarray:
        entropy = None if self.seed is None else [self.seed, server_round, 0x6E6F6973]
        rng = np.random.default_rng(entropy)
        return total + rng.normal(0.0, self.multiplier * self.clip, size=total.shape)


def mean_delta(total: np.ndarray, contributors: int, cohort: int, noise: GaussianNoise | None) -> np.ndarray:
    """The round's mean delta: with DP, noise added and the fixed cohort size as denominator."""
    if contributors < 1:
        raise OptionError("a round needs at least one contributing client")
    if noise is None:
        return total / contributors
    return total / cohort
