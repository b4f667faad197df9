"""Why an input cannot become a store image: the one exception every decoder raises."""

from __future__ import annotations


class ImageRejected(Exception):
    """The file cannot become a store image; the message is the reason (it never quotes what the
    file holds: a DICOM header's values identify patients)."""


__all__ = ["ImageRejected"]
