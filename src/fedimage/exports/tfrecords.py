"""``tfrecords``: ml-flair's TFRecords (``prepare_tfrecords.py``), written without TensorFlow.

::

    DEST/label_to_index.json           {"labels": {label: index}, "fine_grained_labels": {...}}
    DEST/{partition}/{user}.tfrecords  one tf.train.Example per image:
        image/encoded_jpeg   bytes (a jpeg store's JPEG as stored; raw pixels and an 8-bit lossless
                             store's PNGs encoded at --quality; RGB always, as ml-flair's reader
                             expects: a gray store is re-encoded)
        labels               int64 list of coarse label indices
        fine_grained_labels  int64 list of fine label indices
        metadata/<name>      one feature per metadata column of the store: int -> int64 list,
                             float -> float list (32-bit), string -> bytes list (UTF-8),
                             timestamp -> int64 list (microseconds since 1970-01-01 UTC);
                             one value, or an empty list when the image's value is missing
    DEST/user_ids.json                 only when some user id is not a portable file name:
                                       {partition: {file name stem: user id}}
    DEST/image_metadata.json           only when the store has metadata columns: their names and
                                       types, [{"name": "taken", "type": "timestamp"}, ...]

Label indices are the store's (alphabetical, as ml-flair's). ``train``, ``val`` and ``test``
folders always exist (ml-flair's loader lists all three). ``.tfrecords`` inside a user id
is encoded, because ml-flair's loader cuts file names at its first occurrence. ml-flair's readers
parse the features they know by name, so the ``metadata/`` features do not disturb them; a reader
that wants them parses ``metadata/<name>`` as a ``tf.io.VarLenFeature`` of its type.

ml-flair's images are 8-bit JPEGs: a 16-bit store is refused (export it to ``parquet``, ``dirs`` or
``client-bundles``, which keep its values).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fedimage.exports.base import ExportRun
from fedimage.exports.example_proto import serialize_example
from fedimage.exports.names import NameTable, safe_name
from fedimage.exports.reading import check_8_bit
from fedimage.exports.tfrecord_file import TFRecordWriter
from fedimage.store.metadata import MetadataColumn, microseconds

KEY_IMAGE_BYTES = "image/encoded_jpeg"
KEY_LABELS = "labels"
KEY_FINE_GRAINED_LABELS = "fine_grained_labels"
#: The prefix of a metadata column's feature: ``metadata/<column name>``.
KEY_METADATA_PREFIX = "metadata/"
SUFFIX = ".tfrecords"
LABEL_TO_INDEX = "label_to_index.json"
USER_IDS = "user_ids.json"
IMAGE_METADATA = "image_metadata.json"
ML_FLAIR_PARTITIONS = ("train", "val", "test")
#: What refuses a 16-bit store (see :func:`fedimage.exports.reading.check_8_bit`).
EIGHT_BITS_ONLY = "the tfrecords export (ml-flair's 8-bit JPEGs)"


def user_file_stem(user_id: str) -> str:
    """A portable file name stem for a user, from which ml-flair's loader recovers it."""
    return safe_name(user_id).replace(SUFFIX, "%2E" + SUFFIX[1:])


def metadata_feature(name: str) -> str:
    """The feature holding metadata column ``name``."""
    return KEY_METADATA_PREFIX + name


def metadata_features(
    columns: Sequence[MetadataColumn], values: Sequence[Any]
) -> tuple[dict[str, list[bytes]], dict[str, list[int]], dict[str, list[float]]]:
    """One image's metadata values as (bytes, int64, float) features, an empty list where missing."""
    texts: dict[str, list[bytes]] = {}
    numbers: dict[str, list[int]] = {}
    floats: dict[str, list[float]] = {}
    for column, value in zip(columns, values, strict=True):
        key = metadata_feature(column.name)
        if column.type == "string":
            texts[key] = [] if value is None else [str(value).encode("utf-8")]
        elif column.type == "float":
            floats[key] = [] if value is None else [float(value)]
        elif column.type == "int":
            numbers[key] = [] if value is None else [int(value)]
        else:
            numbers[key] = [] if value is None else [microseconds(value)]
    return texts, numbers, floats


def write_tfrecords(run: ExportRun, path: Path) -> None:
    """Write one TFRecord file per user under ``path`` (see the module's docstring)."""
    store = run.store
    check_8_bit(store, EIGHT_BITS_ONLY)
    columns = store.metadata_columns
    mapping = {"labels": store.label_mapping, "fine_grained_labels": store.fine_label_mapping}
    (path / LABEL_TO_INDEX).write_text(json.dumps(mapping, indent=4, ensure_ascii=False) + "\n")
    if columns:
        described = [{"name": column.name, "type": column.type} for column in columns]
        (path / IMAGE_METADATA).write_text(json.dumps(described, indent=2, ensure_ascii=False) + "\n")
    for split in dict.fromkeys([*ML_FLAIR_PARTITIONS, *store.splits]):
        (path / split).mkdir()
    renamed: dict[str, dict[str, str]] = {}
    for split in store.splits:
        names = NameTable()
        for user in run.users(split):
            stem = names.assign(user.user_id, user_file_stem(user.user_id))
            with TFRecordWriter(path / split / f"{stem}{SUFFIX}") as writer:
                rows = zip(
                    user.jpegs(run.options.quality, color="rgb"),
                    user.labels,
                    user.fine_labels,
                    user.metadata_rows(),
                    strict=True,
                )
                for jpeg, labels, fine, values in rows:
                    texts, numbers, floats = metadata_features(columns, values)
                    writer.write(
                        serialize_example(
                            {KEY_IMAGE_BYTES: jpeg, **texts},
                            {KEY_LABELS: labels, KEY_FINE_GRAINED_LABELS: fine, **numbers},
                            floats,
                        )
                    )
        if names.changed:
            renamed[split] = names.changed
    if renamed:
        (path / USER_IDS).write_text(json.dumps(renamed, indent=2, ensure_ascii=False) + "\n")
