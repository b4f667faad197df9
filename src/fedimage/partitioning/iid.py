"""``iid``: a seeded shuffle dealt into clients of equal size (never contiguous blocks)."""

from __future__ import annotations

import numpy as np

from fedimage.partitioning._core import apportion, check_feasible, deal


def iid_partition(num_images: int, num_clients: int, min_per_client: int = 1, seed: int = 0) -> np.ndarray:
    """Client per image: sizes differ by at most one, the larger ones at random clients."""
    check_feasible(num_images, num_clients, min_per_client)
    rng = np.random.default_rng(seed)
    sizes = apportion(num_images, np.ones(num_clients))[rng.permutation(num_clients)]
    return deal(rng.permutation(num_images), sizes)
