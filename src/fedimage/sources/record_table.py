"""Image metadata as columns: an Arrow table with one row per input image.

A conversion plans hundreds of thousands of images. Holding them as one Python
object each costs hundreds of bytes per image and seconds of interpreter time;
an Arrow table costs tens of bytes and is sorted, grouped and validated by
vectorized kernels. Records (:class:`ImageRecord`) are materialized only for
the few images in flight.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fedimage.records import ImageRecord, Reject

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


@dataclass
class SourceMetadata:
    """What a source knows before any pixel is read: its usable rows and its rejects."""

    table: pa.Table
    rejects: list[Reject] = field(default_factory=list)

    @property
    def inputs(self) -> int:
        return self.table.num_rows + len(self.rejects)


def metadata_from_records(items: Iterable[ImageRecord | Reject]) -> SourceMetadata:
    """Collect a record stream into a table, a batch at a time (records are not all kept alive)."""
    rejects: list[Reject] = []
    batches: list[pa.RecordBatch] = []
    columns: dict[str, list] = {name: [] for name in SCHEMA.names}
    for item in items:
        if isinstance(item, Reject):
            rejects.append(item)
            continue
        for name in SCHEMA.names:
            columns[name].append(getattr(item, name))
        if len(columns["path"]) == BUILD_BATCH_ROWS:
            batches.append(pa.record_batch(columns, schema=SCHEMA))
            columns = {name: [] for name in SCHEMA.names}
    batches.append(pa.record_batch(columns, schema=SCHEMA))
    return SourceMetadata(pa.Table.from_batches(batches, schema=SCHEMA), rejects)


def records_of(table: pa.Table) -> list[ImageRecord]:
    """The rows of (a slice of) a record table as records."""
    columns = [table.column(name).to_pylist() for name in SCHEMA.names]
    return [
        ImageRecord(path, image_id, user, tuple(labels or ()), tuple(fine or ()), split, origin, row)
        for path, image_id, user, labels, fine, split, origin, row in zip(*columns, strict=True)
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
