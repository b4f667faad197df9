"""Names and encodings of the store's HDF5 layout (format version 2; version 1 is read too).

Per user, ``/{split}/{user}/`` holds what both FLAIR loaders read:

=========================== ======================================================
``images``                  raw only: uint8 [N, S, S, 3], exactly FLAIR's pixels (a gray
                            store: [N, S, S, 1])
``jpeg``                    jpeg only: uint8 [total bytes], all JPEGs of the user
                            concatenated (see ``jpeg_offsets``)
``jpeg_offsets``            jpeg only: int64 [N + 1], image i is bytes [o[i], o[i+1])
``png``, ``png_offsets``    lossless only: the user's PNG files (8 or 16 bits, ``bit_depth`` in
                            the manifest), as ``jpeg`` and ``jpeg_offsets``
``image_ids``               bytes [N]
``labels``                  bytes [N], coarse labels joined by ``|`` (ml-flair)
``fine_grained_labels``     bytes [N], fine labels joined by ``|`` (ml-flair)
``labels_row/_col``         image index / coarse label index per label (pfl-research)
``fine_grained_labels_row/_col``  the same for fine labels
=========================== ======================================================

A jpeg store never uses a name that FLAIR's layout gives another meaning, so a
FLAIR-layout reader (which takes ``images`` as uint8 pixels) fails loudly on it. Format
version 1 kept a jpeg store's bytes in ``images`` and its offsets in ``image_offsets``:
:func:`image_datasets` gives the names of either version.

``/metadata`` holds JSON strings: ``label_mapping``, ``fine_grained_label_mapping``,
``label_counter``, ``fine_grained_label_counter``, ``label_relationship`` (the
fine -> coarse taxonomy) and ``manifest`` (format, options, counts, checksums, and ``color``:
``rgb``, or ``gray`` for a store of one-channel images, 1-component JPEGs in a jpeg store;
a manifest without it is ``rgb``).
"""

from __future__ import annotations

from urllib.parse import quote, unquote

from fedimage.labels import LabelLevel

FORMAT_NAME = "fedimage"
#: The version written; 2 renamed a jpeg store's ``images``/``image_offsets`` to ``jpeg``/``jpeg_offsets``;
#: 3 made each dataset's digest in a user group's checksum BLAKE3 instead of SHA-256 (see
#: :func:`dataset_digest`).
FORMAT_VERSION = 3
#: The versions this fedimage reads.
READABLE_FORMAT_VERSIONS = (1, 2, 3)

METADATA = "metadata"
#: The ``/metadata`` entry of a conversion's shard file: its users, key and rejects (JSON).
SHARD_INFO = "shard"
#: A raw store's pixels, uint8 [N, S, S, 3] (FLAIR's name and meaning); [N, S, S, 1] in a gray store.
IMAGES = "images"
#: A jpeg store's JPEG files, concatenated, and where each starts.
JPEG_BYTES = "jpeg"
JPEG_OFFSETS = "jpeg_offsets"
#: A lossless store's PNG files (8 or 16 bits per sample), concatenated, and where each starts.
PNG_BYTES = "png"
PNG_OFFSETS = "png_offsets"
#: Format version 1's names for a jpeg store's bytes and offsets.
V1_JPEG_BYTES = "images"
V1_JPEG_OFFSETS = "image_offsets"
IMAGE_IDS = "image_ids"
LABELS = "labels"
FINE_LABELS = "fine_grained_labels"
LABELS_ROW = "labels_row"
LABELS_COL = "labels_col"
FINE_LABELS_ROW = "fine_grained_labels_row"
FINE_LABELS_COL = "fine_grained_labels_col"

LABEL_MAPPING = "label_mapping"
FINE_LABEL_MAPPING = "fine_grained_label_mapping"
LABEL_COUNTER = "label_counter"
FINE_LABEL_COUNTER = "fine_grained_label_counter"
TAXONOMY = "label_relationship"
MANIFEST = "manifest"

#: Every dataset of a user group but the images (and a jpeg store's offsets).
INDEX_DATASETS = (
    IMAGE_IDS,
    LABELS,
    FINE_LABELS,
    LABELS_ROW,
    LABELS_COL,
    FINE_LABELS_ROW,
    FINE_LABELS_COL,
)


def image_datasets(storage: str, version: int) -> tuple[str, str | None]:
    """The datasets holding a user's images in a store of ``storage`` and format ``version``:
    (images, offsets), offsets None for raw pixels."""
    if storage == "raw":
        return IMAGES, None
    if storage == "lossless":
        return PNG_BYTES, PNG_OFFSETS
    if version == 1:
        return V1_JPEG_BYTES, V1_JPEG_OFFSETS
    return JPEG_BYTES, JPEG_OFFSETS


def dataset_digest(version: int) -> str:
    """The hash of each dataset's bytes in the user group checksums of a format ``version`` store:
    ``blake3`` from version 3 (four times SHA-256's speed on one core; a raw store is mostly pixels
    to hash), ``sha256`` before. The group checksum over those lines stays SHA-256."""
    return "blake3" if version >= 3 else "sha256"


def user_datasets(storage: str, version: int) -> tuple[str, ...]:
    """Every dataset a user group of such a store holds."""
    images, offsets = image_datasets(storage, version)
    return (images, *INDEX_DATASETS) if offsets is None else (images, *INDEX_DATASETS, offsets)


def user_key(user_id: str) -> str:
    """The HDF5 group name of a user: the id itself unless it contains ``/`` or ``%``
    or is ``.``, which are percent-encoded (FLAIR's ids such as ``59769174@N00``
    stay unchanged)."""
    if user_id in (".", ".."):
        return user_id.replace(".", "%2E")
    if "/" in user_id or "%" in user_id:
        return quote(user_id, safe="")
    return user_id


def user_id_from_key(key: str) -> str:
    """Inverse of :func:`user_key`."""
    return unquote(key) if "%" in key else key


def rejects_path_for(output: str) -> str:
    """Where the rejects report of a store goes: ``out.h5`` -> ``out.rejects.jsonl``."""
    base = output[: -len(".h5")] if output.endswith(".h5") else output
    return base + ".rejects.jsonl"


def label_datasets(level: LabelLevel | str) -> tuple[str, str]:
    """The (row, col) datasets of a user group holding the labels of ``level`` (pfl-research's layout)."""
    if LabelLevel.parse(level) is LabelLevel.COARSE:
        return LABELS_ROW, LABELS_COL
    return FINE_LABELS_ROW, FINE_LABELS_COL
