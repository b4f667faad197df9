"""The unit of work of a conversion: one input image with its metadata, or its rejection."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ImageRecord:
    """One input image as a source describes it, before any pixel is read.

    ``path`` is the image file; ``origin`` says where the record came from
    (``"manifest.csv row 12"``, a folder path) for messages and the rejects report.
    ``partition`` is None when the source has no split information.
    """

    path: str
    image_id: str
    user_id: str
    labels: tuple[str, ...] = ()
    fine_labels: tuple[str, ...] = ()
    partition: str | None = None
    origin: str = ""
    row: int = -1


@dataclass(frozen=True, slots=True)
class Reject:
    """An input that was not written to the store, and why."""

    origin: str
    reason: str
    image_id: str | None = None
    path: str | None = None
    user_id: str | None = None
    stage: str = "read"

    def to_json(self) -> dict[str, str]:
        """The rejects-report row for this input (None fields omitted)."""
        row = {
            "origin": self.origin,
            "stage": self.stage,
            "reason": self.reason,
            "image_id": self.image_id,
            "path": self.path,
            "user_id": self.user_id,
        }
        return {key: value for key, value in row.items() if value is not None}
