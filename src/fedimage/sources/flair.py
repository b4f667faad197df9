"""FLAIR's raw distribution: ``labels_and_metadata.json`` plus ``small_images/``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fedimage.errors import SourceError
from fedimage.records import ImageRecord, Reject
from fedimage.sources.base import Source
from fedimage.sources.json_stream import iter_json_array
from fedimage.sources.manifest import records_from_rows

METADATA_FILE = "labels_and_metadata.json"
IMAGE_FOLDER = "small_images"
TAXONOMY_FILE = "label_relationship.txt"
FLAIR_COLUMNS: dict[str, str | None] = {
    "image": "_image",
    "user": "user_id",
    "labels": "labels",
    "fine_labels": "fine_grained_labels",
    "partition": "partition",
    "image_id": "image_id",
}


class FlairSource(Source):
    """A folder as ml-flair's ``download_dataset.py`` leaves it.

    Each metadata object has ``user_id``, ``image_id``, ``labels``,
    ``fine_grained_labels`` and ``partition``; the image is
    ``small_images/{image_id}.jpg``. ``label_relationship.txt``, when present,
    is the default taxonomy.
    """

    kind = "flair"

    def __init__(self, root: Path, image_folder: str = IMAGE_FOLDER):
        super().__init__(root)
        self.metadata_path = root / METADATA_FILE
        if not self.metadata_path.is_file():
            raise SourceError(f"{root} is not a FLAIR folder: {METADATA_FILE} not found")
        self.image_folder = image_folder

    @staticmethod
    def looks_like(path: Path) -> bool:
        return path.is_dir() and (path / METADATA_FILE).is_file()

    @property
    def default_taxonomy(self) -> Path | None:
        candidate = self.root / TAXONOMY_FILE
        return candidate if candidate.is_file() else None

    def records(self) -> Iterator[ImageRecord | Reject]:
        yield from records_from_rows(self._with_image_paths(self._rows()), FLAIR_COLUMNS, self.root, "|")

    def _rows(self) -> Iterator[tuple[str, Any]]:
        """(origin, object) per metadata item, streamed; a non-object item becomes its rejection."""
        for index, item in enumerate(iter_json_array(self.metadata_path)):
            origin = f"{METADATA_FILE} item {index}"
            yield origin, item if isinstance(item, dict) else ValueError("item is not a JSON object")

    def _with_image_paths(self, rows: Iterator[tuple[str, Any]]) -> Iterator[tuple[str, Any]]:
        for origin, row in rows:
            if isinstance(row, dict):
                image_id = str(row.get("image_id", "")).strip()
                row["_image"] = f"{self.image_folder}/{image_id}.jpg" if image_id else ""
            yield origin, row
