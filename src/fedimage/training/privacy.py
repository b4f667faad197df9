"""User-level DP calibration: the Gaussian noise multiplier for a run, and the epsilon it spends.

The unit of privacy is a user. Each round samples ``cohort`` of the store's ``population``
train users; every user's model update is clipped to L2 norm C, the clipped updates are
summed, Gaussian noise of standard deviation ``noise_multiplier * C`` is added and the sum is
divided by the fixed cohort size. The accountant composes ``rounds`` Poisson-subsampled
Gaussian mechanisms with sampling probability ``cohort / population`` (dp-accounting's PLD
accountant; RDP for comparison). ``population`` is always the store's number of train users:
FLAIR's pfl-research config left it at 1e7, which understates epsilon by orders of magnitude.

With a ``noise_cohort`` M larger than the simulated cohort m (FLAIR: 5,000 vs 200), the noise
is calibrated for M users a round (sampling probability M / population) and scaled by m / M,
so the simulated model sees the signal-to-noise ratio a real cohort of M would give; the
reported epsilon is that of the M-user deployment, not of the simulation itself.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

from fedimage.errors import OptionError
from fedimage.extras import require

#: Binary-search tolerance on the noise multiplier.
NOISE_TOLERANCE = 5e-3
#: Smallest noise multiplier searched: below it the PLD grid explodes and epsilon is meaningless anyway.
MIN_NOISE_MULTIPLIER = 0.5
ACCOUNTANTS = ("pld", "rdp")


@dataclass(frozen=True)
class PrivacyCalibration:
    """The noise of a DP run and the guarantee it buys."""

    target_epsilon: float
    delta: float
    rounds: int
    cohort_size: int
    noise_cohort_size: int
    population: int
    sampling_probability: float
    #: Noise standard deviation / clipping bound, for a cohort of ``noise_cohort_size``.
    noise_multiplier: float
    #: ``cohort_size / noise_cohort_size``: the factor applied to the noise in simulation.
    noise_scale: float
    #: Epsilon of ``rounds`` rounds at ``noise_multiplier`` (<= target), PLD accountant.
    epsilon: float

    @property
    def applied_noise_multiplier(self) -> float:
        """Noise standard deviation / clipping bound added to the simulated cohort's sum."""
        return self.noise_multiplier * self.noise_scale

    def to_json(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "applied_noise_multiplier": self.applied_noise_multiplier,
            "accountant": "pld",
        }


@contextlib.contextmanager
def _quiet_absl() -> Iterator[None]:
    """Silence dp-accounting's RDP warnings about orders it skips (they do not affect the bound)."""
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _dp_event(noise_multiplier: float, sampling_probability: float, rounds: int) -> Any:
    dp_event = require("dp_accounting").dp_event
    step = dp_event.GaussianDpEvent(noise_multiplier)
    if sampling_probability < 1:
        step = dp_event.PoissonSampledDpEvent(sampling_probability, step)
    return dp_event.SelfComposedDpEvent(step, rounds)


def _accountant(kind: str) -> Any:
    dp_accounting = require("dp_accounting")
    if kind == "pld":
        return dp_accounting.pld.PLDAccountant()
    if kind == "rdp":
        return dp_accounting.rdp.RdpAccountant()
    raise OptionError(f"unknown accountant {kind!r}; choose one of {', '.join(ACCOUNTANTS)}")


def epsilon_spent(
    noise_multiplier: float, sampling_probability: float, rounds: int, delta: float, accountant: str = "pld"
) -> float:
    """Epsilon at ``delta`` after ``rounds`` Poisson-subsampled Gaussian mechanisms."""
    if rounds == 0:
        return 0.0
    with _quiet_absl():
        composed = _accountant(accountant).compose(_dp_event(noise_multiplier, sampling_probability, rounds))
        return float(composed.get_epsilon(delta))


def noise_multiplier_for(
    epsilon: float, delta: float, sampling_probability: float, rounds: int, accountant: str = "pld"
) -> float:
    """Smallest noise multiplier (within :data:`NOISE_TOLERANCE`) with epsilon at ``delta`` <= ``epsilon``.

    dp-accounting's ``calibrate_dp_mechanism`` (a bracketed root search that never returns
    a value over the budget). For PLD the bracket comes from the fast RDP answer, an upper
    bound on the PLD one, which saves most of the costly PLD evaluations. A budget so loose
    that :data:`MIN_NOISE_MULTIPLIER` already meets it gets that multiplier (more noise than
    needed; the epsilon spent says so).
    """
    dp_accounting = require("dp_accounting")

    def search(kind: str, bracket: Any) -> float:
        with _quiet_absl():
            return float(
                dp_accounting.calibrate_dp_mechanism(
                    lambda: _accountant(kind),
                    lambda sigma: _dp_event(sigma, sampling_probability, rounds),
                    epsilon,
                    delta,
                    bracket,
                    tol=NOISE_TOLERANCE,
                )
            )

    if epsilon_spent(MIN_NOISE_MULTIPLIER, sampling_probability, rounds, delta, "rdp") <= epsilon:
        return MIN_NOISE_MULTIPLIER
    rdp = search("rdp", dp_accounting.LowerEndpointAndGuess(MIN_NOISE_MULTIPLIER, 2 * MIN_NOISE_MULTIPLIER))
    if accountant == "rdp":
        return rdp
    _accountant(accountant)  # validates the name
    lower = max(MIN_NOISE_MULTIPLIER, 0.7 * rdp)
    if epsilon_spent(lower, sampling_probability, rounds, delta, accountant) <= epsilon:
        return lower
    return search(accountant, dp_accounting.ExplicitBracketInterval(lower, rdp))


def calibrate(
    epsilon: float,
    delta: float,
    *,
    rounds: int,
    cohort_size: int,
    population: int,
    noise_cohort_size: int | None = None,
) -> PrivacyCalibration:
    """Noise for ``rounds`` rounds of ``cohort_size`` users out of ``population`` at (epsilon, delta)."""
    if population < 1:
        raise OptionError("DP needs a train split with at least one user; the store has none")
    if not 1 <= cohort_size <= population:
        raise OptionError(f"cohort size {cohort_size} must be between 1 and the {population} train users")
    noise_cohort = max(cohort_size, noise_cohort_size or cohort_size)
    if noise_cohort > population:
        raise OptionError(
            f"`dp.noise_cohort` {noise_cohort} exceeds the store's {population} train users: a round cannot "
            "sample more users than exist"
        )
    if rounds < 1:
        raise OptionError(f"rounds must be >= 1, got {rounds}")
    sampling_probability = noise_cohort / population
    sigma = noise_multiplier_for(epsilon, delta, sampling_probability, rounds)
    return PrivacyCalibration(
        target_epsilon=epsilon,
        delta=delta,
        rounds=rounds,
        cohort_size=cohort_size,
        noise_cohort_size=noise_cohort,
        population=population,
        sampling_probability=sampling_probability,
        noise_multiplier=sigma,
        noise_scale=cohort_size / noise_cohort,
        epsilon=epsilon_spent(sigma, sampling_probability, rounds, delta),
    )


def clipping_indicator_noise(cohort_size: int, applied_noise_multiplier: float) -> float:
    """Noise std of the summed clipped/unclipped bits in adaptive clipping (Andrew et al. 2021).

    Their recommendation is cohort / 20; pfl's mechanism needs it to exceed the model-update
    noise multiplier (the two share one Gaussian draw), so it is at least twice that.
    """
    return max(0.05 * cohort_size, 2.0 * applied_noise_multiplier)
