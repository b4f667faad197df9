"""Errors of the secure aggregation protocol."""

from __future__ import annotations

from fedimage.errors import FedimageError


class SecAggError(FedimageError):
    """A protocol message is malformed, out of order, tampered with or inconsistent."""


class SecAggAbort(SecAggError):
    """Too few clients survive for the round to finish safely; the round is abandoned."""
