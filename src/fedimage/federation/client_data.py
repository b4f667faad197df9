"""Where a ClientApp's data comes from, chosen by the node's config.

- A deployed node (``fedimage client``) has ``bundle`` and ``bundle-key`` in its node config:
  its own encrypted one-user store and key, nothing else (:class:`BundleData`).
- A node of Flower's simulation has ``partition-id``: the i-th client of the whole store,
  clients ordered by split (train, val, test) then user id (:class:`SimulationDirectory`).

Both give the same :class:`ClientData`: the client's id, split and arrays, so the ClientApp
itself never knows which kind of node it runs on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fedimage.errors import OptionError
from fedimage.labels import LabelLevel
from fedimage.store.opening import PerProcessStore

if TYPE_CHECKING:
    from fedimage.privacy.keys import StoreKey

#: The splits a federation's clients come from, in the order simulation partitions are numbered.
FEDERATED_SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class ClientData:
    """One client's identity and how to read its images."""

    client: str
    split: str
    source: Any  # an object with ``arrays(split, client, labels, limit)``

    def arrays(self, labels: str, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """uint8 images ``[N, S, S, C]`` (C = 3, or 1 for a gray store; uint16 in a 16-bit store) and
        targets ``[N, L]``: the first ``limit`` in store order."""
        return self.source.arrays(self.split, self.client, labels, limit)


class _StoreArrays(PerProcessStore):
    """Reads one user's arrays from a store opened once per process."""

    def __init__(self, path: str | Path, key: StoreKey | None, partition: str | Path | None = None):
        import fedimage.privacy  # noqa: F401  (registers the encryption scheme bundles are sealed with)

        self.path = Path(path)
        self._key = key
        self._partition = None if partition is None else Path(partition)
        self._store = None

    def arrays(
        self, split: str, client: str, labels: str, limit: int | None
    ) -> tuple[np.ndarray, np.ndarray]:
        data = self._store_if_needed().load_user(split, client)
        keep = slice(0, limit)
        targets = getattr(data, LabelLevel.parse(labels).targets_field)
        return data.images[keep], targets[keep]


class BundleData(_StoreArrays):
    """A deployed client's own bundle: one user of one split, opened with its key."""

    def client_data(self) -> ClientData:
        store = self._store_if_needed()
        owners = [(split, user) for split in store.splits for user in store.users(split)]
        if len(owners) != 1:
            raise OptionError(
                f"{self.path.name} holds {len(owners)} users; a client bundle holds exactly one"
            )
        split, user = owners[0]
        return ClientData(user, split, self)


class SimulationDirectory(_StoreArrays):
    """Partition ``i`` of Flower's simulation = the ``i``-th (split, user) of a store.

    Clients are ordered by split (:data:`FEDERATED_SPLITS` order, only ``splits`` given) and,
    within a split, by user id. Picklable: each Ray worker reopens the store with its key.
    """

    def __init__(
        self,
        path: str | Path,
        key: StoreKey | None = None,
        splits: Sequence[str] = FEDERATED_SPLITS,
        partition: str | Path | None = None,
    ):
        super().__init__(path, key, partition)
        store = self._store_if_needed()
        self.clients: list[tuple[str, str]] = [
            (split, user)
            for split in FEDERATED_SPLITS
            if split in splits and split in store.splits
            for user in sorted(store.users(split))
        ]

    @property
    def num_partitions(self) -> int:
        return len(self.clients)

    def client_data(self, partition_id: int) -> ClientData:
        if not isinstance(partition_id, int) or not 0 <= partition_id < len(self.clients):
            raise OptionError(f"partition id {partition_id!r} is not in 0..{len(self.clients) - 1}")
        split, user = self.clients[partition_id]
        return ClientData(user, split, self)


def client_data_from_node(
    node_config: Mapping[str, Any], simulation: SimulationDirectory | None
) -> ClientData:
    """The data a node's config points at: its bundle (deployment) or its partition (simulation)."""
    from fedimage.federation import protocol

    if protocol.NODE_BUNDLE in node_config:
        key = node_config.get(protocol.NODE_BUNDLE_KEY)
        if not key:
            raise OptionError(f"this node's config names a bundle but no {protocol.NODE_BUNDLE_KEY!r}")
        return BundleData(str(node_config[protocol.NODE_BUNDLE]), str(key)).client_data()
    if simulation is not None and protocol.NODE_PARTITION in node_config:
        return simulation.client_data(int(node_config[protocol.NODE_PARTITION]))
    raise OptionError(
        f"this Flower node's config has neither {protocol.NODE_BUNDLE!r} (a deployed client: start it "
        "with `fedimage client KIT`) nor a simulation partition"
    )
