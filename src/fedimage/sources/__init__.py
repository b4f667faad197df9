"""Input sources: everything fedimage can convert, and how a source is recognized."""

from __future__ import annotations

from pathlib import Path

from fedimage.errors import SourceError
from fedimage.labels import Taxonomy
from fedimage.sources.base import Source
from fedimage.sources.dicom import DicomFolderSource
from fedimage.sources.flair import FlairSource
from fedimage.sources.folder import FOLDER_LAYOUTS, FolderSource
from fedimage.sources.huggingface import HuggingFaceSource, resolve_hub_name
from fedimage.sources.manifest import MANIFEST_SUFFIXES, ManifestColumns, ManifestSource

SOURCE_FORMATS = ("folder", "manifest", "flair", "hf", "dicom")
DATASET_SUFFIXES = (".parquet", ".arrow")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")

__all__ = [
    "FOLDER_LAYOUTS",
    "SOURCE_FORMATS",
    "DicomFolderSource",
    "FlairSource",
    "FolderSource",
    "HuggingFaceSource",
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
        if path.suffix.lower() == ".arrow" or (path.suffix.lower() == ".parquet" and _has_image_struct(path)):
            return "hf"
        if path.suffix.lower() in MANIFEST_SUFFIXES:
            return "manifest"
        raise SourceError(
            f"cannot tell what {path} is: a file source must be a manifest "
            f"({', '.join(sorted(MANIFEST_SUFFIXES))}); pass `source_format`"
        )
    if FlairSource.looks_like(path):
        return "flair"
    if _looks_like_hf_folder(path):
        return "hf"
    if _looks_like_dicom_folder(path):
        return "dicom"
    return "folder"


def _looks_like_dicom_folder(path: Path, sample: int = 16) -> bool:
    """A folder of DICOM files: one named ``.dcm`` or ``DICOMDIR``, or with ``DICM`` at byte 128,
    among its first files without an image suffix (one walk, stopped at the first image)."""
    checked = 0
    for candidate in path.rglob("*"):
        suffix = candidate.suffix.lower()
        if suffix in IMAGE_SUFFIXES:
            return False
        if candidate.name.startswith(".") or not candidate.is_file():
            continue
        if suffix in (".dcm", ".dicom") or candidate.name == "DICOMDIR":
            return True
        try:
            with open(candidate, "rb") as handle:
                if handle.read(132)[128:] == b"DICM":
                    return True
        except OSError:
            pass
        checked += 1
        if checked >= sample:
            return False
    return False
    return False


def _has_image_struct(path: Path) -> bool:
    """A Parquet file with a ``datasets`` Image column (struct with ``bytes``) holds the images."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except Exception:
        return False
    return any(
        pa.types.is_struct(field.type) and field.type.get_field_index("bytes") >= 0 for field in schema
    )


def _looks_like_hf_folder(path: Path) -> bool:
    """A saved dataset, or a folder whose data files are Parquet/Arrow and holds no images."""
    if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
        return True
    found_data = False
    for candidate in path.rglob("*"):
        suffix = candidate.suffix.lower()
        if suffix in IMAGE_SUFFIXES:
            return False  # one walk, stopped at the first image of an image folder
        found_data = found_data or suffix in DATASET_SUFFIXES
    return found_data


def open_source(
    path: str | Path,
    source_format: str | None = None,
    *,
    layout: str | None = None,
    columns: ManifestColumns | None = None,
    label_delimiter: str = "|",
    taxonomy: Taxonomy | None = None,
    allow_download: bool = False,
    user_tag: str = "PatientID",
    label_tag: str | None = None,
    dicom_frames: str = "first",
    label_table: str | Path | None = None,
) -> Source:
    """Open ``path`` as the given (or detected) kind of source.

    With ``source_format="hf"``, ``path`` may also name a Hub dataset (``owner/name``)
    already in the local Hugging Face cache; it is downloaded only with ``allow_download``.
    A ``dicom`` folder (detected when it holds DICOM files) takes users from ``user_tag``,
    labels from ``label_tag`` (or a CSV ``label_table`` joined on the file path or SOPInstanceUID)
    and, with ``dicom_frames="all"``, one image per frame.
    """
    path = Path(path)
    if source_format == "hf" and not path.exists() and len(path.parts) == 2:
        path = resolve_hub_name(str(path.as_posix()), allow_download)
    if source_format is None:
        source_format = detect_source_format(path)
    elif not path.exists():
        raise SourceError(f"source not found: {path}")
    if source_format == "folder":
        return FolderSource(path, layout=layout, taxonomy=taxonomy)
    if source_format == "manifest":
        if path.is_dir():
            raise SourceError(f"`source_format` manifest needs a table file, got folder {path}")
        return ManifestSource(path, columns=columns, label_delimiter=label_delimiter)
    if source_format == "flair":
        return FlairSource(path)
    if source_format == "hf":
        return HuggingFaceSource(path, columns=columns, label_delimiter=label_delimiter)
    if source_format == "dicom":
        if not path.is_dir():
            raise SourceError(f"`source_format` dicom needs a folder, got file {path}")
        return DicomFolderSource(
            path,
            user_tag=user_tag,
            label_tag=label_tag,
            frames=dicom_frames,
            label_table=Path(label_table) if label_table is not None else None,
            label_delimiter=label_delimiter,
        )
    raise SourceError(f"unknown source format {source_format!r}; expected one of {', '.join(SOURCE_FORMATS)}")
