"""What every input source provides, and the value parsing they share."""

from __future__ import annotations

import math
import numbers
import os
from abc import ABC
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

from fedimage.errors import SourceError
from fedimage.labels import Taxonomy
from fedimage.records import ImageRecord, Reject
from fedimage.sources.metadata import KeepColumn
from fedimage.sources.record_table import (
    ID_PROBLEM,
    LABEL_ITEM_PROBLEM,
    LABEL_PROBLEM,
    NOT_UTF8,
    UNENCODABLE_TEXT,
    SourceMetadata,
    metadata_from_records,
    records_of,
)


class Source(ABC):
    """An image collection that yields one record (or rejection) per input image.

    A source reads metadata only; pixels are read later, by the workers.
    """

    #: Name used by ``--source-format``.
    kind: ClassVar[str]

    def __init__(self, root: Path):
        self.root = root
        #: Inputs deliberately skipped without being images (hidden files), by reason.
        self.ignored: dict[str, int] = {}

    @property
    def stated_image_size(self) -> int | None:
        """The side of the images when the source states it (a fedimage export does), else None."""
        return None

    @property
    def stated_color(self) -> str | None:
        """The images' colour (``rgb`` or ``gray``) when the source states it (a fedimage export does)."""
        return None

    @property
    def stated_storage(self) -> str | None:
        """How the images are to be stored (``lossless``) when the source states it (a fedimage
        export of a lossless store does), else None."""
        return None

    @property
    def stated_bit_depth(self) -> int | None:
        """The images' bits per sample (8 or 16) when the source states it (a fedimage export of a
        lossless store does), else None."""
        return None

    @property
    def stated_metadata_columns(self) -> tuple[KeepColumn, ...]:
        """The per-image metadata columns (with types) a source states it carries (a fedimage
        Parquet export does): a conversion keeps them unless told which to keep."""
        return ()

    @property
    def expands_frames(self) -> bool:
        """True when the source gives each frame of a multi-frame DICOM file its own record itself."""
        return False

    @property
    def identifying_ids(self) -> bool:
        """True when the source's user ids and image ids identify people (DICOM's patient ids and
        paths): a conversion then needs pseudonyms, or an explicit ``allow_identifiers``."""
        return False

    def identifying_columns(self, columns: Sequence[str]) -> list[str]:
        """Which of ``columns`` identify people by definition (a DICOM source: the confidentiality
        profile's attributes); such a column is kept only pseudonymized."""
        return []

    @property
    def identifying_labels(self) -> str | None:
        """The field labels come from when it identifies people (a DICOM tag the confidentiality
        profile lists), else None."""
        return None

    @property
    def split_column(self) -> str | None:
        """The column (or field) that gives rows their split, when the source has one."""
        return None

    @property
    def has_users(self) -> bool:
        """False when the collection has no notion of user (users must be assigned)."""
        return True

    @property
    def default_taxonomy(self) -> Path | Taxonomy | None:
        """A taxonomy that ships with the collection, if any: a taxonomy file, or the taxonomy itself."""
        return None

    def records(self, columns: Sequence[str] = ()) -> Iterator[ImageRecord | Reject]:
        """Every input image (then every reject), in a deterministic order.

        Each record's ``metadata`` holds its cells of ``columns`` (other columns of the source,
        kept per image; see :meth:`check_columns`). Row-based sources (folders, manifests)
        override this and get :meth:`metadata` from it; columnar sources (FLAIR, Hugging Face)
        override :meth:`metadata` and get this from it.
        """
        if type(self).metadata is Source.metadata:
            raise TypeError(f"{type(self).__name__} must override records() or metadata()")
        metadata = self.metadata(columns)
        yield from records_of(metadata.table)
        yield from metadata.rejects

    def metadata(self, columns: Sequence[str] = ()) -> SourceMetadata:
        """Every input as one table row (or a reject), with a ``meta:<name>`` column per name of
        ``columns`` (untyped cells). Columnar sources override this."""
        return metadata_from_records(self.records(columns), columns)

    def available_columns(self) -> list[str] | None:
        """The columns a record may keep as metadata (None: the source has no columns, as a folder tree)."""
        return None

    def check_columns(self, columns: Sequence[str], option: str = "keep_columns") -> None:
        """Raise a one-line error naming the first of ``columns`` the source does not have."""
        if not columns:
            return
        available = self.available_columns()
        if available is None:
            raise SourceError(
                f"`{option}` names column {columns[0]!r}, but a {self.kind} source has no columns"
                " (per-image metadata comes from a manifest, a FLAIR folder or a Hugging Face dataset;"
                " `exif_columns` reads the images' own EXIF fields)"
            )
        for name in columns:
            if name not in available:
                raise SourceError(
                    f"`{option}` column {name!r} is not a column of {self.describe()}; its columns are:"
                    f" {', '.join(available) or '(none)'}"
                )

    def read_images(self, records: Sequence[ImageRecord]) -> list[bytes | str | None]:
        """For each record, its encoded bytes, or a file path for the worker to read.

        File-based sources return the paths: reading happens in the workers.
        """
        return [record.path for record in records]

    def prepare_reading(self) -> None:  # noqa: B027 - a hook: most sources read nothing ahead
        """Make :meth:`read_images` ready to be called from forked worker processes.

        Called once before the workers fork, so that each worker reads the images
        of its own shards instead of the main process reading and sending them.
        """

    def close(self) -> None:  # noqa: B027 - a hook: most sources hold nothing open
        """Release files the source holds open (temporary files included)."""

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def name(self) -> str:
        """The collection's file or folder name, recorded in the store's manifest."""
        return Path(os.path.abspath(self.root)).name

    def describe(self) -> str:
        return f"{self.kind} source {self.root}"


class CellError(ValueError):
    """A cell that cannot hold what its column means; the message goes on from "column 'x' ..."."""


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _is_list(value: Any) -> bool:
    return isinstance(value, list | tuple) or (hasattr(value, "tolist") and getattr(value, "ndim", 0) == 1)


def _describe(value: Any) -> str:
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return "a boolean"
    if isinstance(value, numbers.Number):
        return "a number"
    if _is_list(value):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return f"a value of type {type(value).__name__}"


def _text(value: str | bytes) -> str:
    """Text (UTF-8 bytes decoded) stripped; text that UTF-8 cannot hold is a :class:`CellError`."""
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            raise CellError(NOT_UTF8) from None
    elif not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise CellError(UNENCODABLE_TEXT) from None
    return value.strip()


def clean_text(value: Any) -> str:
    """A text cell (an image path) stripped; missing values (None, NaN) become ''.

    Anything but text raises :class:`CellError`: a number or a list is no path.
    """
    if _missing(value):
        return ""
    if isinstance(value, str | bytes):
        return _text(value)
    raise CellError(f"holds {_describe(value)}, not text")


def clean_id(value: Any) -> str:
    """An id cell as text: text stripped, an integer in decimal (an integral float too: ``7.0`` is ``"7"``).

    Missing values (None, NaN) become ''; anything else (a fraction, a boolean, a list, an object)
    raises :class:`CellError`, never a made-up id such as ``"['a', 'b']"``.
    """
    if _missing(value):
        return ""
    if isinstance(value, str | bytes):
        return _text(value)
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return str(int(value))
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, float):
        raise CellError(f"holds a number that is not an integer; {ID_PROBLEM}")
    raise CellError(f"holds {_describe(value)}; {ID_PROBLEM}")


def parse_label_list(value: Any, delimiter: str) -> tuple[str, ...]:
    """Labels from a list of names or a delimiter-joined string, stripped, empty ones dropped.

    Duplicates are removed keeping the first occurrence; missing values (None, NaN) are no
    labels. A number, a boolean or a nested list (in the list or instead of it) is no label
    name: :class:`CellError`.
    """
    if _missing(value):
        items: list[str] = []
    elif isinstance(value, str | bytes):
        text = _text(value)
        items = text.split(delimiter) if text else []
    elif _is_list(value):
        items = []
        for item in value.tolist() if hasattr(value, "tolist") else value:
            if _missing(item):
                continue
            if not isinstance(item, str | bytes):
                raise CellError(f"holds a list with {_describe(item)} in it; {LABEL_ITEM_PROBLEM}")
            items.append(_text(item))
    else:
        raise CellError(f"holds {_describe(value)}; {LABEL_PROBLEM}")
    labels = (label.strip() for label in items)
    return tuple(dict.fromkeys(label for label in labels if label))


OUTSIDE = "image path {path} lies outside the manifest's folder"
LINK_OUTSIDE = "image path {path} leads outside the manifest's folder through a symbolic link"


class InsideChecker:
    """Whether image paths stay inside ``root``: by their text, then with symbolic links resolved.

    A path is rejected when its text leaves ``root`` (``../x``, an absolute path elsewhere) or
    when a symbolic link on its way (a folder or the file itself) leads outside. The real path
    of each folder and the names of the links it holds are looked up once per folder: a
    FLAIR-sized manifest (430,000 rows in one folder) costs a dictionary look-up per row.
    """

    def __init__(self, root: Path):
        self.base = os.path.abspath(root)
        self._inside = self.base if self.base.endswith(os.sep) else self.base + os.sep
        real = os.path.realpath(self.base)
        self._real_inside = real if real.endswith(os.sep) else real + os.sep
        self._folders: dict[str, tuple[bool, frozenset[str]]] = {}

    def check(self, relative: str) -> tuple[str | None, str | None]:
        """``(normalized absolute path, None)`` for a path inside, else ``(None, the reason template)``."""
        candidate = os.path.normpath(os.path.join(self.base, relative))
        if not relative or not candidate.startswith(self._inside):
            return None, OUTSIDE
        folder, name = os.path.split(candidate)
        inside, links = self.folder(folder)
        if not inside or (name in links and not self._is_inside(os.path.realpath(candidate))):
            return None, LINK_OUTSIDE
        return candidate, None

    def folder(self, folder: str) -> tuple[bool, frozenset[str]]:
        """Whether ``folder`` (a normalized absolute path) really lies inside, and its links' names."""
        known = self._folders.get(folder)
        if known is None:
            inside = self._is_inside(os.path.realpath(folder))
            links: frozenset[str] = frozenset()
            if inside:
                try:
                    with os.scandir(folder) as entries:
                        links = frozenset(entry.name for entry in entries if entry.is_symlink())
                except OSError:
                    pass  # no such folder: its images are rejected as files not found
            known = self._folders[folder] = (inside, links)
        return known

    def _is_inside(self, real: str) -> bool:
        return (real + os.sep).startswith(self._real_inside)
