"""Reading a store user by user for an export: ids, label indices, JPEG bytes or pixels.

Images are read in chunks of :data:`CHUNK_IMAGES`, so memory stays bounded by the
chunk, not by the user, whatever the storage.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import h5py
import numpy as np
import simplejpeg

from fedimage.store import schema
from fedimage.store.reader import FederatedStore, decode_jpeg

CHUNK_IMAGES = 64


@dataclass(frozen=True)
class ExportUser:
    """One user of a store: image ids and label indices in store order, images on demand."""

    store: FederatedStore
    split: str
    user_id: str
    group: h5py.Group
    image_ids: list[str]
    labels: list[list[int]]  # coarse label indices of each image
    fine_labels: list[list[int]]  # fine label indices of each image

    @classmethod
    def read(cls, store: FederatedStore, split: str, user_id: str) -> ExportUser:
        group = store.group(split, user_id)
        image_ids = [raw.decode("utf-8") for raw in read_dataset(group, schema.IMAGE_IDS)]
        count = len(image_ids)
        return cls(
            store=store,
            split=split,
            user_id=user_id,
            group=group,
            image_ids=image_ids,
            labels=_per_image(group, schema.LABELS_ROW, schema.LABELS_COL, count),
            fine_labels=_per_image(group, schema.FINE_LABELS_ROW, schema.FINE_LABELS_COL, count),
        )

    def __len__(self) -> int:
        return len(self.image_ids)

    def jpegs(self, quality: int) -> Iterator[bytes]:
        """Each image as a JPEG file: a jpeg store's bytes as stored, raw pixels encoded at ``quality``."""
        if self.store.storage == "jpeg":
            offsets = read_dataset(self.group, schema.IMAGE_OFFSETS)
            blob = self.group[schema.IMAGES]
            for start in range(0, len(self), CHUNK_IMAGES):
                stop = min(start + CHUNK_IMAGES, len(self))
                chunk = blob[offsets[start] : offsets[stop]].tobytes()
                base = offsets[start]
                for index in range(start, stop):
                    yield chunk[offsets[index] - base : offsets[index + 1] - base]
            return
        for pixels in self.pixels():
            yield simplejpeg.encode_jpeg(pixels, quality=quality, colorspace="RGB", colorsubsampling="420")

    def pixels(self) -> Iterator[np.ndarray]:
        """Each image decoded, uint8 [S, S, 3]."""
        images = self.group[schema.IMAGES]
        if self.store.storage == "raw":
            for start in range(0, len(self), CHUNK_IMAGES):
                yield from images[start : start + CHUNK_IMAGES]
            return
        for data in self.jpegs(quality=0):
            yield decode_jpeg(data)


def read_dataset(group: h5py.Group, name: str) -> np.ndarray:
    """A whole dataset of a group through h5py's low-level API (a third of ``group[name][()]``'s time)."""
    if not isinstance(group, h5py.Group):  # an encrypted store's decrypted user: arrays in memory
        return np.asarray(group[name])
    dataset = h5py.h5d.open(group.id, name.encode("utf-8"))
    array = np.empty(dataset.shape, dtype=dataset.dtype)
    if array.size:
        dataset.read(h5py.h5s.ALL, h5py.h5s.ALL, array)
    return array


def _per_image(group: h5py.Group, row_name: str, col_name: str, count: int) -> list[list[int]]:
    """pfl-research's (row, col) pairs back to one list of label indices per image."""
    per_image: list[list[int]] = [[] for _ in range(count)]
    rows, cols = read_dataset(group, row_name), read_dataset(group, col_name)
    for row, col in zip(rows.tolist(), cols.tolist(), strict=True):
        per_image[row].append(col)
    return per_image
