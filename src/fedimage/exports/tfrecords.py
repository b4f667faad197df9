"""``tfrecords``: ml-flair's TFRecords (``prepare_tfrecords.py``), written without TensorFlow.

::

    DEST/label_to_index.json           {"labels": {label: index}, "fine_grained_labels": {...}}
    DEST/{partition}/{user}.tfrecords  one tf.train.Example per image:
        image/encoded_jpeg   bytes (a jpeg store's JPEG as stored; raw pixels encoded at --quality;
                             RGB always, as ml-flair's reader expects: a gray store is re-encoded)
        labels               int64 list of coarse label indices
        fine_grained_labels  int64 list of fine label indices
    DEST/user_ids.json                 only when some user id is not a portable file name:
                                       {partition: {file name stem: user id}}

Label indices are the store's (alphabetical, as ml-flair's). ``train``, ``val`` and ``test``
folders always exist (ml-flair's loader lists all three). ``.tfrecords`` inside a user id
is encoded, because ml-flair's loader cuts file names at its first occurrence.
"""

from __future__ import annotations

import json
from pathlib import Path

from fedimage.exports.base import ExportRun
from fedimage.exports.example_proto import serialize_example
from fedimage.exports.names import NameTable, safe_name
from fedimage.exports.tfrecord_file import TFRecordWriter

KEY_IMAGE_BYTES = "image/encoded_jpeg"
KEY_LABELS = "labels"
KEY_FINE_GRAINED_LABELS = "fine_grained_labels"
SUFFIX = ".tfrecords"
LABEL_TO_INDEX = "label_to_index.json"
USER_IDS = "user_ids.json"
ML_FLAIR_PARTITIONS = ("train", "val", "test")


def user_file_stem(user_id: str) -> str:
    """A portable file name stem for a user, from which ml-flair's loader recovers it."""
    return safe_name(user_id).replace(SUFFIX, "%2E" + SUFFIX[1:])


def write_tfrecords(run: ExportRun, path: Path) -> None:
    """Write one TFRecord file per user under ``path`` (see the module's docstring)."""
    store = run.store
    mapping = {"labels": store.label_mapping, "fine_grained_labels": store.fine_label_mapping}
    (path / LABEL_TO_INDEX).write_text(json.dumps(mapping, indent=4, ensure_ascii=False) + "\n")
    for split in dict.fromkeys([*ML_FLAIR_PARTITIONS, *store.splits]):
        (path / split).mkdir()
    renamed: dict[str, dict[str, str]] = {}
    for split in store.splits:
        names = NameTable()
        for user in run.users(split):
            stem = names.assign(user.user_id, user_file_stem(user.user_id))
            with TFRecordWriter(path / split / f"{stem}{SUFFIX}") as writer:
                rows = zip(
                    user.jpegs(run.options.quality, color="rgb"), user.labels, user.fine_labels, strict=True
                )
                for jpeg, labels, fine in rows:
                    writer.write(
                        serialize_example(
                            {KEY_IMAGE_BYTES: jpeg}, {KEY_LABELS: labels, KEY_FINE_GRAINED_LABELS: fine}
                        )
                    )
        if names.changed:
            renamed[split] = names.changed
    if renamed:
        (path / USER_IDS).write_text(json.dumps(renamed, indent=2, ensure_ascii=False) + "\n")
