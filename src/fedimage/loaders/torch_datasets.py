"""PyTorch ``Dataset`` views of a store (needs the ``torch`` extra).

Datasets hold the store's path, not an open file: each DataLoader worker
opens its own handle on first use, since HDF5 handles must not cross a fork.

A transform gets each image as the store decodes it: uint8 [S, S, C], or uint16 in a 16-bit store.
The default (:func:`to_tensor`) scales either to float32 [0, 1] by its dtype's maximum (255, 65535).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from fedimage.extras import require
from fedimage.labels import LabelLevel
from fedimage.privacy.keys import StoreKey
from fedimage.store.opening import PerProcessStore, open_store
from fedimage.store.reader import FederatedStore

torch = require("torch", "the PyTorch datasets")
Dataset = require("torch.utils.data").Dataset

Transform = Callable[[np.ndarray], Any]


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 or uint16 HWC -> float32 CHW in [0, 1], divided by the dtype's maximum (255 or 65535; the
    default transform). A uint16 image becomes float32 in numpy (torch's uint16 has few operations)."""
    chw = image.transpose(2, 0, 1)
    if image.dtype == np.uint8:
        chw = np.ascontiguousarray(chw)
        if not chw.flags.writeable:  # a decoded PNG's pixels (torch warns about read-only arrays)
            chw = chw.copy()
        return torch.from_numpy(chw).float().div_(255.0)
    if image.dtype != np.uint16:
        raise ValueError(f"expected a uint8 or uint16 image, got {image.dtype}")
    return torch.from_numpy(np.ascontiguousarray(chw, dtype=np.float32)).div_(float(np.iinfo(np.uint16).max))


class _StoreDataset(PerProcessStore, Dataset):
    def __init__(
        self,
        path: str | Path,
        split: str,
        labels: str,
        transform: Transform | None,
        key: StoreKey | None,
        partition: str | Path | None = None,
    ):
        LabelLevel.parse(labels)
        self.path = Path(path)
        self.split = split
        self.labels = labels
        self.transform = transform or to_tensor
        self._store: FederatedStore | None = None
        self._key = key
        self._partition = None if partition is None else Path(partition)
        with open_store(self.path, key=key, partition=self._partition) as store:
            self.label_names = store.label_names_of(labels)
            self._users = store.users(split)


class UserDataset(_StoreDataset):
    """The images of one user: items are ``(image, multi-hot target)``.

    The user's images are decoded once, on first access.
    """

    def __init__(
        self,
        path: str | Path,
        split: str,
        user_id: str,
        *,
        labels: str = "coarse",
        transform: Transform | None = None,
        key: StoreKey | None = None,
        partition: str | Path | None = None,
    ):
        super().__init__(path, split, labels, transform, key, partition)
        self.user_id = user_id
        self._data = None
        self._length = self._store_if_needed().users(split).get(user_id)
        if self._length is None:
            self._store_if_needed().group(split, user_id)  # raises UnknownUserError

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: int) -> tuple[Any, torch.Tensor]:
        if self._data is None:
            self._data = self._store_if_needed().load_user(self.split, self.user_id)
        targets = getattr(self._data, LabelLevel.parse(self.labels).targets_field)
        return self.transform(self._data.images[index]), torch.from_numpy(targets[index])


class SplitDataset(_StoreDataset):
    """Every image of a split (the central, non-federated view).

    Items are ``(image, multi-hot target)``; ``user_of(index)`` tells whose image it is.
    """

    def __init__(
        self,
        path: str | Path,
        split: str,
        *,
        labels: str = "coarse",
        transform: Transform | None = None,
        key: StoreKey | None = None,
        partition: str | Path | None = None,
    ):
        super().__init__(path, split, labels, transform, key, partition)
        self._user_ids = list(self._users)
        counts = np.fromiter(self._users.values(), dtype=np.int64, count=len(self._users))
        self._starts = np.concatenate([[0], np.cumsum(counts)])

    def __len__(self) -> int:
        return int(self._starts[-1])

    def user_of(self, index: int) -> tuple[str, int]:
        """(user id, index within that user) of a split-wide index."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        position = int(np.searchsorted(self._starts, index, side="right")) - 1
        return self._user_ids[position], index - int(self._starts[position])

    def __getitem__(self, index: int) -> tuple[Any, torch.Tensor]:
        user_id, within = self.user_of(index)
        store = self._store_if_needed()
        image = store.load_image(self.split, user_id, within)
        target = store.load_targets(self.split, user_id, self.labels)[within]
        return self.transform(image), torch.from_numpy(target)
