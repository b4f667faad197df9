"""Opening a store: its own users, or a partition overlay's clients, in this process or in each of many.

``fedimage.open`` is :func:`open_store`; :class:`PerProcessStore` reopens a store (with its key and
overlay) in every process that reads it (DataLoader workers, Ray actors).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fedimage.store.overlay import OverlayStore
from fedimage.store.reader import FederatedStore
from fedimage.store.sealing import StoreKey


def open_store(
    path: str | Path, key: StoreKey | None = None, partition: str | Path | None = None
) -> FederatedStore:
    """Open a fedimage store for reading (an encrypted one with its ``key``; see :class:`FederatedStore`).

    With ``partition``, a partition overlay (``fedimage repartition``): its clients are the store's
    users, read from the same image bytes (:class:`fedimage.store.overlay.OverlayStore`).

        with fedimage.open("flair.h5", partition="dirichlet-0.1.parquet") as store:
            store.users("train")
    """
    if partition is not None:
        return OverlayStore(path, partition, key=key)
    return FederatedStore(path, key=key)


class PerProcessStore:
    """Mixin for picklable objects that read a store at ``self.path``: each process opens its own handle.

    HDF5 handles do not cross processes (DataLoader workers, Ray actors), so pickling
    drops the handle and :meth:`_store_if_needed` reopens the file where it is next used.
    """

    path: Path
    _key: StoreKey | None = None  # an encrypted store's key: it travels with the pickled object
    _partition: Path | None = None  # a partition overlay whose clients are the users
    _store: FederatedStore | None = None

    def _store_if_needed(self) -> FederatedStore:
        if self._store is None:
            self._store = open_store(self.path, key=self._key, partition=self._partition)
        return self._store

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_store"] = None
        return state
