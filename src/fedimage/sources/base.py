"""What every input source provides, and the value parsing they share."""

from __future__ import annotations

import math
import os
from abc import ABC
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

from fedimage.records import ImageRecord, Reject
from fedimage.sources.record_table import SourceMetadata, metadata_from_records, records_of


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
    def has_users(self) -> bool:
        """False when the collection has no notion of user (users must be assigned)."""
        return True

    @property
    def default_taxonomy(self) -> Path | None:
        """A taxonomy file that ships with the collection, if any."""
        return None

    def records(self) -> Iterator[ImageRecord | Reject]:
        """Every input image (then every reject), in a deterministic order.

        Row-based sources (folders, manifests) override this and get :meth:`metadata` from it;
        columnar sources (FLAIR, Hugging Face) override :meth:`metadata` and get this from it.
        """
        if type(self).metadata is Source.metadata:
            raise TypeError(f"{type(self).__name__} must override records() or metadata()")
        metadata = self.metadata()
        yield from records_of(metadata.table)
        yield from metadata.rejects

    def metadata(self) -> SourceMetadata:
        """Every input as one table row (or a reject). Columnar sources override this."""
        return metadata_from_records(self.records())

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


def clean_text(value: Any) -> str:
    """A scalar cell as stripped text; missing values (None, NaN) become ''."""
    if value is None:
        return ""
    if isinstance(value, float) and math.isnan(value):
        return ""
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    return str(value).strip()


def parse_label_list(value: Any, delimiter: str) -> tuple[str, ...]:
    """Labels from a list cell or a delimiter-joined string, stripped, empty ones dropped.

    Duplicates are removed keeping the first occurrence.
    """
    if value is None:
        items: list[Any] = []
    elif isinstance(value, (list, tuple)) or hasattr(value, "tolist"):
        items = list(value.tolist() if hasattr(value, "tolist") else value)
    else:
        text = clean_text(value)
        items = text.split(delimiter) if text else []
    labels = (clean_text(item) for item in items)
    return tuple(dict.fromkeys(label for label in labels if label))


def resolve_inside(root: Path, relative: str) -> str | None:
    """``root / relative`` as a normalized absolute path when it stays inside ``root`` (lexically), else None.

    Absolute paths are accepted only when they point inside ``root``. String operations
    only: a FLAIR-sized manifest calls this 430,000 times.
    """
    if not relative:
        return None
    base = os.path.abspath(root)
    candidate = os.path.normpath(os.path.join(base, relative))
    inside = base if base.endswith(os.sep) else base + os.sep
    if not candidate.startswith(inside):
        return None
    return candidate
