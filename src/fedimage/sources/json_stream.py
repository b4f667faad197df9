"""Items of a large JSON array read one at a time, so memory does not grow with the file.

FLAIR's ``labels_and_metadata.json`` is one array of 429,000 objects: ``json.load``
would hold them all as Python objects (about a gigabyte). This reader decodes
one item at a time with the standard library's C decoder, from a bounded buffer.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fedimage.errors import SourceError

READ_BYTES = 1 << 20
_WHITESPACE = " \t\n\r"


def iter_json_array(path: Path, read_bytes: int = READ_BYTES) -> Iterator[Any]:
    """Each item of the JSON array stored in ``path``, in order.

    Strings may hold surrogates (a ``"\\ud800"`` escape, or bytes that are not UTF-8): the
    reader of the items decides what to do with them.
    """
    decoder = json.JSONDecoder()
    try:
        # Bytes that are not UTF-8 are kept as surrogate escapes: only the items holding them are bad.
        handle = open(path, encoding="utf-8", errors="surrogateescape")  # noqa: SIM115 - closed by the `with` below
    except OSError as error:
        raise SourceError(f"cannot read {path}: {error}") from None
    with handle:
        buffer, position, eof = "", 0, False

        def fill() -> bool:
            nonlocal buffer, position, eof
            chunk = "" if eof else _read(handle, read_bytes, path)
            eof = eof or not chunk
            buffer, position = buffer[position:] + chunk, 0
            return bool(chunk)

        def skip_whitespace() -> str:
            nonlocal position
            while True:
                while position < len(buffer) and buffer[position] in _WHITESPACE:
                    position += 1
                if position < len(buffer) or not fill():
                    return buffer[position] if position < len(buffer) else ""

        if skip_whitespace() != "[":
            raise SourceError(f"{path} must hold a JSON list of image objects")
        position += 1
        index = 0
        if skip_whitespace() == "]":
            return
        while True:
            while True:
                try:
                    item, end = decoder.raw_decode(buffer, position)
                    if end < len(buffer) or eof or not fill():  # a number may go on in the next read
                        break
                except json.JSONDecodeError as error:
                    if not fill():
                        raise SourceError(f"{path}: invalid JSON in item {index}: {error.msg}") from None
            position = end
            yield item
            index += 1
            separator = skip_whitespace()
            if separator == "]":
                return
            if separator != ",":
                found = repr(separator) if separator else "the end of the file"
                raise SourceError(f"{path}: expected ',' or ']' after item {index - 1}, found {found}")
            position += 1
            skip_whitespace()


def _read(handle: Any, size: int, path: Path) -> str:
    try:
        return handle.read(size)
    except OSError as error:
        raise SourceError(f"cannot read {path}: {error}") from None
