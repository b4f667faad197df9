"""Image metadata as columns: an Arrow table with one row per input image.

A conversion plans hundreds of thousands of images. Holding them as one Python
object each costs hundreds of bytes per image and seconds of interpreter time;
an Arrow table costs tens of bytes and is sorted, grouped and validated by
vectorized kernels. Records (:class:`ImageRecord`) are materialized only for
the few images in flight.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fedimage.records import ImageRecord, Reject
from fedimage.sources.metadata import raw_column, table_column

LABELS = pa.list_(pa.string())
SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("image_id", pa.string()),
        ("user_id", pa.string()),
        ("labels", LABELS),
        ("fine_labels", LABELS),
        ("split", pa.string()),  # null: the source carries no split information
        ("origin", pa.string()),
        ("row", pa.int64()),
    ]
)
BUILD_BATCH_ROWS = 4_096
#: Prefix of the per-image metadata columns a record table may hold after :data:`SCHEMA`'s.
METADATA_PREFIX = "meta:"
# What a cell that cannot be read is, after "column 'x' holds ...".
ID_PROBLEM = "an id must be text or an integer"
LABEL_PROBLEM = "labels are a list of names or one joined text"
LABEL_ITEM_PROBLEM = "a label is a name (text)"
NOT_UTF8 = "holds bytes that are not UTF-8 text"
UNENCODABLE_TEXT = "holds text that is not valid Unicode (a lone surrogate escape, or bytes not in UTF-8)"
UNENCODABLE = "{detail} " + UNENCODABLE_TEXT


@dataclass
class SourceMetadata:
    """What a source knows before any pixel is read: its usable rows and its rejects."""

    table: pa.Table
    rejects: list[Reject] = field(default_factory=list)

    @property
    def inputs(self) -> int:
        return self.table.num_rows + len(self.rejects)


def metadata_from_records(
    items: Iterable[ImageRecord | Reject], metadata_columns: Sequence[str] = ()
) -> SourceMetadata:
    """Collect a record stream into a table, a batch at a time (records are not all kept alive).

    A record holding text that UTF-8 cannot encode (a lone surrogate escape, a file name in
    another encoding) cannot be stored: it becomes a rejection naming the field. Each record's
    ``metadata`` holds the cells of ``metadata_columns``, in that order: they become the table's
    ``meta:<name>`` columns (untyped: see :func:`fedimage.sources.metadata.typed_column`), and a
    cell no column can hold (a list) rejects its row.
    """
    rejects: list[Reject] = []
    batches: list[pa.RecordBatch] = []
    pending: list[ImageRecord] = []
    cells: list[list[Any]] = [[] for _ in metadata_columns]
    for item in items:
        if isinstance(item, Reject):
            rejects.append(item)
            continue
        pending.append(item)
        if len(pending) == BUILD_BATCH_ROWS:
            batches.append(_record_batch(pending, rejects, cells))
            pending = []
    batches.append(_record_batch(pending, rejects, cells))
    table = pa.Table.from_batches(batches, schema=SCHEMA)
    if metadata_columns:
        table = _with_metadata(table, metadata_columns, cells, rejects)
    return SourceMetadata(table, rejects)


def _with_metadata(
    table: pa.Table, names: Sequence[str], cells: list[list[Any]], rejects: list[Reject]
) -> pa.Table:
    """``table`` with a ``meta:<name>`` column per name; a row with a cell no column can hold is rejected."""
    bad: dict[int, tuple[str, str]] = {}
    columns = []
    for name, values in zip(names, cells, strict=True):
        array, problems = raw_column(values)
        for row, problem in problems.items():
            bad.setdefault(row, (name, problem))
        columns.append(array)
    for name, array in zip(names, columns, strict=True):
        table = table.append_column(table_column(name), array)
    return reject_cells(table, bad, rejects)


def reject_cells(table: pa.Table, problems: dict[int, tuple[str, str]], rejects: list[Reject]) -> pa.Table:
    """``table`` without the rows of ``problems`` (``{row: (column, problem)}``, the problem going on
    from "column 'x' ..."), each added to ``rejects`` naming its column (never quoting its value)."""
    if not problems:
        return table
    rows = sorted(problems)
    for row, record in zip(rows, records_of(table.take(pa.array(rows, pa.int64()))), strict=True):
        column, problem = problems[row]
        rejects.append(
            Reject(
                origin=record.origin,
                reason="column {detail} " + problem,
                detail=column,
                image_id=record.image_id or None,
                path=record.path or None,
                user_id=record.user_id or None,
                stage="source",
            )
        )
    keep = np.ones(table.num_rows, dtype=bool)
    keep[rows] = False
    return table.filter(pa.array(keep))


def _record_batch(
    records: list[ImageRecord], rejects: list[Reject], cells: list[list[Any]]
) -> pa.RecordBatch:
    def batch(kept: list[ImageRecord]) -> pa.RecordBatch:
        columns = {name: [getattr(record, name) for record in kept] for name in SCHEMA.names}
        made = pa.record_batch(columns, schema=SCHEMA)
        for index, values in enumerate(cells):
            values.extend(record.metadata[index] for record in kept)
        return made

    with contextlib.suppress(UnicodeEncodeError):  # one record holds text UTF-8 cannot: find it below
        return batch(records)
    kept = []
    for record in records:
        field = _unencodable_field(record)
        if field is None:
            kept.append(record)
        else:
            rejects.append(Reject(origin=record.origin, reason=UNENCODABLE, detail=field, stage="source"))
    return batch(kept)


def _unencodable_field(record: ImageRecord) -> str | None:
    for name in ("path", "image_id", "user_id", "labels", "fine_labels", "split", "origin"):
        value = getattr(record, name)
        for text in value if isinstance(value, tuple) else (value,):
            if isinstance(text, str) and not text.isascii():
                try:
                    text.encode("utf-8")
                except UnicodeEncodeError:
                    return name
    return None


def records_of(table: pa.Table) -> list[ImageRecord]:
    """The rows of (a slice of) a record table as records (its ``meta:`` columns as their ``metadata``)."""
    columns = [table.column(name).to_pylist() for name in SCHEMA.names]
    extra = [name for name in table.column_names if name.startswith(METADATA_PREFIX)]
    if extra:
        metadata = list(zip(*(table.column(name).to_pylist() for name in extra), strict=True))
    else:
        metadata = [()] * table.num_rows
    return [
        ImageRecord(path, image_id, user, tuple(labels or ()), tuple(fine or ()), split, origin, row, meta)
        for path, image_id, user, labels, fine, split, origin, row, meta in zip(
            *columns, metadata, strict=True
        )
    ]


def clean_label_lists(column: pa.Array | pa.ChunkedArray, delimiter: str) -> pa.ListArray:
    """Per row, its labels as list<string>: stripped, empty ones dropped, duplicates removed in order.

    Takes a list column, or a string column of ``delimiter``-joined labels (other
    scalar types are read as text). Nulls become empty lists.
    """
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if not (pa.types.is_list(array.type) or pa.types.is_large_list(array.type)):
        text = array if pa.types.is_string(array.type) else pc.cast(array, pa.string())
        array = pc.split_pattern(pc.fill_null(text, ""), delimiter)
    count = len(array)
    lengths = pc.fill_null(pc.list_value_length(array), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    values = array.flatten()
    if not pa.types.is_string(values.type):
        values = pc.cast(values, pa.string())
    encoded = pc.dictionary_encode(pc.fill_null(pc.utf8_trim_whitespace(values), ""))
    vocabulary = encoded.dictionary
    codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    rows = np.repeat(np.arange(count, dtype=np.int64), lengths)
    empty = vocabulary.index("").as_py()
    candidates = np.flatnonzero(codes != empty) if empty >= 0 else np.arange(len(codes))
    keys = rows[candidates] * (len(vocabulary) + 1) + codes[candidates]
    ordered = np.sort(keys)
    if len(ordered) > 1 and (ordered[1:] == ordered[:-1]).any():  # a row repeats a label
        _, first = np.unique(keys, return_index=True)
        kept = np.sort(candidates[first])
    else:
        kept = candidates
    offsets = np.zeros(count + 1, dtype=np.int32)
    np.cumsum(np.bincount(rows[kept], minlength=count), out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), vocabulary.take(pa.array(codes[kept])))


def label_rows(column: pa.ListArray | pa.ChunkedArray) -> tuple[np.ndarray, list[str], np.ndarray]:
    """A label column as (row of each label, vocabulary, code of each label in the vocabulary)."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    lengths = pc.fill_null(pc.list_value_length(array), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    encoded = pc.dictionary_encode(array.flatten())
    rows = np.repeat(np.arange(len(array), dtype=np.int64), lengths)
    return rows, encoded.dictionary.to_pylist(), encoded.indices.to_numpy(zero_copy_only=False)


def first_per_row(rows: np.ndarray, flagged: np.ndarray, count: int) -> np.ndarray:
    """For each of ``count`` rows, the position of its first flagged element, or -1."""
    first = np.full(count, -1, dtype=np.int64)
    positions = np.flatnonzero(flagged)
    if len(positions):
        row_of = rows[positions]
        unique_rows, index = np.unique(row_of, return_index=True)
        first[unique_rows] = positions[index]
    return first


def string_codes(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, pa.Array]:
    """Codes of a string column in the order of its sorted distinct values (code order = string order).

    Returns the codes and the sorted distinct values (an Arrow array: no Python strings are made).
    """
    encoded = pc.dictionary_encode(column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column)
    by_value = pc.sort_indices(encoded.dictionary).to_numpy()
    rank = np.empty(len(by_value), dtype=np.int64)
    rank[by_value] = np.arange(len(by_value))
    codes = rank[encoded.indices.to_numpy(zero_copy_only=False)]
    return codes, encoded.dictionary.take(pa.array(by_value))


def clean_id_column(column: pa.Array | pa.ChunkedArray) -> tuple[pa.Array, dict[int, str]]:
    """An id column of any Arrow type as stripped strings ('' for nulls), and the rows it cannot hold.

    Text and integers are ids (an integral float is its integer: ``7.0`` is ``"7"``); a
    fraction, a boolean, a list or any other type is not, nor is text that is not UTF-8.
    The second value maps each such row to its problem ("holds ..."); its id is ''.
    """
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    kind = array.type
    problems: dict[int, str] = {}
    if _is_text(kind):
        text, problems = _utf8_text(array)
    elif pa.types.is_integer(kind):
        text = pc.cast(array, pa.string())
    elif pa.types.is_floating(kind):
        values = pc.cast(array, pa.float64())
        present = pc.and_(pc.is_valid(values), pc.invert(pc.is_nan(values)))
        integral = pc.and_(pc.is_finite(values), pc.equal(pc.floor(values), values))
        bad = pc.fill_null(pc.and_(present, pc.invert(integral)), False).to_numpy(zero_copy_only=False)
        for row in np.flatnonzero(bad).tolist():
            problems[row] = f"holds a number that is not an integer; {ID_PROBLEM}"
        whole = pc.if_else(pc.fill_null(pc.and_(present, integral), False), values, None)
        text = pc.cast(pc.cast(whole, pa.int64()), pa.string())
    else:
        if not pa.types.is_null(kind):
            for row in np.flatnonzero(pc.is_valid(array).to_numpy(zero_copy_only=False)).tolist():
                problems[row] = f"holds {_describe_type(kind)}; {ID_PROBLEM}"
        text = pa.nulls(len(array), pa.string())
    return pc.fill_null(pc.utf8_trim_whitespace(text), ""), problems


def label_problems(column: pa.Array | pa.ChunkedArray) -> tuple[pa.Array, dict[int, str]]:
    """A label column with the rows that hold no label names nulled, and those rows' problems.

    Label names are text: a list of strings or one delimiter-joined string per row. A
    number, a boolean or a nested list (in the list or instead of it), or text that is not
    UTF-8, is not a label name.
    """
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    problems: dict[int, str] = {}
    count = len(array)
    if pa.types.is_list(array.type) or pa.types.is_large_list(array.type):
        values = array.flatten()
        lengths = pc.fill_null(pc.list_value_length(array), 0).to_numpy(zero_copy_only=False).astype(np.int64)
        rows = np.repeat(np.arange(count, dtype=np.int64), lengths)
        if pa.types.is_dictionary(values.type):
            values = values.dictionary_decode()
        if _is_text(values.type):
            _, bad_values = _utf8_text(values)
            for position, problem in bad_values.items():
                problems.setdefault(int(rows[position]), problem)
        elif not pa.types.is_null(values.type):
            present = pc.is_valid(values).to_numpy(zero_copy_only=False)
            for row in np.unique(rows[present]).tolist():
                problems[row] = f"holds a list with {_describe_type(values.type)} in it; {LABEL_ITEM_PROBLEM}"
    elif _is_text(array.type):
        array, problems = _utf8_text(array)
    elif not pa.types.is_null(array.type):
        for row in np.flatnonzero(pc.is_valid(array).to_numpy(zero_copy_only=False)).tolist():
            problems[row] = f"holds {_describe_type(array.type)}; {LABEL_PROBLEM}"
    if problems:
        mask = np.zeros(count, dtype=bool)
        mask[list(problems)] = True
        array = pc.if_else(pa.array(mask), pa.nulls(count, array.type), array)
    return array, problems


def _is_text(kind: pa.DataType) -> bool:
    text = pa.types.is_string(kind) or pa.types.is_large_string(kind)
    return text or pa.types.is_binary(kind) or pa.types.is_large_binary(kind)


def _utf8_text(array: pa.Array) -> tuple[pa.Array, dict[int, str]]:
    """A string or binary array as strings, values that are not UTF-8 nulled (and their problems)."""
    if pa.types.is_string(array.type) or pa.types.is_large_string(array.type):
        try:
            array.validate(full=True)
            return array, {}
        except pa.ArrowInvalid:
            array = array.view(pa.binary() if pa.types.is_string(array.type) else pa.large_binary())
    else:
        with contextlib.suppress(pa.ArrowInvalid):
            return pc.cast(array, pa.string()), {}
    problems: dict[int, str] = {}
    texts: list[str | None] = []
    for row, value in enumerate(array.to_pylist()):
        try:
            texts.append(None if value is None else value.decode("utf-8"))
        except UnicodeDecodeError:
            problems[row] = NOT_UTF8
            texts.append(None)
    return pa.array(texts, pa.string()), problems


def _describe_type(kind: pa.DataType) -> str:
    if pa.types.is_boolean(kind):
        return "a boolean"
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind):
        return "a number"
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        return "a list"
    if pa.types.is_struct(kind) or pa.types.is_map(kind):
        return "an object"
    return f"a value of type {kind}"
