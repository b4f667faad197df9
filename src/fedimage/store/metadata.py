"""Per-image metadata in a store: typed columns beside each user's images.

A conversion can keep columns of its source and fields of each image's EXIF header (see
:mod:`fedimage.conversion.metadata`). Each column has one of four types:

============= ======================================= ==============================
type          in a user group (HDF5)                  in Python (``UserData.metadata``)
============= ======================================= ==============================
``int``       int64                                   ``int``
``float``     float64                                 ``float``
``string``    UTF-8 bytes                             ``str``
``timestamp`` int64 microseconds since 1970-01-01 UTC ``datetime.datetime`` (naive, UTC)
============= ======================================= ==============================

Each column is a dataset ``meta:<name>`` of the user group, aligned with ``image_ids`` (a
name's ``/`` and ``%``, and any other character but letters, digits and ``_.-~``, are
percent-encoded); a user whose column has missing values also holds ``meta-null:<name>`` (uint8,
1 where the value is missing). The store's manifest lists the columns in ``image_metadata``
(name, type, where it came from, whether it holds pseudonyms).

    arrays = encode_user_values(MetadataColumn("site", "string"), ["Lab A", None])
    decode_user_values(MetadataColumn("site", "string"), arrays, 2)   # ['Lab A', None]
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import numpy as np
import pyarrow as pa

METADATA_TYPES = ("int", "float", "string", "timestamp")
#: Prefixes of a user group's metadata datasets: the values, and the missing-value mask.
VALUES_PREFIX = "meta:"
NULLS_PREFIX = "meta-null:"
_EPOCH = dt.datetime(1970, 1, 1)
ARROW_TYPES = {
    "int": pa.int64(),
    "float": pa.float64(),
    "string": pa.string(),
    "timestamp": pa.timestamp("us"),
}


@dataclass(frozen=True, slots=True)
class MetadataColumn:
    """A metadata column of a store: its name, type, origin (``column`` or ``exif``), and whether
    its values are pseudonyms."""

    name: str
    type: str
    origin: str = "column"
    pseudonymized: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "origin": self.origin,
            "pseudonymized": self.pseudonymized,
        }

    @classmethod
    def from_json(cls, entry: Mapping[str, Any]) -> MetadataColumn:
        return cls(
            str(entry["name"]),
            str(entry["type"]),
            str(entry.get("origin", "column")),
            bool(entry.get("pseudonymized")),
        )

    @property
    def arrow_type(self) -> pa.DataType:
        return ARROW_TYPES[self.type]


def values_dataset(name: str) -> str:
    """The user-group dataset holding column ``name``'s values."""
    return VALUES_PREFIX + quote(name, safe="")


def nulls_dataset(name: str) -> str:
    """The user-group dataset marking column ``name``'s missing values (present only when some are)."""
    return NULLS_PREFIX + quote(name, safe="")


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def parse_time(text: str) -> dt.datetime:
    """An ISO 8601 time (or EXIF's ``2021:05:04 12:00:00``) as a naive UTC datetime."""
    text = text.strip()
    if len(text) >= 19 and text[4] == ":" and text[7] == ":":  # EXIF's date separator
        text = text[:4] + "-" + text[5:7] + "-" + text[8:]
    value = dt.datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


def encode_user_values(column: MetadataColumn, values: Sequence[Any]) -> dict[str, np.ndarray]:
    """One user's values of ``column`` (Python values, None for missing) as its group's datasets."""
    missing = np.array([_missing(value) for value in values], dtype=bool)
    if column.type == "string":
        data = np.array(
            [
                b"" if gone else str(value).encode("utf-8")
                for value, gone in zip(values, missing, strict=True)
            ],
            dtype="S",
        )
        if data.dtype.itemsize == 0:
            data = data.astype("S1")
    elif column.type == "float":
        data = np.array(
            [math.nan if gone else float(value) for value, gone in zip(values, missing, strict=True)],
            dtype=np.float64,
        )
    elif column.type == "int":
        data = np.array(
            [0 if gone else int(value) for value, gone in zip(values, missing, strict=True)], dtype=np.int64
        )
    else:
        data = np.array(
            [0 if gone else microseconds(value) for value, gone in zip(values, missing, strict=True)],
            dtype=np.int64,
        )
    arrays = {values_dataset(column.name): data}
    if missing.any():
        arrays[nulls_dataset(column.name)] = missing.astype(np.uint8)
    return arrays


def microseconds(value: dt.datetime | dt.date | str) -> int:
    """A time as microseconds since 1970-01-01 UTC (a naive time is taken as UTC)."""
    if isinstance(value, str):
        value = parse_time(value)
    if not isinstance(value, dt.datetime):
        value = dt.datetime(value.year, value.month, value.day)
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def decode_user_values(column: MetadataColumn, group: Any, count: int) -> list[Any]:
    """One user's values of ``column`` read from its group (an HDF5 group, or arrays by name),
    None for missing."""
    name = values_dataset(column.name)
    try:
        data = np.asarray(group[name][()])
    except KeyError:
        return [None] * count
    nulls_name = nulls_dataset(column.name)
    if _has(group, nulls_name):
        missing = np.asarray(group[nulls_name][()]).astype(bool)
    else:
        missing = np.zeros(len(data), dtype=bool)
    if column.type == "string":
        values: list[Any] = [raw.decode("utf-8") for raw in data.tolist()]
    elif column.type == "timestamp":
        values = [_EPOCH + dt.timedelta(microseconds=int(value)) for value in data.tolist()]
    else:
        values = data.tolist()
    return [None if gone else value for value, gone in zip(values, missing.tolist(), strict=True)]


def _has(group: Any, name: str) -> bool:
    return name in group


def arrow_values(column: MetadataColumn, values: Sequence[Any]) -> pa.Array:
    """Python values of ``column`` as a typed Arrow array (for exports)."""
    return pa.array(list(values), column.arrow_type)


def json_value(value: Any) -> Any:
    """A value as JSON holds it (a time in ISO 8601)."""
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def manifest_columns(manifest: Mapping[str, Any]) -> list[MetadataColumn]:
    """The metadata columns a store's manifest lists (none before per-image metadata existed)."""
    return [MetadataColumn.from_json(entry) for entry in manifest.get("image_metadata", [])]


def describe(columns: Sequence[MetadataColumn]) -> str:
    """``site (string), year (int)`` for messages."""
    return ", ".join(f"{column.name} ({column.type})" for column in columns)


__all__ = [
    "METADATA_TYPES",
    "MetadataColumn",
    "arrow_values",
    "decode_user_values",
    "encode_user_values",
    "json_value",
    "manifest_columns",
    "microseconds",
    "nulls_dataset",
    "values_dataset",
]
