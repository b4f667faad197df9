"""Per-image metadata: typed columns a store keeps beside each user's images.

A conversion can keep columns of its source (``keep_columns``: a site, a device, a licence, a
time) and fields of each image's EXIF header (``exif_columns``). Each column has one of four
types, inferred from the source or declared as ``name:type``:

============= ======================================= ==============================
type          in a user group (HDF5)                  in Python (``UserData.metadata``)
============= ======================================= ==============================
``int``       int64                                   ``int``
``float``     float64                                 ``float``
``string``    UTF-8 bytes                             ``str``
``timestamp`` int64 microseconds since 1970-01-01 UTC ``datetime.datetime`` (naive, UTC)
============= ======================================= ==============================

Each column is a dataset ``meta:<name>`` of the user group, aligned with ``image_ids`` (a
name's ``/`` and ``%`` are percent-encoded); a user whose column has missing values also
holds ``meta-null:<name>`` (uint8, 1 where the value is missing). The store's manifest lists
the columns in ``image_metadata`` (name, type, where it came from, whether it holds pseudonyms).

    columns = parse_keep_columns("site,year:int,taken:timestamp")
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fedimage.errors import OptionError

METADATA_TYPES = ("int", "float", "string", "timestamp")
#: Prefix of a metadata column in a source's record table (``meta:site``).
TABLE_PREFIX = "meta:"
#: Prefixes of a user group's metadata datasets: the values, and the missing-value mask.
VALUES_PREFIX = "meta:"
NULLS_PREFIX = "meta-null:"
_EPOCH = dt.datetime(1970, 1, 1)
_ARROW_TYPES = {
    "int": pa.int64(),
    "float": pa.float64(),
    "string": pa.string(),
    "timestamp": pa.timestamp("us"),
}


@dataclass(frozen=True, slots=True)
class KeepColumn:
    """A source column to keep per image, and its declared type (None: inferred from the values)."""

    name: str
    type: str | None = None

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise OptionError("`keep_columns` names an empty column")
        if self.type is not None and self.type not in METADATA_TYPES:
            raise OptionError(
                f"`keep_columns` type {self.type!r} of column {self.name!r} is not one of"
                f" {', '.join(METADATA_TYPES)}"
            )

    def __str__(self) -> str:
        return self.name if self.type is None else f"{self.name}:{self.type}"


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
        return _ARROW_TYPES[self.type]


@dataclass(frozen=True, slots=True)
class MetadataOptions:
    """Which per-image metadata a conversion keeps.

    Parameters:
        keep_columns: source columns kept per image (``"site,year:int"``, a list of names, or
            :class:`KeepColumn`); a ``:type`` suffix declares the type, else it is inferred.
        exif_columns: fields of each image's EXIF header (see :data:`fedimage.imaging.exif.EXIF_FIELDS`),
            read before the header is stripped.
        pseudonymize_columns: kept columns (or the ``partition_key`` column) whose values are
            replaced by keyed HMAC pseudonyms (needs the conversion's ``pseudonyms`` key).

    Example::

        MetadataOptions(keep_columns="site,taken:timestamp", exif_columns="camera_model")
    """

    keep_columns: tuple[KeepColumn, ...] | str | Sequence[str] = ()
    exif_columns: tuple[str, ...] | str = ()
    pseudonymize_columns: tuple[str, ...] | str = ()

    def __post_init__(self) -> None:
        from fedimage.imaging.exif import EXIF_FIELDS

        object.__setattr__(self, "keep_columns", parse_keep_columns(self.keep_columns))
        object.__setattr__(self, "exif_columns", parse_names(self.exif_columns, "exif_columns"))
        object.__setattr__(
            self, "pseudonymize_columns", parse_names(self.pseudonymize_columns, "pseudonymize_columns")
        )
        for name in self.exif_columns:
            if name not in EXIF_FIELDS:
                raise OptionError(f"`exif_columns` field {name!r} is not one of {', '.join(EXIF_FIELDS)}")
        kept = {column.name for column in self.keep_columns}
        clashing = sorted(kept & set(self.exif_columns))
        if clashing:
            raise OptionError(
                f"`keep_columns` and `exif_columns` both name {clashing[0]!r}: a store's metadata column"
                " has one source"
            )

    @property
    def kept_names(self) -> list[str]:
        return [column.name for column in self.keep_columns]  # type: ignore[union-attr]

    def __bool__(self) -> bool:
        return bool(self.keep_columns or self.exif_columns or self.pseudonymize_columns)

    def describe(self) -> dict[str, Any]:
        """The options as the run's settings and the manifest record them."""
        return {
            "keep_columns": [str(column) for column in self.keep_columns],
            "exif_columns": list(self.exif_columns),
            "pseudonymize_columns": list(self.pseudonymize_columns),
        }


def parse_keep_columns(spec: str | Iterable[str | KeepColumn] | None) -> tuple[KeepColumn, ...]:
    """``"a,b:int"`` (or a list of such names, or of :class:`KeepColumn`) as columns to keep.

    A name ending in ``:int``, ``:float``, ``:string`` or ``:timestamp`` declares the type; any
    other colon is part of the name. A column named twice is an error.

        parse_keep_columns("site,year:int")  # (KeepColumn('site'), KeepColumn('year', 'int'))
    """
    if spec is None or (isinstance(spec, str) and not spec.strip()):
        return ()
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    columns: list[KeepColumn] = []
    for item in items:
        if isinstance(item, KeepColumn):
            columns.append(item)
            continue
        text = item.strip()
        name, _, suffix = text.rpartition(":")
        columns.append(
            KeepColumn(name.strip(), suffix) if name and suffix in METADATA_TYPES else KeepColumn(text)
        )
    names = [column.name for column in columns]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise OptionError(f"`keep_columns` names column {repeated[0]!r} twice")
    return tuple(columns)


def parse_names(spec: str | Iterable[str] | None, option: str) -> tuple[str, ...]:
    """A comma-separated list (or a list) of names, stripped, none empty or repeated."""
    if spec is None or (isinstance(spec, str) and not spec.strip()):
        return ()
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    names = tuple(item.strip() for item in items)
    if any(not name for name in names):
        raise OptionError(f"`{option}` names an empty column")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise OptionError(f"`{option}` names column {repeated[0]!r} twice")
    return names


def table_column(name: str) -> str:
    """The record-table column holding metadata column ``name``."""
    return TABLE_PREFIX + name


def values_dataset(name: str) -> str:
    """The user-group dataset holding column ``name``'s values."""
    return VALUES_PREFIX + quote(name, safe="")


def nulls_dataset(name: str) -> str:
    """The user-group dataset marking column ``name``'s missing values (present only when some are)."""
    return NULLS_PREFIX + quote(name, safe="")


# -- building a column from a source's cells ---------------------------------------------------------


def raw_column(values: Sequence[Any]) -> tuple[pa.Array, dict[int, str]]:
    """A source's cells (Python values, one per row) as an Arrow array, and the rows it cannot hold.

    Numbers, text, booleans, dates and times are kept; a list or an object is a problem of its
    row (its cell becomes missing). Cells of mixed kinds (numbers and text) become text.
    """
    problems: dict[int, str] = {}
    cells = list(values)
    for row, value in enumerate(cells):
        if isinstance(value, list | tuple | dict) or (
            hasattr(value, "ndim") and getattr(value, "ndim", 0) > 0
        ):
            problems[row] = "holds a list" if not isinstance(value, dict) else "holds an object"
            cells[row] = None
        elif isinstance(value, str) and not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                problems[row] = "holds text that is not valid Unicode"
                cells[row] = None
        elif isinstance(value, bytes):
            try:
                cells[row] = value.decode("utf-8")
            except UnicodeDecodeError:
                problems[row] = "holds bytes that are not UTF-8 text"
                cells[row] = None
    try:
        return pa.array(cells, from_pandas=True), problems
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
        return pa.array([None if _missing(cell) else _as_text(cell) for cell in cells], pa.string()), problems


def _as_text(value: Any) -> str:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def typed_column(
    column: pa.Array | pa.ChunkedArray, declared: str | None, name: str
) -> tuple[pa.Array, str, dict[int, str]]:
    """A metadata column with its final type: ``(values, type, {row: problem})``.

    ``declared`` None infers the type: integers are ``int``, other numbers ``float``, dates and
    times ``timestamp``, booleans ``int`` (0, 1); text becomes ``int``, ``float`` or
    ``timestamp`` when every value reads as one (ISO 8601 times), else stays ``string``. Empty
    text is a missing value. A declared type converts every value; a value that does not read as
    one is a problem of its row (named without quoting the value, which may identify someone).
    """
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    kind = array.type
    if (
        pa.types.is_list(kind)
        or pa.types.is_large_list(kind)
        or pa.types.is_struct(kind)
        or pa.types.is_map(kind)
    ):
        raise OptionError(
            f"`keep_columns` column {name!r} holds {kind} values; a metadata column holds"
            f" {', '.join(METADATA_TYPES)} values"
        )
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        try:
            array = pc.cast(array, pa.string())
        except pa.ArrowInvalid:
            raise OptionError(f"`keep_columns` column {name!r} holds bytes that are not UTF-8 text") from None
        kind = array.type
    if pa.types.is_boolean(kind):
        array, kind = pc.cast(array, pa.int64()), pa.int64()
    if pa.types.is_large_string(kind):
        array, kind = pc.cast(array, pa.string()), pa.string()
    if pa.types.is_string(kind):
        array = pc.utf8_trim_whitespace(array)
        array = pc.if_else(pc.equal(array, ""), pa.scalar(None, pa.string()), array)
    target = declared or _inferred(array)
    return _converted(array, target, name)


def _inferred(array: pa.Array) -> str:
    kind = array.type
    if pa.types.is_integer(kind):
        return "int"
    if pa.types.is_floating(kind) or pa.types.is_decimal(kind):
        return "float"
    if pa.types.is_timestamp(kind) or pa.types.is_date(kind):
        return "timestamp"
    if pa.types.is_null(kind):
        return "string"
    if pa.types.is_string(kind):
        present = pc.drop_null(array)
        if len(present) == 0:
            return "string"
        for candidate in ("int", "float", "timestamp"):
            if not _text_problems(present, candidate):
                return candidate
    return "string"


def _converted(array: pa.Array, target: str, name: str) -> tuple[pa.Array, str, dict[int, str]]:
    kind = array.type
    wanted = _ARROW_TYPES[target]
    if pa.types.is_null(kind):
        return pa.nulls(len(array), wanted), target, {}
    if target == "string":
        if pa.types.is_timestamp(kind) or pa.types.is_date(kind):
            texts = [None if value is None else value.isoformat() for value in _timestamps(array).to_pylist()]
            return pa.array(texts, pa.string()), target, {}
        return pc.cast(array, pa.string()), target, {}
    if pa.types.is_string(kind):
        problems = _text_problems(array, target)
        if problems:
            mask = np.zeros(len(array), dtype=bool)
            mask[list(problems)] = True
            array = pc.if_else(pa.array(mask), pa.scalar(None, pa.string()), array)
        return _cast_text(array, target), target, problems
    if target == "timestamp":
        if pa.types.is_timestamp(kind) or pa.types.is_date(kind):
            return _timestamps(array), target, {}
        raise OptionError(
            f"`keep_columns` column {name!r} holds {kind} values, not times: it cannot be a timestamp"
        )
    if pa.types.is_timestamp(kind) or pa.types.is_date(kind):
        raise OptionError(f"`keep_columns` column {name!r} holds times: it cannot be {target}")
    if target == "int" and (pa.types.is_floating(kind) or pa.types.is_decimal(kind)):
        values = pc.cast(array, pa.float64())
        whole = pc.fill_null(pc.or_(pc.is_null(values), pc.equal(pc.floor(values), values)), True)
        problems = {
            row: "holds a number that is not an integer"
            for row in np.flatnonzero(~whole.to_numpy(zero_copy_only=False)).tolist()
        }
        kept = pc.if_else(whole, values, pa.scalar(None, pa.float64()))
        return pc.cast(kept, pa.int64()), target, problems
    return pc.cast(array, wanted), target, {}


def _timestamps(array: pa.Array) -> pa.Array:
    """Dates and times as naive UTC microseconds (a zoned time converted to UTC)."""
    if pa.types.is_date(array.type):
        return pc.cast(pc.cast(array, pa.timestamp("s")), pa.timestamp("us"))
    if array.type.tz is not None:  # the values are UTC already: drop the zone
        array = pa.Array.from_buffers(pa.timestamp(array.type.unit), len(array), array.buffers())
    return pc.cast(array, pa.timestamp("us"))


def _parse_text(text: str, target: str) -> Any:
    if target == "int":
        return int(text)
    if target == "float":
        return float(text)
    return parse_time(text)


def parse_time(text: str) -> dt.datetime:
    """An ISO 8601 time (or EXIF's ``2021:05:04 12:00:00``) as a naive UTC datetime."""
    text = text.strip()
    if len(text) >= 19 and text[4] == ":" and text[7] == ":":  # EXIF's date separator
        text = text[:4] + "-" + text[5:7] + "-" + text[8:]
    value = dt.datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


def _text_problems(array: pa.Array, target: str) -> dict[int, str]:
    """The rows of a text column whose value does not read as ``target``."""
    try:
        _cast_text(array, target)
        return {}
    except (pa.ArrowInvalid, ValueError, OverflowError):
        pass
    what = {"int": "an integer", "float": "a number", "timestamp": "an ISO 8601 time"}[target]
    problems = {}
    for row, text in enumerate(array.to_pylist()):
        if text is None:
            continue
        try:
            _parse_text(text, target)
        except (ValueError, OverflowError):
            problems[row] = f"holds text that is not {what}"
    return problems


def _cast_text(array: pa.Array, target: str) -> pa.Array:
    if target == "timestamp":
        values = [None if text is None else parse_time(text) for text in array.to_pylist()]
        return pa.array(values, pa.timestamp("us"))
    if target == "int":
        values = [None if text is None else int(text) for text in array.to_pylist()]
        return pa.array(values, pa.int64())
    return pc.cast(array, pa.float64())


# -- the values of one user: HDF5 datasets and back ---------------------------------------------------


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
    """One user's values of ``column`` read from its group (datasets by name), None for missing."""
    from fedimage.store.reader import read_dataset

    name = values_dataset(column.name)
    try:
        data = read_dataset(group, name)
    except KeyError:
        return [None] * count
    nulls_name = nulls_dataset(column.name)
    missing = (
        read_dataset(group, nulls_name).astype(bool) if _has(group, nulls_name) else np.zeros(len(data), bool)
    )
    if column.type == "string":
        values: list[Any] = [raw.decode("utf-8") for raw in data.tolist()]
    elif column.type == "timestamp":
        values = [_EPOCH + dt.timedelta(microseconds=int(value)) for value in data.tolist()]
    else:
        values = data.tolist()
    return [None if gone else value for value, gone in zip(values, missing.tolist(), strict=True)]


def _has(group: Any, name: str) -> bool:
    import h5py

    if isinstance(group, h5py.h5g.GroupID):
        return group.links.exists(name.encode("utf-8"))
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
    "KeepColumn",
    "MetadataColumn",
    "arrow_values",
    "decode_user_values",
    "encode_user_values",
    "json_value",
    "manifest_columns",
    "parse_keep_columns",
    "typed_column",
]
