"""FLAIR's raw distribution: ``labels_and_metadata.json`` plus ``small_images/``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fedimage.errors import SourceError
from fedimage.records import ImageRecord, Reject
from fedimage.sources.base import Source
from fedimage.sources.manifest import json_list_rows, records_from_rows

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
        try:
            with open(self.metadata_path, encoding="utf-8") as handle:
                data = json.load(handle)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise SourceError(f"cannot read {self.metadata_path}: {error}") from None
        if not isinstance(data, list):
            raise SourceError(f"{self.metadata_path} must hold a JSON list of image objects")
        rows, _ = json_list_rows(data, METADATA_FILE)
        yield from records_from_rows(self._with_image_paths(rows), FLAIR_COLUMNS, self.root, "|")

    def _with_image_paths(self, rows: Iterator[tuple[str, Any]]) -> Iterator[tuple[str, Any]]:
        for origin, row in rows:
            if isinstance(row, dict):
                image_id = str(row.get("image_id", "")).strip()
                row["_image"] = f"{self.image_folder}/{image_id}.jpg" if image_id else ""
            yield origin, row
