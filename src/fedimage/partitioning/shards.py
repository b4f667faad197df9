"""``shards``: McMahan et al. (2017): images sorted by label, cut into equal shards, each client
gets ``shards_per_client`` shards at random (so at most that many labels, usually)."""

from __future__ import annotations

import numpy as np

from fedimage.errors import OptionError
from fedimage.partitioning._core import apportion, by_class_order, check_feasible, label_codes
from fedimage.partitioning.repair import enforce_min_size


def shards_partition(
    labels: np.ndarray, num_clients: int, shards_per_client: int = 2, min_per_client: int = 1, seed: int = 0
) -> np.ndarray:
    """Client per image. Images within a label are shuffled before cutting, so a shard is a
    random subset of its label; shard sizes differ by at most one."""
    num_images = len(labels)
    check_feasible(num_images, num_clients, min_per_client)
    codes, _ = label_codes(labels, num_images, "shards")
    num_shards = num_clients * shards_per_client
    if num_shards > num_images:
        raise OptionError(
            f"{num_clients} clients x {shards_per_client} shards = {num_shards} shards, "
            f"more than the {num_images} images"
        )
    rng = np.random.default_rng(seed)
    order = by_class_order(codes, rng)
    shard_of_position = np.repeat(np.arange(num_shards), apportion(num_images, np.ones(num_shards)))
    owner = np.empty(num_shards, dtype=np.int64)
    owner[rng.permutation(num_shards)] = np.arange(num_shards) // shards_per_client
    assignment = np.empty(num_images, dtype=np.int64)
    assignment[order] = owner[shard_of_position]
    return enforce_min_size(assignment, num_clients, min_per_client, rng, labels=codes)
