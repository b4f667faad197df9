"""Keyed pseudonyms for user and image ids (HMAC-SHA256), and the key files they use.

The same key always gives the same pseudonym for an id; without the key a pseudonym cannot be
linked to its id, and two keys give unlinkable pseudonyms. No mapping is ever stored: keep the
key to pseudonymize new data consistently, destroy it to make the pseudonyms permanent.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import secrets
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from fedimage.errors import OptionError

KEY_BYTES = 32
PSEUDONYM_BYTES = 20  # 160 bits, 32 base32 characters
KINDS = ("user", "image")
Kind = Literal["user", "image"]
_DOMAIN = b"fedimage-pseudonym-v1"
_KEY_FILE_MODE = 0o600


def generate_key_file(path: str | os.PathLike[str], *, raw: bool = False) -> Path:
    """Write a new random 256-bit key to ``path`` (hex text, or 32 raw bytes), readable by its owner only.

    The key comes from the operating system's CSPRNG and deliberately takes no seed: a key that
    can be re-derived from a seed protects nothing. An existing file is never overwritten.
    """
    path = Path(path)
    key = secrets.token_bytes(KEY_BYTES)
    data = key if raw else key.hex().encode("ascii") + b"\n"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _KEY_FILE_MODE)
    except FileExistsError:
        raise OptionError(f"key file {path} already exists; refusing to overwrite a key") from None
    except OSError as error:
        raise OptionError(f"cannot create key file {path}: {error.strerror}") from None
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(handle.fileno(), _KEY_FILE_MODE)  # the umask may have narrowed it further; set it exactly
        handle.write(data)
    return path


def load_key(path: str | os.PathLike[str]) -> bytes:
    """Read a key file: 32 raw bytes or 64 hex digits; it must not be accessible to group or others."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except FileNotFoundError:
        raise OptionError(
            f"key file {path} does not exist (make one with `fedimage keygen {path}`)"
        ) from None
    except OSError as error:
        raise OptionError(f"cannot read key file {path}: {error.strerror}") from None
    if mode & 0o077:
        raise OptionError(
            f"key file {path} is accessible by group or others (mode {stat.S_IMODE(mode):04o}); "
            f"run `chmod 600 {path}`"
        )
    if len(data) == KEY_BYTES:
        return data
    text = data.strip()
    if len(text) == 2 * KEY_BYTES:
        with contextlib.suppress(UnicodeDecodeError, ValueError):  # not hex: the error below
            return bytes.fromhex(text.decode("ascii"))
    raise OptionError(
        f"key file {path} holds {len(data)} bytes;"
        f" expected {KEY_BYTES} raw bytes or {2 * KEY_BYTES} hex digits"
    )


def pseudonymize(identifier: str, key: bytes, kind: Kind) -> str:
    """The pseudonym of ``identifier``: HMAC-SHA256 under ``key``, separated by ``kind``, 160 bits in base32.

    The result is 32 characters from ``a-z2-7``: safe as an HDF5 group name and as a file name.
    A user id and an image id that are the same string get unrelated pseudonyms.
    """
    _check_key(key)
    if kind not in KINDS:
        raise OptionError(f"unknown pseudonym kind {kind!r}; expected one of {', '.join(KINDS)}")
    if not isinstance(identifier, str):
        raise OptionError(f"identifiers to pseudonymize must be strings, got {type(identifier).__name__}")
    message = b"\0".join((_DOMAIN, kind.encode("ascii"), identifier.encode("utf-8", "surrogatepass")))
    digest = hmac.new(key, message, hashlib.sha256).digest()[:PSEUDONYM_BYTES]
    return base64.b32encode(digest).decode("ascii").lower()


def pseudonymize_all(identifiers: Iterable[str], key: bytes, kind: Kind) -> dict[str, str]:
    """Pseudonyms of many ids, ``{id: pseudonym}``; raises if two ids ever collide (160 bits: never seen)."""
    mapping: dict[str, str] = {}
    seen: dict[str, str] = {}
    for identifier in identifiers:
        pseudonym = pseudonymize(identifier, key, kind)
        other = seen.setdefault(pseudonym, identifier)
        if other != identifier:
            raise OptionError(f"{kind} ids {other!r} and {identifier!r} have the same pseudonym {pseudonym}")
        mapping[identifier] = pseudonym
    return mapping


class Pseudonymizer:
    """A loaded key with one method per id kind; its ``repr`` never shows the key."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        _check_key(key)
        self._key = bytes(key)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Pseudonymizer:
        return cls(load_key(path))

    def user(self, user_id: str) -> str:
        return pseudonymize(user_id, self._key, "user")

    def image(self, image_id: str) -> str:
        return pseudonymize(image_id, self._key, "image")

    def __repr__(self) -> str:
        return "<Pseudonymizer (HMAC-SHA256, key hidden)>"


def _check_key(key: bytes) -> None:
    if not isinstance(key, bytes | bytearray) or len(key) != KEY_BYTES:
        size = len(key) if isinstance(key, bytes | bytearray) else type(key).__name__
        raise OptionError(f"a pseudonym key must be {KEY_BYTES} bytes, got {size}")
