"""Names and encodings of the store's HDF5 layout (format version 1).

Per user, ``/{split}/{user}/`` holds what both FLAIR loaders read:

=========================== ======================================================
``images``                  raw: uint8 [N, S, S, 3]; jpeg: uint8 [total bytes], all
                            JPEGs of the user concatenated (see ``image_offsets``)
``image_offsets``           jpeg only: int64 [N + 1], image i is bytes [o[i], o[i+1])
``image_ids``               bytes [N]
``labels``                  bytes [N], coarse labels joined by ``|`` (ml-flair)
``fine_grained_labels``     bytes [N], fine labels joined by ``|`` (ml-flair)
``labels_row/_col``         image index / coarse label index per label (pfl-research)
``fine_grained_labels_row/_col``  the same for fine labels
=========================== ======================================================

``/metadata`` holds JSON strings: ``label_mapping``, ``fine_grained_label_mapping``,
``label_counter``, ``fine_grained_label_counter``, ``label_relationship`` (the
fine -> coarse taxonomy) and ``manifest`` (format, options, counts, checksums).
"""

from __future__ import annotations

from urllib.parse import quote, unquote

from fedimage.labels import LabelLevel

FORMAT_NAME = "fedimage"
FORMAT_VERSION = 1

METADATA = "metadata"
#: The ``/metadata`` entry of a conversion's shard file: its users, key and rejects (JSON).
SHARD_INFO = "shard"
IMAGES = "images"
IMAGE_OFFSETS = "image_offsets"
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

USER_DATASETS_RAW = (
    IMAGES,
    IMAGE_IDS,
    LABELS,
    FINE_LABELS,
    LABELS_ROW,
    LABELS_COL,
    FINE_LABELS_ROW,
    FINE_LABELS_COL,
)
USER_DATASETS_JPEG = (*USER_DATASETS_RAW, IMAGE_OFFSETS)


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
