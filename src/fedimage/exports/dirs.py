"""``dirs``: one folder per client with its image files and a ``metadata.json``.

::

    DEST/index.json                  format, label mappings, taxonomy, image format and bit depth,
                                     and per split its users:
                                     {user id: {"folder": "train/<user>", "images": N}}
    DEST/{split}/{user}/metadata.json {"split", "user_id", "images": [{"image_id", "file",
                                     "labels", "fine_grained_labels", "sha256", "metadata"}]}
    DEST/{split}/{user}/{image}.jpg  (a lossless store's: {image}.png)

The image files are JPEGs, except a lossless store's: its PNG files as stored, 8-bit RGB or gray,
or 16-bit gray (the stored values; ``index.json`` says ``"image_format": "png"`` and
``"bit_depth": 16``).

Folder and file names are the ids made portable (:func:`fedimage.exports.names.safe_name`);
``metadata.json`` and ``index.json`` give the original ids. Before the export is published,
every user folder is counted against what was written.

A store with per-image metadata columns (:mod:`fedimage.store.metadata`) gives each image of
``metadata.json`` a ``metadata`` object, ``{column: value}`` in the columns' order (a timestamp as
ISO 8601 text, naive UTC; a missing value null), and ``index.json`` an ``image_metadata`` list of
the columns' names and types (``[{"name": "taken", "type": "timestamp"}, ...]``). A store without
metadata columns exports exactly as before.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from fedimage._version import __version__
from fedimage.errors import FedimageError
from fedimage.exports.base import ExportRun
from fedimage.exports.names import NameTable
from fedimage.exports.reading import IMAGE_SUFFIXES, image_format
from fedimage.store.metadata import json_value

INDEX = "index.json"
METADATA = "metadata.json"
FORMAT = "fedimage-dirs"
FORMAT_VERSION = 1
#: The suffix of the image files of a jpeg or raw store's export (a lossless store's: ``.png``).
IMAGE_SUFFIX = IMAGE_SUFFIXES["jpeg"]


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def write_dirs(run: ExportRun, path: Path) -> None:
    """Write one folder per user under ``path`` (see the module's docstring), then count them."""
    store = run.store
    coarse_names, fine_names = store.label_names, store.fine_label_names
    columns = [column.name for column in store.metadata_columns]
    kind = image_format(store)
    suffix = IMAGE_SUFFIXES[kind]
    splits: dict[str, dict[str, dict[str, Any]]] = {}
    for split in store.splits:
        split_users = splits[split] = {}
        folders = NameTable()
        for user in run.users(split):
            folder_name = folders.assign(user.user_id)
            folder = path / split / folder_name
            folder.mkdir(parents=True)
            files = NameTable()
            images = []
            for image_id, labels, fine, values, data in user.rows(run.options.quality):
                file_name = files.assign(image_id) + suffix
                (folder / file_name).write_bytes(data)
                image: dict[str, Any] = {
                    "image_id": image_id,
                    "file": file_name,
                    "labels": [coarse_names[index] for index in labels],
                    "fine_grained_labels": [fine_names[index] for index in fine],
                    "sha256": hashlib.sha256(data).hexdigest(),
                }
                if columns:
                    image["metadata"] = {
                        column: json_value(value) for column, value in zip(columns, values, strict=True)
                    }
                images.append(image)
            _write_json(folder / METADATA, {"split": split, "user_id": user.user_id, "images": images})
            split_users[user.user_id] = {"folder": f"{split}/{folder_name}", "images": len(images)}
    index: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "fedimage_version": __version__,
        "store": store.path.name,
        "image_size": store.image_size,
        "color": store.color,
        "image_format": kind,
        "bit_depth": store.bit_depth,
        "label_mapping": store.label_mapping,
        "fine_grained_label_mapping": store.fine_label_mapping,
        "label_relationship": store.taxonomy,
    }
    if store.metadata_columns:
        index["image_metadata"] = [
            {"name": column.name, "type": column.type} for column in store.metadata_columns
        ]
    index["splits"] = {
        split: {"users": len(users), "images": sum(u["images"] for u in users.values())}
        for split, users in splits.items()
    }
    index["users"] = splits
    _write_json(path / INDEX, index)
    check_counts(path, splits, suffix)


def check_counts(
    path: Path, splits: dict[str, dict[str, dict[str, Any]]], suffix: str = IMAGE_SUFFIX
) -> None:
    """Every user folder holds exactly its images (files ending in ``suffix``) and a metadata.json;
    the splits hold no other folder."""
    problems = []
    for split, users in splits.items():
        expected = {info["folder"].rsplit("/", 1)[1] for info in users.values()}
        found = {entry.name for entry in os.scandir(path / split)} if users else set()
        problems += [f"{split}/{name}: unexpected folder" for name in sorted(found - expected)]
        for user_id, info in users.items():
            folder = path / info["folder"]
            names = [entry.name for entry in os.scandir(folder)] if folder.is_dir() else []
            images = sum(name.endswith(suffix) for name in names)
            if images != info["images"] or METADATA not in names:
                problems.append(
                    f"{info['folder']} (user {user_id!r}): {images} images of {info['images']}"
                    + ("" if METADATA in names else f", no {METADATA}")
                )
    if problems:
        raise FedimageError(f"dirs export {path} is incomplete: " + "; ".join(problems[:5]))
