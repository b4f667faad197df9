"""Partitioners: deal images that have no user ids into federated clients.

Pure numpy: every scheme maps images, given in a stable key order (sorted by image id),
to an int64 client index, deterministically for a seed. Schemes (:data:`SCHEMES`):
``iid``, ``dirichlet`` (label skew), ``shards`` (McMahan et al.), ``quantity`` (size skew) and
``pathological`` (k labels per client); every one guarantees ``min_per_client`` images per
client, and raises :class:`~fedimage.errors.OptionError` only when that is impossible. By an
image's metadata (:mod:`~fedimage.partitioning.by_metadata`): one client per value of a column
(``column_partition``), or a noisy ranking by a numeric column (``continuous_partition``).

    from fedimage.partitioning import PartitionOptions, partition, skew_labels
    clients = partition(len(ids), PartitionOptions("dirichlet", num_clients=100, alpha=0.1),
                        skew_labels(multi_hot))

A store's images under another scheme: :mod:`fedimage.analysis.repartition` and, as an overlay file,
:func:`fedimage.repartition`.
"""

from __future__ import annotations

from fedimage.partitioning.api import partition, partition_images
from fedimage.partitioning.by_metadata import column_names, column_partition, continuous_partition
from fedimage.partitioning.dirichlet import dirichlet_partition
from fedimage.partitioning.iid import iid_partition
from fedimage.partitioning.labels import NO_LABEL, SKEW_STRATEGIES, label_pairs, pick_label, skew_labels
from fedimage.partitioning.options import (
    KEYED_SCHEMES,
    SCHEMES,
    SIZE_DISTRIBUTIONS,
    UNKEYED_SCHEMES,
    PartitionOptions,
)
from fedimage.partitioning.pathological import pathological_partition
from fedimage.partitioning.quantity import quantity_partition
from fedimage.partitioning.regroup import group_users, regroup
from fedimage.partitioning.repair import enforce_min_size
from fedimage.partitioning.shards import shards_partition

__all__ = [
    "KEYED_SCHEMES",
    "NO_LABEL",
    "SCHEMES",
    "SIZE_DISTRIBUTIONS",
    "SKEW_STRATEGIES",
    "UNKEYED_SCHEMES",
    "PartitionOptions",
    "column_names",
    "column_partition",
    "continuous_partition",
    "dirichlet_partition",
    "enforce_min_size",
    "group_users",
    "iid_partition",
    "label_pairs",
    "partition",
    "partition_images",
    "pathological_partition",
    "pick_label",
    "quantity_partition",
    "regroup",
    "shards_partition",
    "skew_labels",
]
