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

from fedimage.imaging.jpeg_segments import JpegFormatError, read_jpeg_info
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
        """Each image as an RGB JPEG file: a jpeg store's bytes as stored, raw pixels encoded at ``quality``.

        A stored JPEG that is not 3-component YCbCr (a grayscale one byte-copied by an
        older fedimage) is decoded and encoded as RGB at ``quality``.
        """
        if self.store.storage == "jpeg":
            for data in self._stored_jpegs():
                yield data if _is_rgb_jpeg(data) else encode_rgb_jpeg(decode_jpeg(data), quality)
            return
        for pixels in self.pixels():
            yield encode_rgb_jpeg(pixels, quality)

    def _stored_jpegs(self) -> Iterator[bytes]:
        """A jpeg store's JPEG files as stored."""
        images, offsets_name = self.store.image_datasets
        offsets = read_dataset(self.group, offsets_name)
        blob = self.group[images]
        for start in range(0, len(self), CHUNK_IMAGES):
            stop = min(start + CHUNK_IMAGES, len(self))
            chunk = blob[offsets[start] : offsets[stop]].tobytes()
            base = offsets[start]
            for index in range(start, stop):
                yield chunk[offsets[index] - base : offsets[index + 1] - base]

    def pixels(self) -> Iterator[np.ndarray]:
        """Each image decoded, uint8 [S, S, 3]."""
        if self.store.storage == "raw":
            images = self.group[schema.IMAGES]
            for start in range(0, len(self), CHUNK_IMAGES):
                yield from images[start : start + CHUNK_IMAGES]
            return
        for data in self._stored_jpegs():
            yield decode_jpeg(data)


def encode_rgb_jpeg(pixels: np.ndarray, quality: int) -> bytes:
    """uint8 RGB pixels as a baseline 4:2:0 JPEG."""
    return simplejpeg.encode_jpeg(pixels, quality=quality, colorspace="RGB", colorsubsampling="420")


def _is_rgb_jpeg(data: bytes) -> bool:
    """True for a 3-component JPEG that decoders read as YCbCr (what every reader takes as RGB)."""
    try:
        info = read_jpeg_info(data)
    except JpegFormatError:
        return True  # not ours to judge: copied as stored (``fedimage verify`` reports it)
    return info.components == 3 and info.decodes_as_ycbcr_or_gray


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
