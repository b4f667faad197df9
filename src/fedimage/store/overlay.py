"""Partition overlays: another division of a store's images into clients, without rewriting any image.

An overlay is a small Parquet file, one row per image, written by ``fedimage repartition``
(:func:`fedimage.partitioning.overlay.repartition`)::

    image_id  string   an image id of the store
    split     string   the split the image belongs to under the overlay
    client    string   the client (user) it belongs to under the overlay

Its schema metadata ``fedimage_partition`` (JSON) says how it was made: ``format``
(``fedimage-partition``), ``version``, ``store`` (the store's file name and :func:`store_fingerprint`),
``scheme`` (the partition options), ``split`` (the ratios) and ``seed``. Any tool can read it as
a table (Flower Datasets: join it to a ``parquet`` export on ``image_id`` and partition by
``client``).

:class:`OverlayStore` (``fedimage.open(store, partition=overlay)``) presents the overlay's clients
as the store's users: every reader (``load_user``, the PyTorch and Flower datasets) gets the
clients' images, read from the same bytes as the store's own users. An overlay made for another
store, or naming an image the store does not have, is refused with one line.

    with fedimage.open("flair.h5", partition="alpha-0.1.parquet") as store:
        for client, count in store.users("train").items():
            images = store.load_user("train", client).images
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from fedimage.errors import StoreError
from fedimage.store import schema
from fedimage.store.metadata import nulls_dataset, values_dataset
from fedimage.store.reader import FederatedStore, read_dataset
from fedimage.store.sealing import StoreKey

if TYPE_CHECKING:
    from fedimage.store.reader import UserGroup

OVERLAY_FORMAT = "fedimage-partition"
OVERLAY_VERSION = 1
#: The schema metadata key of an overlay file.
OVERLAY_METADATA = b"fedimage_partition"
OVERLAY_SCHEMA = pa.schema([("image_id", pa.string()), ("split", pa.string()), ("client", pa.string())])


def store_fingerprint(store: FederatedStore) -> str:
    """A digest of the store's content as its manifest records it: every user's split, id, image
    count and group checksum. Equal for the same store, different once any user group differs."""
    entries = sorted(
        (split, user_id, info["images"], info.get("sha256", ""))
        for split, users in store.manifest["users"].items()
        for user_id, info in users.items()
    )
    return hashlib.sha256(json.dumps(entries, ensure_ascii=False).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Overlay:
    """An overlay read from its file: one split and client per image id, and how it was made."""

    image_ids: list[str]
    splits: list[str]
    clients: list[str]
    info: dict[str, Any]


def write_overlay(
    path: str | Path, image_ids: list[str], splits: list[str], clients: list[str], info: dict[str, Any]
) -> Path:
    """Write an overlay file (rows sorted by split, client and image id); returns its path.

    Parameters:
        path: the Parquet file to write.
        image_ids: the images (ids of the store).
        splits: the split of each image.
        clients: the client of each image.
        info: how it was made (``store``, ``scheme``, ``split``, ``seed``); ``format`` and ``version``
            are added.
    """
    path = Path(path)
    order = sorted(range(len(image_ids)), key=lambda i: (splits[i], clients[i], image_ids[i]))
    table = pa.table(
        {
            "image_id": pa.array([image_ids[i] for i in order], pa.string()),
            "split": pa.array([splits[i] for i in order], pa.string()),
            "client": pa.array([clients[i] for i in order], pa.string()),
        },
        schema=OVERLAY_SCHEMA.with_metadata(
            {OVERLAY_METADATA: json.dumps({"format": OVERLAY_FORMAT, "version": OVERLAY_VERSION, **info})}
        ),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    pq.write_table(table, partial)
    partial.replace(path)
    return path


def read_overlay(path: str | Path) -> Overlay:
    """Read and check an overlay file (a one-line :class:`~fedimage.errors.StoreError` otherwise)."""
    path = Path(path)
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as error:
        raise StoreError(f"{path} is not a readable partition overlay: {error}") from None
    raw = (table.schema.metadata or {}).get(OVERLAY_METADATA)
    try:
        info = json.loads(raw) if raw is not None else None
    except ValueError:
        info = None
    if not isinstance(info, dict) or info.get("format") != OVERLAY_FORMAT:
        raise StoreError(
            f"{path} is not a fedimage partition overlay (no {OVERLAY_METADATA.decode()} metadata)"
        )
    if info.get("version") != OVERLAY_VERSION:
        raise StoreError(
            f"{path} has overlay version {info.get('version')}; this fedimage reads {OVERLAY_VERSION}"
        )
    missing = [name for name in OVERLAY_SCHEMA.names if name not in table.column_names]
    if missing:
        raise StoreError(f"{path}: the overlay has no {', '.join(missing)} column")
    columns = {name: table.column(name).to_pylist() for name in OVERLAY_SCHEMA.names}
    for name, values in columns.items():
        if any(value is None or value == "" for value in values):
            row = next(i for i, value in enumerate(values) if value is None or value == "")
            raise StoreError(f"{path}: row {row} has no {name}")
    ids = columns["image_id"]
    if len(set(ids)) != len(ids):
        duplicate = next(image_id for image_id, count in Counter(ids).items() if count > 1)
        raise StoreError(f"{path}: image {duplicate!r} appears more than once")
    for split in set(columns["split"]):
        if split == schema.METADATA or "/" in split:
            raise StoreError(f"{path}: {split!r} cannot be a split name")
    return Overlay(ids, columns["split"], columns["client"], info)


@dataclass(frozen=True)
class _Part:
    """The images one client takes from one of the store's users: positions in that user's group."""

    split: str
    user_id: str
    indices: np.ndarray  # sorted positions in the stored user's group
    targets: np.ndarray  # where each goes in the client's image order


_LABEL_LEVELS = (
    ("coarse", (schema.LABELS_ROW, schema.LABELS_COL)),
    ("fine", (schema.FINE_LABELS_ROW, schema.FINE_LABELS_COL)),
)


class OverlayStore(FederatedStore):
    """A store whose users are an overlay's clients (see the module docstring); read-only.

    Parameters:
        path: the store.
        partition: the overlay file.
        key: an encrypted store's key.
    """

    def __init__(self, path: str | Path, partition: str | Path, key: StoreKey | None = None):
        super().__init__(path, key=key)
        #: The last client assembled (read one image at a time, a client is assembled once).
        self._assembled: tuple[tuple[str, str], Mapping[str, np.ndarray]] | None = None
        #: Each stored user's ids, labels and offsets once read (no pixels: about 100 bytes an image).
        self._metadata: dict[tuple[str, str], dict[str, np.ndarray]] = {}
        self._images: dict[tuple[str, str], Any] = {}
        try:
            self._apply(read_overlay(partition), Path(partition))
        except BaseException:
            self.close()
            raise

    def _apply(self, overlay: Overlay, partition: Path) -> None:
        made_for = overlay.info.get("store", {}).get("fingerprint")
        fingerprint = store_fingerprint(self)
        if made_for != fingerprint:
            name = overlay.info.get("store", {}).get("name", "another store")
            raise StoreError(
                f"{partition} was made for {name} (fingerprint {str(made_for)[:12]}), not for "
                f"{self.path.name} (fingerprint {fingerprint[:12]}): repartition this store"
            )
        #: The overlay file and how it was made.
        self.partition = partition
        self.partition_info = overlay.info
        self._stored_users = self._users
        where: dict[str, tuple[str, str, int]] = {}
        for split, users in self._stored_users.items():
            for user_id in users:
                group = FederatedStore._label_group(self, split, user_id)  # the stored user, low-level
                stored_ids = read_dataset(group, schema.IMAGE_IDS)
                self._metadata[split, user_id] = {schema.IMAGE_IDS: stored_ids}  # kept: read once
                for index, raw in enumerate(stored_ids):
                    where[raw.decode("utf-8")] = (split, user_id, index)
        unknown = [image_id for image_id in overlay.image_ids if image_id not in where]
        if unknown:
            raise StoreError(
                f"{partition} names {len(unknown)} images that {self.path.name} does not have (e.g. "
                f"{unknown[0]!r}): it was made for another store"
            )
        members: dict[tuple[str, str], list[str]] = {}
        for image_id, split, client in zip(overlay.image_ids, overlay.splits, overlay.clients, strict=True):
            members.setdefault((split, client), []).append(image_id)
        split_rank = {name: rank for rank, name in enumerate(schema_split_order(overlay.splits))}
        self._parts: dict[tuple[str, str], list[_Part]] = {}
        users: dict[str, dict[str, dict[str, Any]]] = {}
        for split, client in sorted(members, key=lambda key: (split_rank[key[0]], key[1])):
            ids = sorted(members[split, client])
            by_user: dict[tuple[str, str], list[tuple[int, int]]] = {}
            for position, image_id in enumerate(ids):
                stored_split, user_id, index = where[image_id]
                by_user.setdefault((stored_split, user_id), []).append((index, position))
            parts = []
            for (stored_split, user_id), pairs in sorted(by_user.items()):
                pairs.sort()
                indices = np.array([index for index, _ in pairs], dtype=np.int64)
                targets = np.array([position for _, position in pairs], dtype=np.int64)
                parts.append(_Part(stored_split, user_id, indices, targets))
            self._parts[split, client] = parts
            users.setdefault(split, {})[client] = {"images": len(ids)}
        self._users = users

    def __repr__(self) -> str:
        return super().__repr__().replace(" (open)", f", partition {self.partition.name} (open)")

    def group(self, split: str, user_id: str) -> UserGroup:
        """A client's datasets, assembled from the stored users' groups (arrays by name)."""
        users = self._split_users(split)
        if user_id not in users:
            return super().group(split, user_id)  # the same one-line error
        if self._assembled is not None and self._assembled[0] == (split, user_id):
            return self._assembled[1]
        arrays = self._assemble(self._parts[split, user_id], users[user_id]["images"])
        self._assembled = ((split, user_id), arrays)
        return arrays

    def _stored_metadata(self, split: str, user_id: str) -> dict[str, np.ndarray]:
        """A stored user's ids, labels, label pairs and JPEG offsets, read once and kept (no pixels)."""
        known = self._metadata.setdefault((split, user_id), {})
        names = [*schema.INDEX_DATASETS, *([self.image_datasets[1]] if self.image_datasets[1] else [])]
        names += [values_dataset(column.name) for column in self.metadata_columns]
        missing = [name for name in names if name not in known]
        if missing:
            group = self._stored_group(split, user_id, self._stored_users[split][user_id])
            known.update({name: read_dataset(group, name) for name in missing})
            for column in self.metadata_columns:  # a user's mask of missing values, when it has one
                count = len(known[schema.IMAGE_IDS])
                try:
                    known[nulls_dataset(column.name)] = read_dataset(group, nulls_dataset(column.name))
                except KeyError:
                    known[nulls_dataset(column.name)] = np.zeros(count, dtype=np.uint8)
        return known

    def _stored_images(self, split: str, user_id: str) -> Any:
        """A stored user's images dataset: an HDF5 dataset kept open (plain stores), or the
        decrypted array (encrypted stores, decrypted again unless it is the last one)."""
        key = (split, user_id)
        dataset = self._images.get(key)
        if dataset is None:
            group = self._stored_group(split, user_id, self._stored_users[split][user_id])
            dataset = group[self.image_datasets[0]]
            if self._cipher is None:
                self._images[key] = dataset
        return dataset

    def _label_group(self, split: str, user_id: str) -> Any:
        """A client's ids and labels only (label statistics read no pixel)."""
        users = self._split_users(split)
        if user_id not in users:
            return super().group(split, user_id)  # the same one-line error
        return self._assemble(self._parts[split, user_id], users[user_id]["images"], images=False)

    def _assemble(self, parts: list[_Part], count: int, images: bool = True) -> dict[str, np.ndarray]:
        images_name, offsets_name = self.image_datasets
        ids = np.empty(count, dtype=object)
        coarse = np.empty(count, dtype=object)
        fine = np.empty(count, dtype=object)
        label_pairs: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {"coarse": [], "fine": []}
        columns: dict[str, np.ndarray] = {}
        pixels: np.ndarray | None = None
        blobs: list[bytes] = [b""] * count
        for part in parts:
            meta = self._stored_metadata(part.split, part.user_id)
            ids[part.targets] = list(meta[schema.IMAGE_IDS][part.indices])
            coarse[part.targets] = list(meta[schema.LABELS][part.indices])
            fine[part.targets] = list(meta[schema.FINE_LABELS][part.indices])
            for column in self.metadata_columns:
                for name in (values_dataset(column.name), nulls_dataset(column.name)):
                    if name not in columns:
                        columns[name] = np.zeros(count, dtype=meta[name].dtype)
                    elif (
                        columns[name].dtype.kind == "S"
                        and meta[name].dtype.itemsize > columns[name].dtype.itemsize
                    ):
                        columns[name] = columns[name].astype(meta[name].dtype)
                    columns[name][part.targets] = meta[name][part.indices]
            moved = np.full(len(meta[schema.IMAGE_IDS]), -1, dtype=np.int64)
            moved[part.indices] = part.targets
            for level, (row_name, col_name) in _LABEL_LEVELS:
                rows = moved[meta[row_name].astype(np.int64)]
                cols = meta[col_name].astype(np.int64)
                label_pairs[level].append((rows[rows >= 0], cols[rows >= 0]))
            if not images:
                continue
            dataset = self._stored_images(part.split, part.user_id)
            if offsets_name is None:
                chosen = np.asarray(dataset[part.indices])  # only these rows are read
                if pixels is None:
                    pixels = np.empty((count, *chosen.shape[1:]), dtype=np.uint8)
                pixels[part.targets] = chosen
            else:
                files = _jpeg_files(dataset, meta[offsets_name], part.indices)
                for target, data in zip(part.targets.tolist(), files, strict=True):
                    blobs[target] = data
        arrays: dict[str, np.ndarray] = {
            schema.IMAGE_IDS: np.array(list(ids), dtype=object),
            schema.LABELS: np.array(list(coarse), dtype=object),
            schema.FINE_LABELS: np.array(list(fine), dtype=object),
        }
        for level, (row_name, col_name) in _LABEL_LEVELS:
            rows = np.concatenate([rows for rows, _ in label_pairs[level]] or [np.zeros(0, np.int64)])
            cols = np.concatenate([cols for _, cols in label_pairs[level]] or [np.zeros(0, np.int64)])
            order = np.lexsort((cols, rows))
            arrays[row_name], arrays[col_name] = rows[order], cols[order]
        arrays.update(columns)
        if not images:
            return arrays
        if offsets_name is None:
            arrays[images_name] = pixels if pixels is not None else np.zeros((0,), dtype=np.uint8)
        else:
            sizes = np.array([len(blob) for blob in blobs], dtype=np.int64)
            arrays[offsets_name] = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
            arrays[images_name] = np.frombuffer(b"".join(blobs), dtype=np.uint8)
        return arrays

    def close(self) -> None:
        self._assembled = None
        self._metadata, self._images = {}, {}
        super().close()


def _jpeg_files(blob: Any, offsets: np.ndarray, indices: np.ndarray) -> list[bytes]:
    """The JPEG files at ``indices`` of a user's byte blob (an HDF5 dataset: only their bytes are
    read, one read per run of neighbouring images; or an array in memory)."""
    files: list[bytes] = []
    for first, last in _contiguous_runs(indices):
        base = int(offsets[first])
        chunk = np.asarray(blob[base : int(offsets[last + 1])]).tobytes()
        files.extend(chunk[offsets[i] - base : offsets[i + 1] - base] for i in range(first, last + 1))
    return files


def _contiguous_runs(indices: np.ndarray) -> list[tuple[int, int]]:
    """Sorted indices as (first, last) runs of consecutive values."""
    if not len(indices):
        return []
    breaks = np.flatnonzero(np.diff(indices) != 1)
    starts = np.r_[indices[0], indices[breaks + 1]]
    stops = np.r_[indices[breaks], indices[-1]]
    return list(zip(starts.tolist(), stops.tolist(), strict=True))


def schema_split_order(splits: list[str]) -> list[str]:
    """Split names in store order: train, val, test first, then the others sorted."""
    known = [name for name in ("train", "val", "test") if name in set(splits)]
    return known + sorted(set(splits) - set(known))
