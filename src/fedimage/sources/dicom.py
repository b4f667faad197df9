"""A folder of DICOM files (a PACS export): users from a tag, labels from a tag, tags as metadata.

Every file under the folder is an input (hidden files aside): a DICOM file becomes one image (or
one per frame, with ``frames="all"``), anything else a rejection; ``DICOMDIR`` index files are
counted as ignored. Headers are read without pixel data. The user is ``PatientID`` (``user_tag``
to change), the labels are the values of ``label_tag`` (none by default), and the columns a
conversion may keep (``keep_columns``) are DICOM attribute keywords (``Modality``,
``BodyPartExamined``, ``InstitutionName``...).

Those ids and paths identify patients: :attr:`identifying_ids` makes a conversion refuse to run
without pseudonyms (or an explicit ``allow_identifiers``), and :meth:`identifying_columns` names
the kept tags that the DICOM confidentiality profile lists (see
:mod:`fedimage.privacy.dicom_profile`). A rejection reason never quotes a header value.

    source = DicomFolderSource(Path("pacs-export/"), label_tag="BodyPartExamined")
"""

from __future__ import annotations

import csv
import datetime as dt
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from fedimage.errors import OptionError, SourceError
from fedimage.extras import require
from fedimage.imaging.dicom import header as read_header
from fedimage.imaging.rejection import ImageRejected
from fedimage.imaging.standardize import FRAME_SEPARATOR
from fedimage.records import ImageRecord, Reject
from fedimage.sources.folder import FolderSource

DICOMDIR = "DICOMDIR"
_MEDIA_DIRECTORY = "1.2.840.10008.1.3.10"


class DicomFolderSource(FolderSource):
    """DICOM files anywhere under ``root`` (see the module docstring)."""

    kind = "dicom"

    def __init__(
        self,
        root: Path,
        *,
        user_tag: str = "PatientID",
        label_tag: str | None = None,
        frames: str = "first",
        label_table: Path | None = None,
        label_delimiter: str = "|",
    ):
        self._pydicom = require("pydicom", "reading DICOM")
        if label_tag is not None and label_table is not None:
            raise OptionError("labels come from `label_tag` or from `label_table`, not both")
        self.label_table = Path(label_table) if label_table is not None else None
        self._table_labels, self._table_key = (
            read_label_table(self.label_table, label_delimiter) if self.label_table is not None else ({}, "")
        )
        for option, keyword in (("user_tag", user_tag), ("label_tag", label_tag)):
            if keyword is not None and not self._is_keyword(keyword):
                raise OptionError(f"`{option}` {keyword!r} is not a DICOM attribute keyword (e.g. PatientID)")
        self.user_tag = user_tag
        self.label_tag = label_tag
        self.frames = frames
        super().__init__(root, layout="user")

    def _is_keyword(self, keyword: str) -> bool:
        return self._pydicom.datadict.tag_for_keyword(keyword) is not None

    @property
    def expands_frames(self) -> bool:
        return True

    @property
    def identifying_ids(self) -> bool:
        """True: user ids (a patient tag) and image ids (file paths) identify patients."""
        return True

    def describe(self) -> str:
        label = f", labels from {self.label_tag}" if self.label_tag else ""
        return f"DICOM folder {self.root} (users from {self.user_tag}{label}, {len(self._files)} files)"

    def available_columns(self) -> list[str] | None:
        return None  # any DICOM attribute keyword: checked by check_columns

    def check_columns(self, columns: Sequence[str], option: str = "keep_columns") -> None:
        for name in columns:
            if not self._is_keyword(name):
                raise OptionError(
                    f"`{option}` {name!r} is not a DICOM attribute keyword (a DICOM source keeps tags by"
                    " keyword, e.g. Modality, BodyPartExamined)"
                )

    def identifying_columns(self, columns: Sequence[str]) -> list[str]:
        """The ``columns`` (tag keywords) that the DICOM confidentiality profile lists as identifying."""
        from fedimage.privacy.dicom_profile import is_identifying

        return [name for name in dict.fromkeys(columns) if is_identifying(name)]

    @property
    def identifying_labels(self) -> str | None:
        """The label tag when the confidentiality profile lists it (its values would be clear labels)."""
        from fedimage.privacy.dicom_profile import is_identifying

        return self.label_tag if self.label_tag and is_identifying(self.label_tag) else None

    def records(self, columns: Sequence[str] = ()) -> Iterator[ImageRecord | Reject]:
        self.check_columns(columns)
        return self._dicom_records(tuple(columns))

    def _dicom_records(self, columns: tuple[str, ...]) -> Iterator[ImageRecord | Reject]:
        wanted = [self.user_tag, *([self.label_tag] if self.label_tag else []), *columns]
        wanted += ["NumberOfFrames", "MediaStorageSOPClassUID", "SOPInstanceUID"]
        directories = 0
        matched: set[str] = set()
        table = os.path.realpath(self.label_table) if self.label_table is not None else None
        for parts in sorted([*self._files, *self._problems]):
            relative = "/".join(parts)
            record = ImageRecord(
                path=str(self.root.joinpath(*parts)), image_id=relative, user_id="", origin=relative
            )
            if table is not None and os.path.realpath(record.path) == table:
                self.ignored["label table"] = 1
                continue
            problem = self._problems.get(parts)
            if problem is not None:
                yield _reject(record, problem)
                continue
            try:
                header = read_header(record.path, tags=wanted)
            except ImageRejected as rejection:  # a fixed reason: never a value of the file
                yield _reject(record, str(rejection))
                continue
            except OSError as error:
                yield _reject(record, f"cannot read file: {error.strerror or type(error).__name__}")
                continue
            if (
                Path(record.path).name == DICOMDIR
                or _value(header, "MediaStorageSOPClassUID") == _MEDIA_DIRECTORY
            ):
                directories += 1
                continue
            user = _text(_value(header, self.user_tag))
            labels = _labels(_value(header, self.label_tag)) if self.label_tag else ()
            if self.label_table is not None:
                key = relative if self._table_key == "path" else _text(_value(header, "SOPInstanceUID"))
                labels = self._table_labels.get(key, ())
                matched.add(key)
            metadata = tuple(_cell(_value(header, name)) for name in columns)
            frames = _frame_indices(_value(header, "NumberOfFrames"), self.frames)
            for frame in frames:
                yield ImageRecord(
                    path=record.path if frames == [None] else f"{record.path}{FRAME_SEPARATOR}{frame}",
                    image_id=relative if frames == [None] else f"{relative}#{frame}",
                    user_id=user,
                    labels=labels,
                    origin=relative,
                    metadata=metadata,
                )
        if directories:
            self.ignored["DICOMDIR index"] = directories
        unmatched = len(set(self._table_labels) - matched)
        if unmatched:  # rows of the label table that name no file converted: counted, never quoted
            self.ignored["label table rows matching no DICOM file"] = unmatched


#: The key columns a label table may join on: a file's path (relative to the folder) or its SOPInstanceUID.
LABEL_TABLE_KEYS = {"path": "path", "sopinstanceuid": "sop", "sop_instance_uid": "sop"}


def read_label_table(path: Path, delimiter: str = "|") -> tuple[dict[str, tuple[str, ...]], str]:
    """A CSV of labels per DICOM file: ``{key: labels}`` and what the key is (``path`` or ``sop``).

    The first column is the key, named ``path`` (relative to the DICOM folder) or ``SOPInstanceUID``
    (``sop_instance_uid``); the labels are in the column named ``labels``, ``label`` or ``finding``,
    else the second column, ``delimiter``-joined. A key given twice is an error naming its line
    (never its value: a UID or a path may identify a patient).
    """
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise SourceError(
            f"cannot read label table {path}: {getattr(error, 'strerror', None) or error}"
        ) from None
    if not rows or len(rows[0]) < 2:
        raise SourceError(f"label table {path} needs a header with a key column and a labels column")
    header = [name.strip() for name in rows[0]]
    key_kind = LABEL_TABLE_KEYS.get(header[0].lower())
    if key_kind is None:
        raise SourceError(
            f"label table {path}: its first column must be path or SOPInstanceUID, got {header[0]!r}"
        )
    lowered = [name.lower() for name in header]
    label_column = next(
        (lowered.index(name) for name in ("labels", "label", "finding") if name in lowered), 1
    )
    table: dict[str, tuple[str, ...]] = {}
    for number, row in enumerate(rows[1:], start=2):
        if not row or not row[0].strip():
            continue
        key = row[0].strip()
        if key in table:
            raise SourceError(f"label table {path} line {number} repeats the key of an earlier line")
        cell = row[label_column] if label_column < len(row) else ""
        table[key] = tuple(dict.fromkeys(label.strip() for label in cell.split(delimiter) if label.strip()))
    return table, key_kind


def _reject(record: ImageRecord, reason: str) -> Reject:
    return Reject(
        origin=record.origin, reason=reason, image_id=record.image_id, path=record.path, stage="source"
    )


def _frame_indices(count: Any, frames: str) -> list[int | None]:
    """The frames to take as images: [None] (the worker picks ``first``/``middle``), or every one."""
    if frames != "all":
        return [None]
    try:
        number = int(count) if count not in (None, "") else 1
    except (TypeError, ValueError):
        number = 1
    return list(range(max(number, 1)))


def _value(header: Any, keyword: str | None) -> Any:
    if keyword is None:
        return None
    element = header.get(keyword)
    return None if element is None else element


def _text(value: Any) -> str:
    if value is None:
        return ""
    if _is_multi(value):
        return "\\".join(str(item) for item in value).strip()
    return str(value).strip()


def _labels(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    items = list(value) if _is_multi(value) else [value]
    return tuple(dict.fromkeys(text for text in (str(item).strip() for item in items) if text))


def _is_multi(value: Any) -> bool:
    return type(value).__name__ == "MultiValue" or isinstance(value, list | tuple)


def _cell(value: Any) -> Any:
    """A tag's value as a metadata cell: numbers as numbers, dates and times as datetimes, several
    values joined by DICOM's backslash, anything else as text."""
    if value is None or value == "":
        return None
    if _is_multi(value):
        return "\\".join(str(item) for item in value)
    kind = type(value).__name__
    if kind in ("DSfloat", "DSdecimal"):
        return float(value)
    if kind == "IS" or isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return value
    if kind in ("DA", "DT"):
        try:
            return _as_datetime(value)
        except ValueError:
            return str(value)
    if isinstance(value, bytes):
        return None  # binary values (OB, UN) are not kept as metadata
    return str(value).strip()


def _as_datetime(value: Any) -> dt.datetime:
    """pydicom's DA (a date) or DT (a datetime) as a datetime (a zoned one converted to UTC)."""
    if isinstance(value, dt.datetime):
        return value
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day)
    raise ValueError("not a date")
