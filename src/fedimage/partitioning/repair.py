"""The minimum-size repair: move images from the largest clients to the ones below the minimum.

Resampling until every client is large enough (FedLab loops forever at small alpha,
Flower gives up after 10 tries) is replaced by one deterministic pass: the largest clients
are cut down to a common level, just enough to fill every deficit, and the images they
give up are dealt to the deficient clients. It moves exactly the missing number of images.
"""

from __future__ import annotations

import numpy as np

from fedimage.partitioning._core import check_feasible, grouped_order


def donations(sizes: np.ndarray, needed: int, floor: int) -> np.ndarray:
    """Images each client gives: the largest are lowered to one level (>= ``floor``) until
    ``needed`` images are freed; ties at that level give one image more, lowest index first."""
    low, high = floor, int(sizes.max())
    # largest level whose surplus still covers the need: surplus(level) decreases with level
    while low < high:
        middle = (low + high + 1) // 2
        if np.maximum(sizes - middle, 0).sum() >= needed:
            low = middle
        else:
            high = middle - 1
    gives = np.maximum(sizes - low, 0)
    excess = int(gives.sum()) - needed
    if excess:
        above = np.flatnonzero(gives > 0)
        gives[above[:excess]] -= 1
    return gives


def enforce_min_size(
    assignment: np.ndarray,
    num_clients: int,
    min_per_client: int,
    rng: np.random.Generator,
    labels: np.ndarray | None = None,
) -> np.ndarray:
    """A copy of ``assignment`` where every client has at least ``min_per_client`` images.

    Donated images are drawn at random from each donor; with ``labels`` they are ordered by
    label within each donor before being dealt in runs, so a repaired client receives few
    distinct labels and label skew survives the repair.
    """
    check_feasible(len(assignment), num_clients, min_per_client)
    sizes = np.bincount(assignment, minlength=num_clients)
    need = np.maximum(min_per_client - sizes, 0)
    total = int(need.sum())
    if total == 0:
        return assignment
    gives = donations(sizes, total, min_per_client)
    # images grouped by client, random within; each donor's first `gives` images move
    order = grouped_order(assignment, num_clients, rng)
    starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    donors = np.flatnonzero(gives)
    moved = np.concatenate([order[starts[d] : starts[d] + gives[d]] for d in donors])
    if labels is not None:
        moved = moved[np.lexsort((labels[moved], assignment[moved]))]
    receivers = rng.permutation(np.flatnonzero(need))
    repaired = assignment.copy()
    repaired[moved] = np.repeat(receivers, need[receivers])
    return repaired
