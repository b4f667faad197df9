"""Images: standardizing one image (decode, orient, resize, encode) and JPEG segment surgery.

:mod:`~fedimage.imaging.standardize` turns any input image into the store's square 8-bit RGB
(JPEG bytes or raw pixels), rejecting what it cannot decode; :mod:`~fedimage.imaging.jpeg_segments`
reads a JPEG's structure to copy it byte for byte without its metadata.
"""

from __future__ import annotations

from fedimage.imaging.standardize import (
    DEFAULT_MAX_PIXELS,
    RESIZE_MODES,
    STORAGE_MODES,
    ImageOptions,
    ImageRejected,
    standardize_bytes,
    standardize_file,
)

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "RESIZE_MODES",
    "STORAGE_MODES",
    "ImageOptions",
    "ImageRejected",
    "standardize_bytes",
    "standardize_file",
]
