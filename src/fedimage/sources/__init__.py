"""Input sources: everything fedimage can convert, and how a source is recognized."""

from __future__ import annotations

from pathlib import Path

from fedimage.errors import SourceError
from fedimage.sources.base import Source
from fedimage.sources.flair import FlairSource
from fedimage.sources.folder import FOLDER_LAYOUTS, FolderSource
from fedimage.sources.manifest import MANIFEST_SUFFIXES, ManifestColumns, ManifestSource
from fedimage.taxonomy import Taxonomy

SOURCE_FORMATS = ("folder", "manifest", "flair")

__all__ = [
    "FOLDER_LAYOUTS",
    "SOURCE_FORMATS",
    "FlairSource",
    "FolderSource",
    "ManifestColumns",
    "ManifestSource",
    "Source",
    "detect_source_format",
    "open_source",
]


def detect_source_format(path: Path) -> str:
    """Guess the source format of ``path`` from what is there."""
    if not path.exists():
        raise SourceError(f"source not found: {path}")
    if path.is_file():
        if path.suffix.lower() in MANIFEST_SUFFIXES:
            return "manifest"
        raise SourceError(
            f"cannot tell what {path} is: a file source must be a manifest "
            f"({', '.join(sorted(MANIFEST_SUFFIXES))}); pass --source-format"
        )
    if FlairSource.looks_like(path):
        return "flair"
    return "folder"


def open_source(
    path: str | Path,
    source_format: str | None = None,
    *,
    layout: str | None = None,
    columns: ManifestColumns | None = None,
    label_delimiter: str = "|",
    taxonomy: Taxonomy | None = None,
) -> Source:
    """Open ``path`` as the given (or detected) kind of source."""
    path = Path(path)
    if source_format is None:
        source_format = detect_source_format(path)
    elif not path.exists():
        raise SourceError(f"source not found: {path}")
    if source_format == "folder":
        return FolderSource(path, layout=layout, taxonomy=taxonomy)
    if source_format == "manifest":
        if path.is_dir():
            raise SourceError(f"--source-format manifest needs a table file, got folder {path}")
        return ManifestSource(path, columns=columns, label_delimiter=label_delimiter)
    if source_format == "flair":
        return FlairSource(path)
    raise SourceError(f"unknown source format {source_format!r}; expected one of {', '.join(SOURCE_FORMATS)}")
