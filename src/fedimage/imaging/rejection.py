"""Why an input cannot become a store image: the one exception every decoder raises."""

from __future__ import annotations


class ImageRejected(Exception):
    """The file cannot become a store image; the message is the reason (it never quotes what the
    file holds: a DICOM header's values identify patients)."""


_FIXED_REASONS: set[str] = set()


def fixed_reason(text: str) -> str:
    """Register ``text`` as a reason that quotes nothing of its input (a fixed sentence), and return it.

    A pseudonymized run withholds a decoder's reason that contains the input's file name; a fixed
    reason is kept whole even when a file happens to be named like one of its words.

        NO_PIXELS = fixed_reason("DICOM file has no pixel data")
    """
    _FIXED_REASONS.add(text)
    return text


def is_fixed_reason(text: str) -> bool:
    """True for a reason registered with :func:`fixed_reason`."""
    return text in _FIXED_REASONS


__all__ = ["ImageRejected", "fixed_reason", "is_fixed_reason"]
