"""Multi-frame DICOM files named by a manifest: one input per frame (``dicom_frames="all"``).

A DICOM folder source expands its files itself; a manifest (or any source whose rows name image
files) gets its rows expanded here, before planning: a row naming a DICOM file of N > 1 frames
becomes N rows whose image ids are ``<id>#<frame>`` and whose paths name the frame (see
:data:`fedimage.imaging.standardize.FRAME_SEPARATOR`). Only the file's header is read.

    metadata = expand_frames(metadata)
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fedimage.errors import MissingExtraError
from fedimage.imaging.dicom import header
from fedimage.imaging.rejection import ImageRejected
from fedimage.imaging.standardize import FRAME_SEPARATOR
from fedimage.sources.record_table import SourceMetadata


def expand_frames(metadata: SourceMetadata) -> SourceMetadata:
    """``metadata`` with each row naming a multi-frame DICOM file repeated once per frame."""
    table = metadata.table
    if table.num_rows == 0:
        return metadata
    paths = table.column("path").to_pylist()
    counts = np.ones(table.num_rows, dtype=np.int64)
    for row, path in enumerate(paths):
        if path and FRAME_SEPARATOR not in path:
            counts[row] = _frames_of(path)
    if (counts == 1).all():
        return metadata
    rows = np.repeat(np.arange(table.num_rows), counts)
    frames = np.concatenate([np.arange(count) if count > 1 else [-1] for count in counts.tolist()])
    expanded = table.take(pa.array(rows))
    marked = frames >= 0
    suffix = pa.array([str(frame) for frame in frames.tolist()], pa.string())
    mask = pa.array(marked)
    path = pc.if_else(
        mask,
        pc.binary_join_element_wise(expanded.column("path"), suffix, FRAME_SEPARATOR),
        expanded.column("path"),
    )
    image_id = pc.if_else(
        mask,
        pc.binary_join_element_wise(expanded.column("image_id"), suffix, "#"),
        expanded.column("image_id"),
    )
    expanded = expanded.set_column(expanded.schema.get_field_index("path"), "path", path)
    expanded = expanded.set_column(expanded.schema.get_field_index("image_id"), "image_id", image_id)
    return SourceMetadata(expanded, metadata.rejects)


def _frames_of(path: str) -> int:
    """The frames of a DICOM file (1 for anything else, or a file that cannot be read: the worker
    rejects that with its reason)."""
    try:  # header() reads the file's start once and rejects what is not DICOM
        return max(1, int(header(path, tags=["NumberOfFrames"]).get("NumberOfFrames") or 1))
    except (OSError, ImageRejected, ValueError, TypeError, MissingExtraError):
        return 1
