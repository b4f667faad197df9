"""Exception types raised by fedimage.

Every error a user can cause carries a message that names the offending file,
row or value and says what is wrong, so the CLI can print it as one line.
"""

from __future__ import annotations


class FedimageError(Exception):
    """Base class of all errors fedimage raises on purpose."""


class SourceError(FedimageError):
    """The input collection cannot be read at all (missing, unknown format, bad columns)."""


class OptionError(FedimageError, ValueError):
    """An option has an invalid value."""


class StoreError(FedimageError):
    """A store file is missing, not a fedimage store, or cannot be written."""


class MissingExtraError(FedimageError, ImportError):
    """An optional dependency is not installed; the message names the extra that installs it."""

    def __init__(self, message: str, extra: str):
        super().__init__(message)
        self.extra = extra
