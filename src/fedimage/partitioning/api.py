"""One entry point for every scheme, by name, and a keyed variant independent of input order."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from fedimage.errors import OptionError
from fedimage.partitioning.by_metadata import column_partition, continuous_partition
from fedimage.partitioning.dirichlet import dirichlet_partition
from fedimage.partitioning.iid import iid_partition
from fedimage.partitioning.options import PartitionOptions
from fedimage.partitioning.pathological import pathological_partition
from fedimage.partitioning.quantity import quantity_partition
from fedimage.partitioning.shards import shards_partition

_Scheme = Callable[[int, np.ndarray | None, PartitionOptions], np.ndarray]

_SCHEMES: dict[str, _Scheme] = {
    "iid": lambda n, _, o: iid_partition(n, o.num_clients, o.min_per_client, o.seed),
    "quantity": lambda n, _, o: quantity_partition(
        n, o.num_clients, o.min_per_client, o.seed, o.size_distribution, o.size_sigma, o.size_exponent
    ),
    "dirichlet": lambda _, y, o: dirichlet_partition(y, o.num_clients, o.alpha, o.min_per_client, o.seed),
    "shards": lambda _, y, o: shards_partition(
        y, o.num_clients, o.shards_per_client, o.min_per_client, o.seed
    ),
    "pathological": lambda _, y, o: pathological_partition(
        y, o.num_clients, o.classes_per_client, o.min_per_client, o.seed
    ),
}


def partition(
    num_images: int,
    options: PartitionOptions,
    labels: np.ndarray | None = None,
    values: np.ndarray | None = None,
) -> np.ndarray:
    """Client index (int64, 0..K-1) of each of ``num_images`` images, in the caller's order.

    The caller passes images in a stable key order (sorted by image id); label-skew schemes
    need ``labels``, one integer per image (see :func:`~fedimage.partitioning.skew_labels`);
    the ``column`` and ``continuous`` schemes need ``values``, the ``key`` column's value per image.
    """
    if labels is None and options.needs_labels:
        raise OptionError(f"the {options.scheme!r} scheme skews labels: it needs one label per image")
    if options.needs_values:
        if values is None or len(values) != num_images:
            raise OptionError(f"the {options.scheme!r} scheme needs the `partition_key` value of every image")
        if options.scheme == "column":
            return column_partition(np.asarray(values), options.min_per_client)
        return continuous_partition(
            np.asarray(values), options.num_clients, options.strictness, options.seed, options.min_per_client
        )
    return _SCHEMES[options.scheme](num_images, None if labels is None else np.asarray(labels), options)


def partition_images(
    image_ids: Sequence[str], options: PartitionOptions, labels: np.ndarray | None = None
) -> dict[str, int]:
    """``{image_id: client}``: sorts by image id first, so the input order does not matter."""
    ids = np.asarray(image_ids, dtype=object)
    order = np.argsort(ids.astype(str), kind="stable")
    sorted_ids = ids[order]
    if len(ids) > 1 and np.any(sorted_ids[1:] == sorted_ids[:-1]):
        duplicate = sorted_ids[1:][sorted_ids[1:] == sorted_ids[:-1]][0]
        raise OptionError(f"image id {duplicate!r} appears more than once")
    sorted_labels = None if labels is None else np.asarray(labels)[order]
    clients = partition(len(ids), options, sorted_labels)
    return dict(zip(sorted_ids.tolist(), clients.tolist(), strict=True))
