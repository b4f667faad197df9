"""``parquet``: one Parquet file per split with a Hugging Face ``datasets`` Image column.

::

    DEST/{split}.parquet   user_id string, image_id int64 (or string), labels list<string>,
                           partition string, fine_grained_labels list<string>,
                           image struct<bytes: binary, path: string>

The columns are those of the Hub's ``apple/flair``: ``image_id`` is int64 as there when every
image id of the store is an integer written plainly (FLAIR's are), else a string (store ids need
not be numbers). The schema carries ``datasets``' ``huggingface`` metadata, so
``datasets.Dataset.from_parquet`` and ``load_dataset("parquet", ...)`` see ``image`` as an
``Image`` feature (``path`` is null: the bytes are the image), and fedimage's own ``fedimage``
metadata: the store's taxonomy (``label_relationship``), image side (``image_size``) and colour
(``color``: ``rgb``, or ``gray`` for 1-component JPEGs), which ``fedimage convert`` of the export
takes as its defaults. Rows are in store order, one row group per :data:`ROW_GROUP_BYTES` of images,
so memory stays bounded.

The images are JPEG files, except a lossless store's: its PNG files as stored (8-bit RGB or gray, or
16-bit gray, which ``datasets`` and Pillow open as mode ``I;16`` with the stored values). The
``fedimage`` metadata of a lossless store's export then also states ``storage`` (``lossless``) and
``bit_depth`` (8 or 16), so a conversion of the export makes a lossless (16-bit) store again.

A store's per-image metadata columns (:mod:`fedimage.store.metadata`) follow ``image``, one typed
column each under its own name: ``int`` int64, ``float`` float64, ``string`` string, ``timestamp``
``timestamp[us]`` (naive, UTC), null where a value is missing. The ``fedimage`` metadata then lists
them under ``image_metadata`` (``[{"name": "site", "type": "string"}, ...]``), so a conversion of the
export keeps them with their types. A column named as one of the export's own (``image``,
``user_id``...) is an error. A store without metadata columns exports exactly as before.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from fedimage.errors import FedimageError
from fedimage.exports.base import ExportRun
from fedimage.exports.reading import read_dataset
from fedimage.sources.huggingface import (
    BIT_DEPTH_ENTRY,
    COLOR_ENTRY,
    FEDIMAGE_PARQUET_METADATA,
    IMAGE_SIZE_ENTRY,
    METADATA_ENTRY,
    STORAGE_ENTRY,
    TAXONOMY_ENTRY,
)
from fedimage.store import schema as store_schema
from fedimage.store.metadata import MetadataColumn, arrow_values
from fedimage.store.reader import FederatedStore

ROW_GROUP_BYTES = 64 << 20
SUFFIX = ".parquet"

_STRING = {"dtype": "string", "_type": "Value"}
# datasets' feature description; "Sequence" is read as a list by every datasets version.
HF_FEATURES = {
    "user_id": _STRING,
    "image_id": _STRING,
    "labels": {"feature": _STRING, "_type": "Sequence"},
    "partition": _STRING,
    "fine_grained_labels": {"feature": _STRING, "_type": "Sequence"},
    "image": {"_type": "Image"},
}
IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
#: The export's own columns, in order; a metadata column may not take one of these names.
EXPORT_COLUMNS = tuple(HF_FEATURES)
# datasets' Value dtype of each metadata type (a timestamp stays microseconds, without a zone).
_HF_DTYPES = {"int": "int64", "float": "float64", "string": "string", "timestamp": "timestamp[us]"}
# An integer as int64 writes it back: no sign but "-", no leading zero; the range is checked apart.
_INTEGER_ID = re.compile(rb"0|-?[1-9][0-9]{0,18}")
_INT64_RANGE = range(-(2**63), 2**63)


def parquet_schema(
    integer_ids: bool,
    taxonomy: dict[str, str],
    image_size: int,
    color: str = "rgb",
    metadata_columns: Sequence[MetadataColumn] = (),
    storage: str = "jpeg",
    bit_depth: int = 8,
) -> pa.Schema:
    """The export's schema: apple/flair's columns, ``image_id`` int64 or string, the store's metadata
    columns, and the schema metadata (``huggingface`` features, ``fedimage`` entries; ``storage`` and
    ``bit_depth`` only for a lossless store, whose PNG files the export holds)."""
    check_column_names(metadata_columns)
    id_type, id_dtype = (pa.int64(), "int64") if integer_ids else (pa.string(), "string")
    features: dict[str, Any] = {**HF_FEATURES, "image_id": {"dtype": id_dtype, "_type": "Value"}}
    fedimage_entries: dict[str, Any] = {
        TAXONOMY_ENTRY: taxonomy,
        IMAGE_SIZE_ENTRY: image_size,
        COLOR_ENTRY: color,
    }
    if storage == "lossless":
        fedimage_entries[STORAGE_ENTRY] = storage
        fedimage_entries[BIT_DEPTH_ENTRY] = bit_depth
    for column in metadata_columns:
        features[column.name] = {"dtype": _HF_DTYPES[column.type], "_type": "Value"}
    if metadata_columns:
        fedimage_entries[METADATA_ENTRY] = [
            {"name": column.name, "type": column.type} for column in metadata_columns
        ]
    return pa.schema(
        [
            ("user_id", pa.string()),
            ("image_id", id_type),
            ("labels", pa.list_(pa.string())),
            ("partition", pa.string()),
            ("fine_grained_labels", pa.list_(pa.string())),
            ("image", IMAGE_TYPE),
            *((column.name, column.arrow_type) for column in metadata_columns),
        ],
        metadata={
            "huggingface": json.dumps({"info": {"features": features}}),
            FEDIMAGE_PARQUET_METADATA: json.dumps(fedimage_entries, ensure_ascii=False),
        },
    )


def check_column_names(metadata_columns: Sequence[MetadataColumn]) -> None:
    """Refuse a metadata column named as one of the export's own columns (:data:`EXPORT_COLUMNS`)."""
    for column in metadata_columns:
        if column.name in EXPORT_COLUMNS:
            raise FedimageError(
                f"the store's metadata column {column.name!r} has the name of a parquet export column"
                f" ({', '.join(EXPORT_COLUMNS)}); rename it in the source and convert again"
            )


def _integer_ids(store: FederatedStore) -> bool:
    """True when every image id of the store is an int64 written plainly (FLAIR's ids)."""
    for split in store.splits:
        for user_id in store.users(split):
            for raw in read_dataset(store.group(split, user_id), store_schema.IMAGE_IDS).tolist():
                if not (_INTEGER_ID.fullmatch(raw) and int(raw) in _INT64_RANGE):
                    return False
    return True


class _RowBuffer:
    """Rows of one row group, column by column."""

    def __init__(self, schema: pa.Schema, metadata_columns: Sequence[MetadataColumn] = ()) -> None:
        self.schema = schema
        self.integer_ids = pa.types.is_integer(schema.field("image_id").type)
        self.metadata_columns = {column.name: column for column in metadata_columns}
        self.columns: dict[str, list[Any]] = {}
        self.bytes = 0
        self.clear()

    def clear(self) -> None:
        self.columns = {name: [] for name in self.schema.names}
        self.bytes = 0

    def add(
        self,
        user_id: str,
        image_id: str,
        labels: list[str],
        split: str,
        fine: list[str],
        image: bytes,
        metadata: Sequence[Any] = (),
    ) -> None:
        """One row: its ids, labels, image file (JPEG or PNG), and its values of the metadata columns
        (in their order)."""
        stored_id = int(image_id) if self.integer_ids else image_id
        for name, value in zip(
            self.schema.names,
            (user_id, stored_id, labels, split, fine, {"bytes": image, "path": None}, *metadata),
            strict=True,
        ):
            self.columns[name].append(value)
        self.bytes += len(image)

    def flush(self, writer: pq.ParquetWriter) -> None:
        if self.columns["image_id"]:
            arrays = [
                arrow_values(self.metadata_columns[name], values)
                if name in self.metadata_columns
                else pa.array(values, self.schema.field(name).type)
                for name, values in self.columns.items()
            ]
            writer.write_table(pa.Table.from_arrays(arrays, schema=self.schema))
        self.clear()


def write_parquet(run: ExportRun, path: Path) -> None:
    """Write ``{split}.parquet`` under ``path`` for every split (see the module's docstring)."""
    store = run.store
    coarse_names, fine_names = store.label_names, store.fine_label_names
    columns = store.metadata_columns
    check_column_names(columns)  # before reading the store's ids
    schema = parquet_schema(
        _integer_ids(store),
        store.taxonomy,
        store.image_size,
        store.color,
        columns,
        storage=store.storage,
        bit_depth=store.bit_depth,
    )
    for split in store.splits:
        rows = _RowBuffer(schema, columns)
        with pq.ParquetWriter(path / f"{split}{SUFFIX}", schema, compression="snappy") as writer:
            for user in run.users(split):
                for image_id, labels, fine, metadata, image in user.rows(run.options.quality):
                    rows.add(
                        user.user_id,
                        image_id,
                        [coarse_names[index] for index in labels],
                        split,
                        [fine_names[index] for index in fine],
                        image,
                        metadata,
                    )
                    if rows.bytes >= ROW_GROUP_BYTES:
                        rows.flush(writer)
            rows.flush(writer)
