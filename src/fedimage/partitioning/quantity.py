"""``quantity``: quantity skew, client sizes drawn from a lognormal or a power law, contents IID."""

from __future__ import annotations

import numpy as np

from fedimage.errors import OptionError
from fedimage.partitioning._core import apportion, check_feasible, deal


def size_weights(
    num_clients: int, distribution: str, sigma: float, exponent: float, rng: np.random.Generator
) -> np.ndarray:
    """Relative client sizes: ``lognormal(0, sigma)`` (FedLab's unbalanced split) or a Pareto
    power law ``1 + pareto(exponent)`` (density ~ x^-(exponent+1): smaller exponent, heavier tail)."""
    if distribution == "lognormal":
        return rng.lognormal(0.0, sigma, num_clients)
    if distribution == "powerlaw":
        return 1.0 + rng.pareto(exponent, num_clients)
    raise OptionError(f"unknown size distribution {distribution!r}; choose lognormal or powerlaw")


def quantity_partition(
    num_images: int,
    num_clients: int,
    min_per_client: int = 1,
    seed: int = 0,
    distribution: str = "lognormal",
    sigma: float = 1.0,
    exponent: float = 1.5,
) -> np.ndarray:
    """Client per image: every client gets ``min_per_client`` images, the rest are shared in
    proportion to the drawn weights, and images are dealt from a seeded shuffle."""
    check_feasible(num_images, num_clients, min_per_client)
    rng = np.random.default_rng(seed)
    weights = size_weights(num_clients, distribution, sigma, exponent, rng)
    sizes = min_per_client + apportion(num_images - num_clients * min_per_client, weights)
    return deal(rng.permutation(num_images), sizes)
