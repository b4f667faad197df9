"""TFRecord files without TensorFlow: each record is framed as TensorFlow writes it.

A record is ``length`` (uint64 little-endian), ``masked_crc32c(length)`` (uint32),
``data``, ``masked_crc32c(data)`` (uint32); CRC-32C comes from ``google-crc32c``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from functools import cache
from pathlib import Path
from types import TracebackType

from fedimage.extras import require

_MASK_DELTA = 0xA282EAD8


@cache
def _crc32c() -> Callable[[bytes], int]:
    return require("google_crc32c", "the tfrecords export").value


def masked_crc32c(data: bytes) -> int:
    """TensorFlow's masked CRC-32C: the CRC rotated right by 15 bits plus a constant."""
    crc = _crc32c()(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


class TFRecordWriter:
    """Writes records to one uncompressed ``.tfrecords`` file. Use as a context manager."""

    def __init__(self, path: Path):
        _crc32c()  # fail before creating the file when google-crc32c is missing
        self._file = open(path, "wb")  # noqa: SIM115 (closed by close/__exit__)

    def write(self, record: bytes) -> None:
        length = struct.pack("<Q", len(record))
        self._file.write(length + struct.pack("<I", masked_crc32c(length)))
        self._file.write(record)
        self._file.write(struct.pack("<I", masked_crc32c(record)))

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> TFRecordWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
