"""Per-image metadata columns of a source: which to keep, and their cells typed.

A source gives the kept columns' cells as ``meta:<name>`` columns of its record table
(:func:`table_column`); :func:`typed_column` gives each its type (see
:mod:`fedimage.store.metadata`), inferred or declared as ``name:type``.

    columns = parse_keep_columns("site,year:int,taken:timestamp")
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fedimage.errors import OptionError
from fedimage.store.metadata import ARROW_TYPES, METADATA_TYPES, parse_time

#: Prefix of a metadata column in a source's record table (``meta:site``).
TABLE_PREFIX = "meta:"


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
    wanted = ARROW_TYPES[target]
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


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


__all__ = ["KeepColumn", "parse_keep_columns", "parse_names", "raw_column", "table_column", "typed_column"]
