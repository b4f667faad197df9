"""Portable names for ids that may hold any character: file names, folder names."""

from __future__ import annotations

import hashlib
import string
from urllib.parse import quote

from fedimage.errors import FedimageError

#: Characters kept as they are in a file name; anything else is percent-encoded (UTF-8).
SAFE_CHARACTERS = string.ascii_letters + string.digits + "@+-_.=, "
#: Longer encoded names are cut and given a hash suffix (file systems allow 255 bytes).
MAX_NAME_LENGTH = 200


def _digest(identifier: str) -> str:
    return hashlib.sha256(identifier.encode("utf-8")).hexdigest()[:12]


def safe_name(identifier: str) -> str:
    """``identifier`` unchanged when it is a portable file name, else encoded.

    Characters outside ``[A-Za-z0-9@+-_.=, ]`` are percent-encoded (so ``%`` itself is,
    and the encoding is reversible), as are a leading ``.`` (no hidden files, no ``.``
    or ``..``) and a leading or trailing space or ``.``. Names over
    :data:`MAX_NAME_LENGTH` characters are cut and end in a hash of the id; an empty
    id gets a hash alone.
    """
    name = quote(identifier, safe=SAFE_CHARACTERS)
    if name[:1] in (".", " "):
        name = f"%{ord(name[0]):02X}{name[1:]}"
    if name[-1:] in (".", " "):
        name = f"{name[:-1]}%{ord(name[-1]):02X}"
    if not name:
        return f"~{_digest(identifier)}"
    if len(name) > MAX_NAME_LENGTH:
        name = f"{name[: MAX_NAME_LENGTH - 13]}~{_digest(identifier)}"
    return name


class NameTable:
    """Gives each id of one folder a distinct safe name and remembers the ones that changed.

    Names are compared case-insensitively (``UserA`` and ``usera`` may be one file on
    macOS or Windows); the second of two such ids gets a hash suffix.
    """

    def __init__(self) -> None:
        self._taken: set[str] = set()
        self._ids: set[str] = set()
        #: ``{name: id}`` for every id whose name differs from the id itself.
        self.changed: dict[str, str] = {}

    def assign(self, identifier: str, name: str | None = None) -> str:
        """The name of ``identifier`` (``name``, when given, replaces :func:`safe_name`'s choice)."""
        if identifier in self._ids:
            raise FedimageError(f"id {identifier!r} given twice in one folder")
        name = safe_name(identifier) if name is None else name
        if name.casefold() in self._taken:
            name = f"{name[: MAX_NAME_LENGTH - 13]}~{_digest(identifier)}"
        if name.casefold() in self._taken:
            raise FedimageError(f"ids {identifier!r} and another one both map to the name {name!r}")
        self._ids.add(identifier)
        self._taken.add(name.casefold())
        if name != identifier:
            self.changed[name] = identifier
        return name
