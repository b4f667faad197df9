"""``flair-central``: ml-flair's ungrouped HDF5 layout (``prepare_dataset.py --not_group_data_by_user``).

::

    /{partition}/{image_id}/image                uint8 [S, S, 3] (a gray store's gray level in each channel)
    /{partition}/{image_id}/labels               scalar UTF-8 string, coarse labels joined by "|"
    /{partition}/{image_id}/fine_grained_labels  scalar UTF-8 string, joined by "|"
    /{partition}/{image_id}/user_id              scalar UTF-8 string
    /metadata/...                                the source store's JSON entries (label counters,
                                                 mappings, taxonomy) and ``export`` (provenance)

The strings are variable-length UTF-8 scalars, what h5py writes for ``file[name] = "text"``
as ml-flair does. Image ids are group names encoded as the store encodes user ids. FLAIR's layout
has no place for other per-image values: a store's metadata columns (:mod:`fedimage.store.metadata`)
are not included (export to ``parquet``, ``dirs`` or ``tfrecords`` to keep them).

A lossless store's images are written as their decoded pixels (exactly the stored ones at 8 bits);
FLAIR's images are uint8, so a 16-bit store is refused (export it to ``parquet``, ``dirs`` or
``client-bundles``, which keep its values).
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import h5py
import numpy as np

from fedimage._version import __version__
from fedimage.exports.base import ExportRun
from fedimage.exports.reading import check_8_bit, rgb_pixels
from fedimage.labels import LABEL_JOIN
from fedimage.store import schema
from fedimage.store.writer import write_dataset

IMAGE = "image"
USER_ID = "user_id"
EXPORT_INFO = "export"
#: What refuses a 16-bit store (see :func:`fedimage.exports.reading.check_8_bit`).
EIGHT_BITS_ONLY = "the flair-central export (FLAIR's uint8 pixels)"

_STRING_TYPE = h5py.h5t.py_create(h5py.string_dtype("utf-8"), logical=True)
_STRING_DTYPE = h5py.string_dtype("utf-8")


@cache
def _string_creation() -> tuple[h5py.h5p.PropDCID, h5py.h5s.SpaceID]:
    """Creation properties (no timestamps: same store, same bytes) and the scalar space of strings."""
    properties = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    properties.set_obj_track_times(False)
    return properties, h5py.h5s.create(h5py.h5s.SCALAR)


def write_string(group: h5py.Group, name: str, value: str) -> None:
    """``group[name] = value`` (a scalar variable-length UTF-8 string) through the low-level API."""
    properties, space = _string_creation()
    dataset = h5py.h5d.create(group.id, name.encode("utf-8"), _STRING_TYPE, space, dcpl=properties)
    dataset.write(h5py.h5s.ALL, h5py.h5s.ALL, np.array(value, dtype=_STRING_DTYPE))


def write_flair_central(run: ExportRun, path: Path) -> None:
    """Write every image of the store as its own group of ``path`` (see the module's docstring)."""
    store = run.store
    check_8_bit(store, EIGHT_BITS_ONLY)
    coarse_names, fine_names = store.label_names, store.fine_label_names
    with h5py.File(path, "w") as h5:
        for split in store.splits:
            partition = h5.require_group(split)
            for user in run.users(split):
                rows = zip(user.image_ids, user.labels, user.fine_labels, user.pixels(), strict=True)
                for image_id, labels, fine, pixels in rows:
                    group = h5py.Group(
                        h5py.h5g.create(partition.id, schema.user_key(image_id).encode("utf-8"))
                    )
                    write_dataset(group, IMAGE, rgb_pixels(pixels))  # FLAIR's readers take RGB
                    write_string(group, schema.LABELS, LABEL_JOIN.join(coarse_names[i] for i in labels))
                    write_string(group, schema.FINE_LABELS, LABEL_JOIN.join(fine_names[i] for i in fine))
                    write_string(group, USER_ID, user.user_id)
        metadata = h5.require_group(schema.METADATA)
        for name, text in store.metadata_entries().items():
            if name != schema.MANIFEST:  # a manifest would make the file look like a fedimage store
                write_string(metadata, name, text)
        info = {
            "format": "flair-central",
            "fedimage_version": __version__,
            "store": store.path.name,
            "source": store.manifest.get("source"),
            "image_size": store.image_size,
            "splits": run.splits,
        }
        write_string(metadata, EXPORT_INFO, json.dumps(info, ensure_ascii=False))
