"""The unit of work of a conversion: one input image with its metadata, or its rejection.

Also the rejects report: one JSON line per input that did not reach the store.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class ImageRecord:
    """One input image as a source describes it, before any pixel is read.

    ``path`` is the image file; ``origin`` says where the record came from
    (``"manifest.csv row 12"``, a folder path) for messages and the rejects report.
    ``split`` is the split the source assigns (None when it has no split information).
    """

    path: str
    image_id: str
    user_id: str
    labels: tuple[str, ...] = ()
    fine_labels: tuple[str, ...] = ()
    split: str | None = None
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


def write_rejects(path: Path, rejects: Iterable[Reject]) -> None:
    """Write the report atomically (an empty file when nothing was rejected)."""
    partial = path.with_name(path.name + ".partial")
    with open(partial, "w", encoding="utf-8") as handle:
        for reject in rejects:
            handle.write(json.dumps(reject.to_json(), ensure_ascii=False) + "\n")
    os.replace(partial, path)


def read_rejects(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def reason_counts(rejects: Iterable[Reject]) -> Counter[str]:
    """Rejections grouped by the general kind of reason (the text before any detail)."""
    return Counter(_reason_kind(reject.reason) for reject in rejects)


def _reason_kind(reason: str) -> str:
    """The reason with its specifics (quoted values, numbers, details) blanked out."""
    reason = reason.split(": ", 1)[0].split(" (", 1)[0]
    reason = re.sub(r"'[^']*'|\"[^\"]*\"", "…", reason)
    return re.sub(r"\d[\d,]*", "N", reason)
