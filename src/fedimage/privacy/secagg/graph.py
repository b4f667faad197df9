"""The SecAgg+ communication graph: a random k-regular graph of logarithmic degree (Bell et al. 2020).

Clients are placed on a ring in a seeded random order and each is joined to its ``k/2`` nearest
ring neighbours on either side (a randomly relabelled Harary graph). A client exchanges masks and
secret shares only with its neighbours, so its cost grows with ``log n`` instead of ``n``.
"""

from __future__ import annotations

import math

import numpy as np

from fedimage.errors import OptionError

Neighbours = tuple[tuple[int, ...], ...]


def default_degree(num_clients: int) -> int:
    """``2 * ceil(1.5 * log2 n)`` neighbours (20 for 100 clients, 30 for 1,000), or all of a small cohort."""
    if num_clients < 2:
        raise OptionError(f"secure aggregation needs at least 2 clients, got {num_clients}")
    return min(num_clients - 1, 2 * math.ceil(1.5 * math.log2(num_clients)))


def default_threshold(degree: int) -> int:
    """A strict majority of a client's neighbours."""
    return degree // 2 + 1


def check_threshold(threshold: int, degree: int) -> None:
    """A threshold must be a strict majority of the neighbours, and reachable."""
    if not degree // 2 < threshold <= degree:
        raise OptionError(
            f"the secure aggregation threshold must be more than half the {degree} neighbours of a client"
            f" and at most {degree}, got {threshold}"
        )


def random_regular_graph(num_clients: int, degree: int, seed: int) -> Neighbours:
    """Sorted neighbour indices of each client; ``degree >= n - 1`` gives the complete graph."""
    if num_clients < 2:
        raise OptionError(f"secure aggregation needs at least 2 clients, got {num_clients}")
    if degree < 2:
        raise OptionError(f"the graph degree must be at least 2, got {degree}")
    everyone = range(num_clients)
    if degree >= num_clients - 1:
        return tuple(tuple(j for j in everyone if j != i) for i in everyone)
    if degree % 2:
        raise OptionError(
            f"the graph degree must be even when smaller than n - 1 = {num_clients - 1}, got {degree}"
        )
    order = np.random.default_rng(seed).permutation(num_clients)
    position = np.empty(num_clients, dtype=np.int64)
    position[order] = np.arange(num_clients)
    offsets = [d for j in range(1, degree // 2 + 1) for d in (j, -j)]
    return tuple(
        tuple(sorted(int(order[(position[i] + d) % num_clients]) for d in offsets)) for i in everyone
    )


def is_connected(members: frozenset[int] | set[int], neighbours: Neighbours) -> bool:
    """Whether the subgraph induced by ``members`` is connected (masks of a survivor then never cancel alone).

    If the survivors fell apart into groups, the server could unmask each group's partial sum.
    """
    if not members:
        return False
    start = next(iter(members))
    seen = {start}
    frontier = [start]
    while frontier:
        node = frontier.pop()
        for other in neighbours[node]:
            if other in members and other not in seen:
                seen.add(other)
                frontier.append(other)
    return len(seen) == len(members)
