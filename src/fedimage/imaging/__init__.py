"""Images: standardizing one image (decode, orient, resize, encode), probing a source's images, and
JPEG segment surgery.

:mod:`~fedimage.imaging.standardize` turns any input image into the store's square 8-bit RGB or
gray (JPEG bytes or raw pixels), rejecting what it cannot decode; :mod:`~fedimage.imaging.probe`
reads a sample of a source's image headers (its native size, whether it is grayscale);
:mod:`~fedimage.imaging.jpeg_segments` reads a JPEG's structure to copy it byte for byte without
its metadata.
"""

from __future__ import annotations

from fedimage.imaging.probe import ImageProbe, native_size, probe_images
from fedimage.imaging.standardize import (
    COLOR_MODES,
    DEFAULT_MAX_PIXELS,
    NATIVE_SIZE,
    RESIZE_MODES,
    STORAGE_MODES,
    ImageOptions,
    ImageRejected,
    standardize_bytes,
    standardize_file,
)

__all__ = [
    "COLOR_MODES",
    "DEFAULT_MAX_PIXELS",
    "NATIVE_SIZE",
    "RESIZE_MODES",
    "STORAGE_MODES",
    "ImageOptions",
    "ImageProbe",
    "ImageRejected",
    "native_size",
    "probe_images",
    "standardize_bytes",
    "standardize_file",
]
