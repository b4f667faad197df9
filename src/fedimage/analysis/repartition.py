"""Re-partitioning an existing store: its image ids, users and labels, read without any pixels."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from fedimage.conversion.metadata import partition_values
from fedimage.errors import OptionError
from fedimage.labels import LabelLevel
from fedimage.partitioning.api import partition
from fedimage.partitioning.by_metadata import column_names
from fedimage.partitioning.labels import pick_label
from fedimage.partitioning.options import PartitionOptions
from fedimage.partitioning.regroup import regroup
from fedimage.sources.metadata import table_column
from fedimage.store.metadata import MetadataColumn
from fedimage.store.reader import FederatedStore


@dataclass(frozen=True)
class StoreLabels:
    """Every image of a store sorted by image id: its id, split, user and (image, label) pairs."""

    image_ids: np.ndarray  # str [N], sorted
    splits: np.ndarray  # str [N]
    users: np.ndarray  # str [N]
    rows: np.ndarray  # int64 image index (into the sorted arrays), one per label
    cols: np.ndarray  # int64 label index
    label_names: list[str]
    #: The values of the metadata column asked for (``values_of``), one per image, else None.
    values: list[Any] | None = None

    def __len__(self) -> int:
        return len(self.image_ids)


def read_store_labels(
    store: FederatedStore,
    labels: str = "coarse",
    splits: list[str] | None = None,
    values_of: str | None = None,
) -> StoreLabels:
    """Image ids, users and labels of ``splits`` (default all), read from the label datasets only,
    and, with ``values_of``, each image's value of that per-image metadata column."""
    level = LabelLevel.parse(labels)
    column = _metadata_column(store, values_of) if values_of is not None else None
    ids: list[str] = []
    values: list[Any] = []
    split_of, user_of, rows, cols = [], [], [], []
    offset = 0
    for user in store.iter_user_labels(level, splits, image_ids=True):
        if column is not None:
            values.extend(store.load_metadata(user.split, user.user_id)[column.name])
        ids.extend(user.image_ids or ())
        split_of.append(np.full(user.count, user.split, dtype=object))
        user_of.append(np.full(user.count, user.user_id, dtype=object))
        rows.append(user.rows + offset)
        cols.append(user.cols)
        offset += user.count
    image_ids = np.asarray(ids, dtype=str) if ids else np.zeros(0, dtype=str)
    order = np.argsort(image_ids, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    all_rows = rank[np.concatenate(rows)] if rows else np.zeros(0, dtype=np.int64)
    names = store.label_names_of(level)
    return StoreLabels(
        image_ids=image_ids[order],
        splits=np.concatenate(split_of)[order] if split_of else np.zeros(0, dtype=object),
        users=np.concatenate(user_of)[order] if user_of else np.zeros(0, dtype=object),
        rows=all_rows,
        cols=np.concatenate(cols) if cols else np.zeros(0, dtype=np.int64),
        label_names=names,
        values=[values[index] for index in order.tolist()] if column is not None else None,
    )


def _metadata_column(store: FederatedStore, name: str) -> MetadataColumn:
    for column in store.metadata_columns:
        if column.name == name:
            return column
    kept = ", ".join(column.name for column in store.metadata_columns) or "none"
    raise OptionError(
        f"`partition_key` {name!r} is not a per-image metadata column of {store.path.name} (its columns:"
        f" {kept}; keep one with `keep_columns` when converting)"
    )


def store_partition(
    store: FederatedStore, data: StoreLabels, options: PartitionOptions, skew: str
) -> tuple[np.ndarray, list[str]]:
    """Each image's client (images in ``data``'s order) under ``options``' scheme, and each client's
    name: its value for a ``column`` partition, else ``client_<i>``."""
    picked = pick_label(data.rows, data.cols, len(data), skew, options.seed) if options.needs_labels else None
    values = None
    if options.needs_values and options.key is not None:
        column = _metadata_column(store, options.key)
        table = pa.table({table_column(column.name): pa.array(data.values or [], column.arrow_type)})
        values = partition_values(table, column.name, options.scheme)
    clients = partition(len(data), options, picked, values)
    if options.scheme == "column" and values is not None:
        return clients, column_names(values)
    width = len(str(max(int(clients.max(initial=0)), 0)))
    return clients, [f"client_{client:0{width}d}" for client in range(int(clients.max(initial=-1)) + 1)]


def repartition_store(
    path: str | Path,
    options: PartitionOptions,
    labels: str = "coarse",
    skew: str = "rarest",
    splits: list[str] | None = None,
) -> dict[str, int]:
    """``{image_id: client}`` for the images of an existing store under another scheme.

    Label-skew schemes use one ``labels`` (coarse or fine) label per image, picked by ``skew``
    (see :func:`~fedimage.partitioning.skew_labels`); the ``column`` and ``continuous`` schemes
    follow the store's per-image metadata column ``options.key``.
    """
    with FederatedStore(path) as store:
        data = read_store_labels(store, labels, splits, options.key if options.needs_values else None)
        clients, _ = store_partition(store, data, options, skew)
    return dict(zip(data.image_ids.tolist(), clients.tolist(), strict=True))


def regroup_store(
    path: str | Path, group_size: int, seed: int = 0, splits: list[str] | None = None
) -> dict[str, int]:
    """``{image_id: group}``: the store's users merged into seeded groups of ``group_size``."""
    with FederatedStore(path) as store:
        data = read_store_labels(store, "coarse", splits)
    clients = regroup(data.users.tolist(), group_size, seed)
    return dict(zip(data.image_ids.tolist(), clients.tolist(), strict=True))
