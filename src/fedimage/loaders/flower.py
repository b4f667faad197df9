"""Flower adapters: a store's users as Flower partitions, client and central PyTorch data.

Partition ids follow one documented rule: the users of a split **sorted by user id**
(Python string order) are partitions ``0 .. n-1``. The mapping depends only on the set of
users in the split, never on file order, and :class:`StorePartitioner` exposes it both ways
(``user_id(partition_id)``, ``partition_id(user_id)``). Flower's simulation gives node ``i``
``node_config["partition-id"] = i``, so node ``i`` trains user ``user_ids[i]``.

Users are read through one open :class:`~fedimage.store.reader.FederatedStore`
(``load_user``: one HDF5 read per user, JPEG, PNG or raw), opened once per process; pickling a
partitioner (to a Ray actor) drops the handle and the other process opens its own.
Needs the ``torch`` extra; the Flower apps in :mod:`fedimage.federation` need
``flower``.

Tensors hold uint8 images, except a 16-bit store's: float32 in [0, 1] (its uint16 values divided by
65535, :func:`fedimage.training.transforms.model_images`), which fedimage's models take as well.
``StorePartitioner.load_arrays`` gives the uint16 values themselves.

    partitioner = StorePartitioner("store.h5", "train")
    loader = load_client(partitioner, partition_id=3, batch_size=16, seed=0)
    val = load_central("store.h5", "val")
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fedimage.errors import OptionError
from fedimage.extras import require
from fedimage.labels import LabelLevel
from fedimage.privacy.keys import StoreKey
from fedimage.store.opening import PerProcessStore
from fedimage.store.reader import FederatedStore
from fedimage.training.transforms import model_images

torch = require("torch")


def partition_user_ids(store: FederatedStore, split: str) -> list[str]:
    """The user ids of ``split`` in partition-id order (sorted by user id)."""
    return sorted(store.users(split))


class StorePartitioner(PerProcessStore):
    """One Flower partition per user of a store split, in the interface of ``flwr_datasets``' partitioners.

    ``num_partitions`` and ``load_partition(i)`` as Flower Datasets has them; a partition is
    a ``TensorDataset`` of ``(uint8 image [S, S, C] (C: 3, or 1 gray), float32 multi-hot target [L])``: the
    user's first ``max_images_per_user`` images in store order (pfl-research's FLAIR rule). A 16-bit
    store's images are float32 in [0, 1] there (uint16 values / 65535).
    ``store`` is an open :class:`FederatedStore` (left open; the caller owns it) or a path.
    """

    def __init__(
        self,
        store: FederatedStore | str | Path,
        split: str = "train",
        *,
        labels: str = "coarse",
        max_images_per_user: int | None = None,
        key: StoreKey | None = None,
        partition: str | Path | None = None,
    ):
        LabelLevel.parse(labels)
        if max_images_per_user is not None and max_images_per_user < 1:
            raise OptionError(f"max_images_per_user must be >= 1, got {max_images_per_user}")
        self._store = store if isinstance(store, FederatedStore) else None
        self.path = store.path if isinstance(store, FederatedStore) else Path(store)
        self._key = store.key if isinstance(store, FederatedStore) else key
        self._partition = store.partition if isinstance(store, FederatedStore) else partition
        self.split = split
        self.labels = labels
        self.max_images_per_user = max_images_per_user
        self._user_ids = partition_user_ids(self._store_if_needed(), split)
        if not self._user_ids:
            raise OptionError(f"split {split!r} of {self.path.name} has no users to partition")
        self._partition_of = {user: index for index, user in enumerate(self._user_ids)}

    def __repr__(self) -> str:
        return (
            f'<StorePartitioner "{self.path.name}" split {self.split!r} ({self.num_partitions} partitions)>'
        )

    @property
    def num_partitions(self) -> int:
        return len(self._user_ids)

    @property
    def user_ids(self) -> list[str]:
        """User ids in partition order: ``user_ids[i]`` is partition ``i``."""
        return list(self._user_ids)

    def user_id(self, partition_id: int) -> str:
        """The user of a partition id."""
        if isinstance(partition_id, bool) or not isinstance(partition_id, int | np.integer):
            raise OptionError(f"partition id must be an integer, got {partition_id!r}")
        if not 0 <= partition_id < self.num_partitions:
            raise OptionError(
                f"partition id {partition_id} is out of range: split {self.split!r} of {self.path.name} "
                f"has {self.num_partitions} partitions (0..{self.num_partitions - 1})"
            )
        return self._user_ids[int(partition_id)]

    def partition_id(self, user_id: str) -> int:
        """The partition id of a user."""
        try:
            return self._partition_of[user_id]
        except KeyError:
            raise OptionError(
                f"user {user_id!r} is not in split {self.split!r} of {self.path.name} "
                f"({self.num_partitions} users)"
            ) from None

    def load_arrays(self, partition_id: int) -> tuple[np.ndarray, np.ndarray]:
        """uint8 images ``[N, S, S, C]`` (C = 3, or 1 for a gray store; uint16 in a 16-bit store) and
        float32 targets ``[N, L]`` of a partition (capped)."""
        data = self._store_if_needed().load_user(self.split, self.user_id(partition_id))
        keep = slice(0, self.max_images_per_user)
        targets = getattr(data, LabelLevel.parse(self.labels).targets_field)
        return data.images[keep], targets[keep]

    def load_partition(self, partition_id: int) -> Any:
        """A partition as a ``torch.utils.data.TensorDataset`` of uint8 images (a 16-bit store's:
        float32 in [0, 1]) and float32 targets."""
        images, targets = self.load_arrays(partition_id)
        return torch.utils.data.TensorDataset(model_images(images), torch.from_numpy(targets))


def load_client(
    store: StorePartitioner | FederatedStore | str | Path,
    partition_id: int,
    split: str = "train",
    *,
    labels: str = "coarse",
    max_images_per_user: int | None = None,
    batch_size: int = 16,
    seed: int | None = 0,
) -> Any:
    """A ``DataLoader`` over one client's images (uint8 NHWC batches, a 16-bit store's float32 in
    [0, 1]; float32 targets).

    ``seed`` shuffles with its own generator (reproducible); ``None`` keeps store order.
    Pass a :class:`StorePartitioner` to reuse its open store across clients (``split``,
    ``labels`` and ``max_images_per_user`` are then the partitioner's).
    """
    if not isinstance(store, StorePartitioner):
        store = StorePartitioner(store, split, labels=labels, max_images_per_user=max_images_per_user)
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(
        store.load_partition(partition_id),
        batch_size=batch_size,
        shuffle=seed is not None,
        generator=generator,
    )


def load_central(
    store: FederatedStore | str | Path, split: str, *, labels: str = "coarse", batch_size: int = 512
) -> Any:
    """A ``DataLoader`` over every image of a split in store order (the central val/test set).

    Items are uint8 ``[S, S, C]`` images (C: 3, or 1 for a gray store; a 16-bit store's: float32 in
    [0, 1]; what fedimage's models take) and float32 targets;
    built on :class:`fedimage.loaders.torch_datasets.SplitDataset`, which opens the store once per process.
    """
    from fedimage.loaders.torch_datasets import SplitDataset

    path = store.path if isinstance(store, FederatedStore) else Path(store)
    key = store.key if isinstance(store, FederatedStore) else None
    partition = store.partition if isinstance(store, FederatedStore) else None
    dataset = SplitDataset(path, split, labels=labels, transform=model_images, key=key, partition=partition)
    if len(dataset) == 0:
        raise OptionError(f"split {split!r} of {path.name} has no images")
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
