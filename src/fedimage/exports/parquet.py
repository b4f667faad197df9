"""``parquet``: one Parquet file per split with a Hugging Face ``datasets`` Image column.

::

    DEST/{split}.parquet   user_id string, image_id string, labels list<string>,
                           partition string, fine_grained_labels list<string>,
                           image struct<bytes: binary, path: string>

The columns are those of the Hub's ``apple/flair`` (``image_id`` is a string here: store ids
need not be numbers). The schema carries ``datasets``' ``huggingface`` metadata, so
``datasets.Dataset.from_parquet`` and ``load_dataset("parquet", ...)`` see ``image`` as an
``Image`` feature (``path`` is null: the bytes are the image). Rows are in store order, one
row group per :data:`ROW_GROUP_BYTES` of images, so memory stays bounded.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from fedimage.exports.base import ExportRun

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
SCHEMA = pa.schema(
    [
        ("user_id", pa.string()),
        ("image_id", pa.string()),
        ("labels", pa.list_(pa.string())),
        ("partition", pa.string()),
        ("fine_grained_labels", pa.list_(pa.string())),
        ("image", IMAGE_TYPE),
    ],
    metadata={"huggingface": json.dumps({"info": {"features": HF_FEATURES}})},
)


class _RowBuffer:
    """Rows of one row group, column by column."""

    def __init__(self) -> None:
        self.columns: dict[str, list] = {}
        self.bytes = 0
        self.clear()

    def clear(self) -> None:
        self.columns = {name: [] for name in SCHEMA.names}
        self.bytes = 0

    def add(
        self, user_id: str, image_id: str, labels: list[str], split: str, fine: list[str], jpeg: bytes
    ) -> None:
        for name, value in zip(
            SCHEMA.names,
            (user_id, image_id, labels, split, fine, {"bytes": jpeg, "path": None}),
            strict=True,
        ):
            self.columns[name].append(value)
        self.bytes += len(jpeg)

    def flush(self, writer: pq.ParquetWriter) -> None:
        if self.columns["image_id"]:
            writer.write_table(pa.Table.from_pydict(self.columns, schema=SCHEMA))
        self.clear()


def write_parquet(run: ExportRun, path: Path) -> None:
    """Write ``{split}.parquet`` under ``path`` for every split (see the module's docstring)."""
    store = run.store
    coarse_names, fine_names = store.label_names, store.fine_label_names
    for split in store.splits:
        rows = _RowBuffer()
        with pq.ParquetWriter(path / f"{split}{SUFFIX}", SCHEMA, compression="snappy") as writer:
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
