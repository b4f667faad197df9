"""Reading a store user by user for an export: ids, label indices, metadata, image files or pixels.

Images are read in chunks of :data:`CHUNK_IMAGES`, so memory stays bounded by the
chunk, not by the user, whatever the storage.

What an export writes as an image file (:meth:`ExportUser.image_files`): a lossless store's PNG
files as stored (8 or 16 bits), any other store's JPEGs. Exports whose format holds 8-bit pixels
only (ml-flair's JPEGs and uint8 arrays) refuse a 16-bit store with :func:`check_8_bit`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import h5py
import numpy as np

from fedimage.errors import FedimageError
from fedimage.imaging.jpeg_segments import JpegFormatError, read_jpeg_info
from fedimage.imaging.standardize import encode_pixels
from fedimage.store import schema
from fedimage.store.metadata import decode_user_values
from fedimage.store.reader import FederatedStore, decode_jpeg, read_dataset

CHUNK_IMAGES = 64
#: The exports whose files hold a 16-bit store's values (the others hold 8-bit pixels only).
EXPORTS_OF_16_BITS = ("parquet", "dirs", "client-bundles")
#: The file suffix of each kind of image file an export writes (see :func:`image_format`).
IMAGE_SUFFIXES = {"jpeg": ".jpg", "png": ".png"}


def image_format(store: FederatedStore) -> str:
    """The kind of image file exports write for ``store``: ``png`` (a lossless store's files, as
    stored) or ``jpeg`` (a jpeg store's as stored, a raw store's pixels encoded)."""
    return "png" if store.storage == "lossless" else "jpeg"


def check_8_bit(store: FederatedStore, what: str) -> None:
    """Refuse a 16-bit store where ``what`` (``"the tfrecords export (ml-flair's 8-bit JPEGs)"``) holds
    8-bit pixels only, in one line that names the exports that can hold it."""
    if store.bit_depth != 8:
        raise FedimageError(
            f"{store.path.name} is a {store.bit_depth}-bit store: {what} cannot hold {store.bit_depth}-bit"
            f" values; export it to {', '.join(EXPORTS_OF_16_BITS[:-1])} or {EXPORTS_OF_16_BITS[-1]},"
            " which keep them"
        )


@dataclass(frozen=True)
class ExportUser:
    """One user of a store: image ids, label indices and per-image metadata in store order, images
    on demand."""

    store: FederatedStore
    split: str
    user_id: str
    group: h5py.Group
    image_ids: list[str]
    labels: list[list[int]]  # coarse label indices of each image
    fine_labels: list[list[int]]  # fine label indices of each image
    #: ``{column: values aligned with image_ids}`` for each of the store's metadata columns, in
    #: their order (None for a missing value; see :mod:`fedimage.store.metadata`).
    metadata: dict[str, list[Any]] = field(default_factory=dict)

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
            metadata={
                column.name: decode_user_values(column, group, count) for column in store.metadata_columns
            },
        )

    def __len__(self) -> int:
        return len(self.image_ids)

    def metadata_rows(self) -> list[tuple[Any, ...]]:
        """Each image's metadata values, in the order of the store's metadata columns (``()`` each
        when the store has none)."""
        columns = list(self.metadata.values())
        return list(zip(*columns, strict=True)) if columns else [()] * len(self)

    def rows(self, quality: int) -> Iterator[tuple[str, list[int], list[int], tuple[Any, ...], bytes]]:
        """Each image as an export row: its id, coarse and fine labels, metadata values and file
        (:meth:`image_files`)."""
        return zip(
            self.image_ids,
            self.labels,
            self.fine_labels,
            self.metadata_rows(),
            self.image_files(quality),
            strict=True,
        )

    def image_files(self, quality: int) -> Iterator[bytes]:
        """Each image as the file an export writes (:func:`image_format`): a lossless store's PNG
        files as stored (8 or 16 bits, the store's colour), else JPEGs as :meth:`jpegs` gives them."""
        if self.store.storage == "lossless":
            yield from self.stored_files()
        else:
            yield from self.jpegs(quality)

    def jpegs(self, quality: int, color: str | None = None) -> Iterator[bytes]:
        """Each image as a JPEG file in the store's colour (RGB, or 1-component gray), or in ``color``:
        a jpeg store's bytes as stored, raw pixels and a lossless store's PNGs encoded at ``quality``.

        A stored JPEG whose components are not the wanted ones (a gray store's for ``color="rgb"``,
        a grayscale one byte-copied into an RGB store by an older fedimage) is decoded and
        encoded at ``quality``. A 16-bit store has no JPEG form: :func:`check_8_bit`'s error.
        """
        color = color or self.store.color
        if self.store.storage == "jpeg":
            for data in self.stored_files():
                if _has_components(data, color):
                    yield data
                else:
                    yield encode_pixels(decode_jpeg(data, color=color), quality)
            return
        check_8_bit(self.store, "a JPEG file (8 bits)")
        for pixels in self.pixels():
            yield encode_pixels(rgb_pixels(pixels) if color == "rgb" else pixels, quality)

    def stored_files(self) -> Iterator[bytes]:
        """A jpeg or lossless store's image files (JPEG or PNG) as stored."""
        images, offsets_name = self.store.image_datasets
        if offsets_name is None:
            raise FedimageError(f"{self.store.path.name} stores raw pixels, not image files")
        offsets = read_dataset(self.group, offsets_name)
        blob = self.group[images]
        for start in range(0, len(self), CHUNK_IMAGES):
            stop = min(start + CHUNK_IMAGES, len(self))
            chunk = blob[offsets[start] : offsets[stop]].tobytes()
            base = offsets[start]
            for index in range(start, stop):
                yield chunk[offsets[index] - base : offsets[index + 1] - base]

    def pixels(self) -> Iterator[np.ndarray]:
        """Each image decoded, [S, S, C] (C: the store's channels, 3 or 1) of the store's dtype:
        uint8, or uint16 for a 16-bit store."""
        if self.store.storage == "raw":
            images = self.group[schema.IMAGES]
            for start in range(0, len(self), CHUNK_IMAGES):
                yield from images[start : start + CHUNK_IMAGES]
            return
        for data in self.stored_files():
            yield self.store.decode(data)


def rgb_pixels(pixels: np.ndarray) -> np.ndarray:
    """uint8 [..., 3] pixels: gray [..., 1] repeated into three equal channels, RGB as it is."""
    return np.repeat(pixels, 3, axis=-1) if pixels.shape[-1] == 1 else pixels


def _has_components(data: bytes, color: str) -> bool:
    """True for a JPEG that decoders read as ``color``: 3-component YCbCr for RGB, 1 component for gray."""
    try:
        info = read_jpeg_info(data)
    except JpegFormatError:
        return True  # not ours to judge: copied as stored (``fedimage verify`` reports it)
    return info.components == (1 if color == "gray" else 3) and info.decodes_as_ycbcr_or_gray


def _per_image(group: h5py.Group, row_name: str, col_name: str, count: int) -> list[list[int]]:
    """pfl-research's (row, col) pairs back to one list of label indices per image."""
    per_image: list[list[int]] = [[] for _ in range(count)]
    rows, cols = read_dataset(group, row_name), read_dataset(group, col_name)
    for row, col in zip(rows.tolist(), cols.tolist(), strict=True):
        per_image[row].append(col)
    return per_image
