"""A small self-describing container of numpy arrays: what one sealed user blob holds.

Layout: ``MAGIC``, a little-endian uint32 header length, a JSON header listing each array's
name, dtype, shape, offset and byte length, then the arrays' bytes (each at an 8-byte aligned
offset). Only integer, floating-point and fixed-length byte-string dtypes are accepted, never objects, so
unpacking cannot run code (unlike pickle) and returns read-only views of the buffer.
The same arrays always pack to the same bytes.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping

import numpy as np

from fedimage.errors import StoreError

MAGIC = b"FIMGARR1"
_LENGTH = struct.Struct("<I")
_ALIGN = 8
_KINDS = frozenset("uifS")


def _padding(size: int) -> int:
    return -size % _ALIGN


def pack_arrays(arrays: Mapping[str, np.ndarray]) -> bytes:
    """Serialize ``{name: array}`` (integer, float or ``S`` dtypes) into one byte string."""
    entries = []
    offset = 0
    contiguous = {}
    for name, array in arrays.items():
        array = np.ascontiguousarray(array)
        if array.dtype.kind not in _KINDS:
            raise StoreError(
                f"cannot seal array {name!r} of dtype {array.dtype}: integers, floats and bytes only"
            )
        contiguous[name] = array
        entries.append([name, array.dtype.str, list(array.shape), offset, array.nbytes])
        offset += array.nbytes + _padding(array.nbytes)
    header = json.dumps({"arrays": entries}, separators=(",", ":")).encode("utf-8")
    start = len(MAGIC) + _LENGTH.size + len(header)
    parts = [MAGIC, _LENGTH.pack(len(header)), header, bytes(_padding(start))]
    for array in contiguous.values():
        parts += [array.tobytes(), bytes(_padding(array.nbytes))]
    return b"".join(parts)


def unpack_arrays(data: bytes | memoryview, what: str = "sealed data") -> dict[str, np.ndarray]:
    """The arrays of a container made by :func:`pack_arrays`, as read-only views of ``data``."""
    view = memoryview(data)
    prefix = len(MAGIC) + _LENGTH.size
    if len(view) < prefix or bytes(view[: len(MAGIC)]) != MAGIC:
        raise StoreError(f"{what} is not a fedimage array container")
    (header_size,) = _LENGTH.unpack_from(view, len(MAGIC))
    start = prefix + header_size
    start += _padding(start)
    try:
        entries = json.loads(bytes(view[prefix : prefix + header_size]))["arrays"]
    except (ValueError, KeyError, TypeError):
        raise StoreError(f"{what} has an unreadable container header") from None
    arrays: dict[str, np.ndarray] = {}
    for entry in entries:
        try:
            name, dtype_text, shape, offset, size = entry
            dtype = np.dtype(dtype_text)
            shape = tuple(int(dim) for dim in shape)
        except (ValueError, TypeError):
            raise StoreError(f"{what}: bad container entry {entry!r}") from None
        count = int(np.prod(shape, dtype=np.int64))
        if (
            dtype.kind not in _KINDS
            or dtype.itemsize == 0
            or min(shape, default=0) < 0
            or count * dtype.itemsize != size
            or not 0 <= offset <= len(view) - start - size
        ):
            raise StoreError(f"{what}: container entry {name!r} does not fit its data")
        array = np.frombuffer(view, dtype=dtype, count=count, offset=start + offset)
        arrays[str(name)] = array.reshape(shape)
    return arrays
