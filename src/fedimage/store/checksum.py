"""Checksums of user groups: one SHA-256 over a line per dataset (its name, dtype, shape and the
digest of its bytes).

The digest of a dataset's bytes is BLAKE3 in the stores fedimage writes (format version 3) and
SHA-256 in older ones (:func:`fedimage.store.schema.dataset_digest`). Every function here takes the
``algorithm``; None means the one of the version written now.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from typing import Any

import blake3
import h5py
import numpy as np

from fedimage.store import schema

READ_BLOCK_BYTES = 64 << 20
#: The hashes a dataset's bytes may be digested with, by name.
DIGESTS: dict[str, Callable[[], Any]] = {"sha256": hashlib.sha256, "blake3": blake3.blake3}


def current_digest() -> str:
    """The dataset digest of the stores written now (and of a conversion's shards)."""
    return schema.dataset_digest(schema.FORMAT_VERSION)


class DatasetDigest:
    """The digest of a dataset's bytes (``algorithm``: a name in :data:`DIGESTS`; None: the stores
    written now), fed incrementally, plus its dtype and shape.

    Example::

        digest = DatasetDigest("blake3")
        digest.update(np.zeros((2, 4, 4, 3), dtype=np.uint8))
        digest.line("images", np.dtype(np.uint8), (2, 4, 4, 3))  # 'images:|u1:2x4x4x3:…'
    """

    def __init__(self, algorithm: str | None = None) -> None:
        self._hash = DIGESTS[algorithm or current_digest()]()

    def update(self, array: np.ndarray | bytes | memoryview) -> None:
        """Feed the next bytes: an array's (C order) or a bytes-like object's."""
        if isinstance(array, np.ndarray):
            if array.dtype.hasobject:  # variable-length values (never written by fedimage): their text
                array = np.frombuffer(repr(array.tolist()).encode("utf-8"), dtype=np.uint8)
            array = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
        elif isinstance(array, memoryview) and array.format != "B":
            array = array.cast("B")  # BLAKE3 takes bytes only
        self._hash.update(array)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()

    def line(self, name: str, dtype: np.dtype, shape: tuple[int, ...]) -> str:
        return digest_line(name, dtype, shape, self._hash.hexdigest())


def digest_line(name: str, dtype: np.dtype, shape: tuple[int, ...], hexdigest: str) -> str:
    """A dataset's line of its group's checksum: name, dtype, shape and the digest of its bytes."""
    dims = "x".join(str(size) for size in shape)
    return f"{name}:{np.dtype(dtype).str}:{dims}:{hexdigest}\n"


def group_checksum(lines: Iterable[str]) -> str:
    """Combine per-dataset lines (any order) into the group's checksum."""
    digest = hashlib.sha256()
    for line in sorted(lines):
        digest.update(line.encode("utf-8"))
    return digest.hexdigest()


def array_line(name: str, array: np.ndarray, algorithm: str | None = None) -> str:
    digest = DatasetDigest(algorithm)
    digest.update(array)
    return digest.line(name, array.dtype, array.shape)


def checksum_of_group(
    group: h5py.Group, extra_lines: Iterable[str] = (), algorithm: str | None = None
) -> str:
    """Recompute a stored group's checksum, reading large datasets in blocks (``extra_lines``: the
    lines of datasets kept elsewhere; ``algorithm``: the store's dataset digest)."""
    lines = list(extra_lines)
    for name, dataset in group.items():
        digest = DatasetDigest(algorithm)
        if dataset.shape == ():
            digest.update(np.asarray(dataset[()]))
        elif dataset.size:
            row_bytes = max(1, dataset.dtype.itemsize * int(np.prod(dataset.shape[1:])))
            step = max(1, READ_BLOCK_BYTES // row_bytes)
            for start in range(0, dataset.shape[0], step):
                digest.update(dataset[start : start + step])
        lines.append(digest.line(name, dataset.dtype, dataset.shape))
    return group_checksum(lines)
