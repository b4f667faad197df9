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
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from fedimage.exports.base import ExportRun
from fedimage.exports.reading import read_dataset
from fedimage.sources.huggingface import (
    COLOR_ENTRY,
    FEDIMAGE_PARQUET_METADATA,
    IMAGE_SIZE_ENTRY,
    TAXONOMY_ENTRY,
)
from fedimage.store import schema as store_schema
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
# An integer as int64 writes it back: no sign but "-", no leading zero; the range is checked apart.
_INTEGER_ID = re.compile(rb"0|-?[1-9][0-9]{0,18}")
_INT64_RANGE = range(-(2**63), 2**63)


def parquet_schema(
    integer_ids: bool, taxonomy: dict[str, str], image_size: int, color: str = "rgb"
) -> pa.Schema:
    """The export's schema: apple/flair's columns, ``image_id`` int64 or string, and the metadata."""
    id_type, id_dtype = (pa.int64(), "int64") if integer_ids else (pa.string(), "string")
    features = {**HF_FEATURES, "image_id": {"dtype": id_dtype, "_type": "Value"}}
    return pa.schema(
        [
            ("user_id", pa.string()),
            ("image_id", id_type),
            ("labels", pa.list_(pa.string())),
            ("partition", pa.string()),
            ("fine_grained_labels", pa.list_(pa.string())),
            ("image", IMAGE_TYPE),
        ],
        metadata={
            "huggingface": json.dumps({"info": {"features": features}}),
            FEDIMAGE_PARQUET_METADATA: json.dumps(
                {TAXONOMY_ENTRY: taxonomy, IMAGE_SIZE_ENTRY: image_size, COLOR_ENTRY: color},
                ensure_ascii=False,
            ),
        },
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

    def __init__(self, schema: pa.Schema) -> None:
        self.schema = schema
        self.integer_ids = pa.types.is_integer(schema.field("image_id").type)
        self.columns: dict[str, list[Any]] = {}
        self.bytes = 0
        self.clear()

    def clear(self) -> None:
        self.columns = {name: [] for name in self.schema.names}
        self.bytes = 0

    def add(
        self, user_id: str, image_id: str, labels: list[str], split: str, fine: list[str], jpeg: bytes
    ) -> None:
        stored_id = int(image_id) if self.integer_ids else image_id
        for name, value in zip(
            self.schema.names,
            (user_id, stored_id, labels, split, fine, {"bytes": jpeg, "path": None}),
            strict=True,
        ):
            self.columns[name].append(value)
        self.bytes += len(jpeg)

    def flush(self, writer: pq.ParquetWriter) -> None:
        if self.columns["image_id"]:
            writer.write_table(pa.Table.from_pydict(self.columns, schema=self.schema))
        self.clear()


def write_parquet(run: ExportRun, path: Path) -> None:
    """Write ``{split}.parquet`` under ``path`` for every split (see the module's docstring)."""
    store = run.store
    coarse_names, fine_names = store.label_names, store.fine_label_names
    schema = parquet_schema(_integer_ids(store), store.taxonomy, store.image_size, store.color)
    for split in store.splits:
        rows = _RowBuffer(schema)
        with pq.ParquetWriter(path / f"{split}{SUFFIX}", schema, compression="snappy") as writer:
            for user in run.users(split):
                images = zip(
                    user.image_ids,
                    user.labels,
                    user.fine_labels,
                    user.jpegs(run.options.quality),
                    strict=True,
                )
                for image_id, labels, fine, jpeg in images:
                    rows.add(
                        user.user_id,
                        image_id,
                        [coarse_names[index] for index in labels],
                        split,
                        [fine_names[index] for index in fine],
                        jpeg,
                    )
                    if rows.bytes >= ROW_GROUP_BYTES:
                        rows.flush(writer)
            rows.flush(writer)
