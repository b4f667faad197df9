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
from typing import Any


@dataclass(frozen=True, slots=True)
class ImageRecord:
    """One input image as a source describes it, before any pixel is read.

    ``path`` is the image file; ``origin`` says where the record came from
    (``"manifest.csv row 12"``, a folder path) for messages and the rejects report.
    ``split`` is the split the source assigns (None when it has no split information).
    ``metadata`` holds the values of the metadata columns a conversion keeps, in their order
    (see :mod:`fedimage.store.metadata`).
    """

    path: str
    image_id: str
    user_id: str
    labels: tuple[str, ...] = ()
    fine_labels: tuple[str, ...] = ()
    split: str | None = None
    origin: str = ""
    row: int = -1
    metadata: tuple[Any, ...] = ()


@dataclass(frozen=True, slots=True)
class Reject:
    """An input that was not written to the store, and why.

    ``reason`` is a template: ``{path}``, ``{image_id}`` and ``{user_id}`` stand for this reject's
    own fields, ``{detail}`` for ``detail`` (one more value the reason names that identifies
    nobody: a label, a column name, another row's origin). Each is shown quoted (``{detail!s}``:
    as it is); ``{{`` and ``}}`` are literal braces (:func:`literal`). Identifying values never
    go into the template's own text, so a pseudonymized report replaces whole fields instead of
    searching text: :meth:`text` shows a field that was taken out (``None``) as ``[path withheld]``.
    ``pseudonymous`` marks a reject whose ids are pseudonyms already.
    """

    origin: str
    reason: str
    image_id: str | None = None
    path: str | None = None
    user_id: str | None = None
    stage: str = "read"
    detail: str | None = None
    pseudonymous: bool = False

    @property
    def text(self) -> str:
        """The reason with its placeholders filled in."""
        return _PLACEHOLDER.sub(self._fill, self.reason)

    def _fill(self, match: re.Match[str]) -> str:
        if match[1] is None:
            return match[0][0]  # an escaped brace
        value = getattr(self, match[1])
        if value is None:
            return f"[{match[1].replace('_', ' ')} withheld]"
        return value if match[2] else repr(value)

    def to_json(self) -> dict[str, str]:
        """The rejects-report row for this input (None fields omitted); always valid UTF-8 text."""
        row = {
            "origin": self.origin,
            "stage": self.stage,
            "reason": self.text,
            "image_id": self.image_id,
            "path": self.path,
            "user_id": self.user_id,
        }
        return {key: _printable(value) for key, value in row.items() if value is not None}


_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{(path|image_id|user_id|detail)(!s)?\}")


def literal(text: str) -> str:
    """``text`` as part of a reason template: its braces escaped, so that it is shown as it is."""
    return text.replace("{", "{{").replace("}", "}}")


def _printable(text: str) -> str:
    """``text``, with what UTF-8 cannot hold (lone surrogates, undecodable file-name bytes) escaped."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


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
    reason = _PLACEHOLDER.sub(lambda match: match[0][0] if match[1] is None else "…", reason)
    reason = reason.split(": ", 1)[0].split(" (", 1)[0]
    reason = re.sub(r"'[^']*'|\"[^\"]*\"", "…", reason)
    return re.sub(r"\d[\d,]*", "N", reason)
