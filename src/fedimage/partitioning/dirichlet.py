"""``dirichlet``: label skew, each label's images split by proportions drawn from Dir(alpha).

The scheme of Hsu et al. (2019) as in FedLab's ``hetero_dir`` and Flower's
``DirichletPartitioner``: for every label a vector over clients is drawn from a symmetric
Dirichlet with concentration ``alpha`` (small: each label on few clients; large: close to
IID) and the label's images are cut by it. Instead of redrawing until every client has its
minimum, one :func:`~fedimage.partitioning.repair.enforce_min_size` pass tops up the small
clients, so it finishes in O(N log N) for any alpha.
"""

from __future__ import annotations

import numpy as np

from fedimage.partitioning._core import CLIENT_DTYPE, by_class_order, check_feasible, label_codes
from fedimage.partitioning.repair import enforce_min_size


def dirichlet_proportions(
    num_classes: int, num_clients: int, alpha: float, rng: np.random.Generator
) -> np.ndarray:
    """[classes, clients] rows from Dir(alpha); a row that underflows (alpha near 0) becomes its
    limit: the whole label on one random client."""
    proportions = rng.dirichlet(np.full(num_clients, alpha), size=num_classes)
    sums = proportions.sum(axis=1)
    broken = ~np.isfinite(sums) | (sums <= 0)
    if broken.any():
        proportions[broken] = 0.0
        proportions[np.flatnonzero(broken), rng.integers(num_clients, size=int(broken.sum()))] = 1.0
        sums = proportions.sum(axis=1)
    return proportions / sums[:, None]


def split_counts(class_sizes: np.ndarray, proportions: np.ndarray) -> np.ndarray:
    """[classes, clients] image counts: each row cut at the rounded cumulative proportions."""
    cuts = np.rint(np.cumsum(proportions, axis=1) * class_sizes[:, None]).astype(np.int64)
    cuts[:, -1] = class_sizes
    return np.diff(cuts, axis=1, prepend=0)


def dirichlet_partition(
    labels: np.ndarray, num_clients: int, alpha: float = 0.5, min_per_client: int = 1, seed: int = 0
) -> np.ndarray:
    """Client per image for one integer label per image."""
    num_images = len(labels)
    check_feasible(num_images, num_clients, min_per_client)
    codes, num_classes = label_codes(labels, num_images, "dirichlet")
    rng = np.random.default_rng(seed)
    counts = split_counts(
        np.bincount(codes, minlength=num_classes), dirichlet_proportions(num_classes, num_clients, alpha, rng)
    )
    assignment = np.empty(num_images, dtype=CLIENT_DTYPE)
    clients = np.tile(np.arange(num_clients, dtype=CLIENT_DTYPE), num_classes)
    assignment[by_class_order(codes, rng)] = np.repeat(clients, counts.ravel())
    return enforce_min_size(assignment, num_clients, min_per_client, rng, labels=codes)
