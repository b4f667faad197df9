"""Fields of an image's own header kept as per-image metadata, read before the header is stripped.

A store's images carry no EXIF (the standardized JPEG is written without it), so the fields a
study needs (which camera, when) are read from the source file by the worker that converts it,
with Pillow, which parses the header without decoding pixels. Each field has a fixed type
(see :mod:`fedimage.store.metadata`); a field the file does not have is a missing value.

==================== ============ ======================================================
field                type         from
==================== ============ ======================================================
``camera_make``      string       EXIF ``Make``
``camera_model``     string       EXIF ``Model``
``lens_model``       string       EXIF ``LensModel``
``datetime``         timestamp    ``DateTimeOriginal``, else ``DateTime`` (the camera's local time)
``width``            int          the source image's width in pixels, as stored
``height``           int          the source image's height in pixels, as stored
``orientation``      int          EXIF ``Orientation`` (1-8)
``focal_length``     float        EXIF ``FocalLength`` (mm)
``exposure_time``    float        EXIF ``ExposureTime`` (s)
``f_number``         float        EXIF ``FNumber``
``iso``              int          EXIF ``ISOSpeedRatings``
==================== ============ ======================================================

GPS position, serial numbers and the owner's name are never read: they identify people.

    read_exif("photo.jpg", ("camera_model", "datetime"))  # ('Pixel 7', datetime(2023, 5, 4, ...))
"""

from __future__ import annotations

import datetime as dt
import io
import math
from collections.abc import Sequence
from typing import Any

from PIL import Image

#: Every field :func:`read_exif` reads, with its type.
EXIF_FIELDS: dict[str, str] = {
    "camera_make": "string",
    "camera_model": "string",
    "lens_model": "string",
    "datetime": "timestamp",
    "width": "int",
    "height": "int",
    "orientation": "int",
    "focal_length": "float",
    "exposure_time": "float",
    "f_number": "float",
    "iso": "int",
}
_IFD0_TAGS = {"camera_make": 0x010F, "camera_model": 0x0110, "orientation": 0x0112}
_EXIF_TAGS = {
    "lens_model": 0xA434,
    "focal_length": 0x920A,
    "exposure_time": 0x829A,
    "f_number": 0x829D,
    "iso": 0x8827,
}
_DATETIME_ORIGINAL, _DATETIME = 0x9003, 0x0132
_EXIF_IFD = 0x8769


def read_exif(image: str | bytes, fields: Sequence[str]) -> tuple[Any, ...]:
    """The values of ``fields`` (names of :data:`EXIF_FIELDS`) in the header of ``image`` (a path
    or the file's bytes); a field the image lacks, or an unreadable header, gives None."""
    try:
        with Image.open(io.BytesIO(image) if isinstance(image, bytes) else image) as opened:
            width, height = opened.size
            exif = opened.getexif()
            sub = exif.get_ifd(_EXIF_IFD) if fields and _needs_sub_ifd(fields) else {}
            return tuple(_field(name, exif, sub, width, height) for name in fields)
    except Exception:  # the conversion rejects an unreadable image itself, with its reason
        return (None,) * len(fields)


def _needs_sub_ifd(fields: Sequence[str]) -> bool:
    return any(name in _EXIF_TAGS or name == "datetime" for name in fields)


def _field(name: str, exif: Any, sub: Any, width: int, height: int) -> Any:
    if name == "width":
        return width
    if name == "height":
        return height
    if name == "datetime":
        return _time(sub.get(_DATETIME_ORIGINAL) or exif.get(_DATETIME))
    value = exif.get(_IFD0_TAGS[name]) if name in _IFD0_TAGS else sub.get(_EXIF_TAGS[name])
    kind = EXIF_FIELDS[name]
    try:
        if value is None:
            return None
        if kind == "string":
            text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
            return text.strip("\0 ").strip() or None
        if isinstance(value, tuple | list):
            value = value[0] if value else None
        number = float(value)
        if not math.isfinite(number):
            return None
        return int(number) if kind == "int" else number
    except (TypeError, ValueError, ZeroDivisionError):
        return None


def _time(value: Any) -> dt.datetime | None:
    """EXIF's ``YYYY:MM:DD HH:MM:SS`` (no zone: the camera's clock) as a datetime, else None."""
    if not isinstance(value, str) or len(value) < 19:
        return None
    try:
        return dt.datetime.strptime(value[:19], "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return None


__all__ = ["EXIF_FIELDS", "read_exif"]
