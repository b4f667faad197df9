"""Checksums of user groups: one SHA-256 over every dataset's dtype, shape and bytes."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import h5py
import numpy as np

READ_BLOCK_BYTES = 64 << 20


class DatasetDigest:
    """SHA-256 of a dataset's bytes, fed incrementally, plus its dtype and shape."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()

    def update(self, array: np.ndarray) -> None:
        self._hash.update(np.ascontiguousarray(array).data)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()

    def line(self, name: str, dtype: np.dtype, shape: tuple[int, ...]) -> str:
        return digest_line(name, dtype, shape, self._hash.hexdigest())


def digest_line(name: str, dtype: np.dtype, shape: tuple[int, ...], hexdigest: str) -> str:
    """A dataset's line of its group's checksum: name, dtype, shape and the SHA-256 of its bytes."""
    dims = "x".join(str(size) for size in shape)
    return f"{name}:{np.dtype(dtype).str}:{dims}:{hexdigest}\n"


def group_checksum(lines: Iterable[str]) -> str:
    """Combine per-dataset lines (any order) into the group's checksum."""
    digest = hashlib.sha256()
    for line in sorted(lines):
        digest.update(line.encode("utf-8"))
    return digest.hexdigest()


def array_line(name: str, array: np.ndarray) -> str:
    digest = DatasetDigest()
    digest.update(array)
    return digest.line(name, array.dtype, array.shape)


def checksum_of_group(group: h5py.Group, extra_lines: Iterable[str] = ()) -> str:
    """Recompute a stored group's checksum, reading large datasets in blocks (``extra_lines``: the
    lines of datasets kept elsewhere)."""
    lines = list(extra_lines)
    for name, dataset in group.items():
        digest = DatasetDigest()
        if dataset.shape == ():
            digest.update(np.asarray(dataset[()]))
        elif dataset.size:
            row_bytes = max(1, dataset.dtype.itemsize * int(np.prod(dataset.shape[1:])))
            step = max(1, READ_BLOCK_BYTES // row_bytes)
            for start in range(0, dataset.shape[0], step):
                digest.update(dataset[start : start + step])
        lines.append(digest.line(name, dataset.dtype, dataset.shape))
    return group_checksum(lines)
