"""Re-partitioning an existing store: its image ids, users and labels, read without any pixels."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedimage.labels import LabelLevel
from fedimage.partitioning.api import partition
from fedimage.partitioning.labels import pick_label
from fedimage.partitioning.options import PartitionOptions
from fedimage.partitioning.regroup import regroup
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

    def __len__(self) -> int:
        return len(self.image_ids)


def read_store_labels(
    store: FederatedStore, labels: str = "coarse", splits: list[str] | None = None
) -> StoreLabels:
    """Image ids, users and labels of ``splits`` (default all), read from the label datasets only."""
    level = LabelLevel.parse(labels)
    ids: list[str] = []
    split_of, user_of, rows, cols = [], [], [], []
    offset = 0
    for user in store.iter_user_labels(level, splits, image_ids=True):
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
    )


def repartition_store(
    path: str | Path,
    options: PartitionOptions,
    labels: str = "coarse",
    skew: str = "rarest",
    splits: list[str] | None = None,
) -> dict[str, int]:
    """``{image_id: client}`` for the images of an existing store under another scheme.

    Label-skew schemes use one ``labels`` (coarse or fine) label per image, picked by ``skew``
    (see :func:`~fedimage.partitioning.skew_labels`).
    """
    with FederatedStore(path) as store:
        data = read_store_labels(store, labels, splits)
    picked = pick_label(data.rows, data.cols, len(data), skew, options.seed) if options.needs_labels else None
    clients = partition(len(data), options, picked)
    return dict(zip(data.image_ids.tolist(), clients.tolist(), strict=True))


def regroup_store(
    path: str | Path, group_size: int, seed: int = 0, splits: list[str] | None = None
) -> dict[str, int]:
    """``{image_id: group}``: the store's users merged into seeded groups of ``group_size``."""
    with FederatedStore(path) as store:
        data = read_store_labels(store, "coarse", splits)
    clients = regroup(data.users.tolist(), group_size, seed)
    return dict(zip(data.image_ids.tolist(), clients.tolist(), strict=True))
