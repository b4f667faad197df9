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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fedimage.errors import OptionError
from fedimage.imaging.rejection import is_fixed_reason
from fedimage.records import Reject, literal
from fedimage.sources.record_table import SourceMetadata

KEY_BYTES = 32
PSEUDONYM_BYTES = 20  # 160 bits, 32 base32 characters
#: What an id is; ``value`` is a kept metadata column's value (the same value in any column, one pseudonym).
KINDS = ("user", "image", "value")
Kind = Literal["user", "image", "value"]
_PSEUDONYM_CHARS = PSEUDONYM_BYTES * 8 // 5
_BASE32_ALPHABET = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz234567", dtype=np.uint8)
SCHEME = "hmac-sha256-v1"
_DOMAIN = b"fedimage-pseudonym-v1"
_FINGERPRINT_DOMAIN = b"fedimage-pseudonym-key-fingerprint-v1"
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


def key_fingerprint(key: bytes) -> str:
    """16 hex digits naming a key (an HMAC of a fixed label): tells keys apart, reveals nothing of one."""
    _check_key(key)
    return hmac.new(key, _FINGERPRINT_DOMAIN, hashlib.sha256).hexdigest()[:16]


def pseudonymize_array(values: pa.Array | pa.ChunkedArray, key: bytes, kind: Kind) -> pa.Array:
    """The pseudonym of every value of an Arrow string column; nulls and empty strings are kept as they are.

    Each distinct value is hashed once (a dictionary of the column, then ``take``), and the
    pseudonyms are built as one Arrow buffer: no Python string per row.
    """
    _check_key(key)
    if kind not in KINDS:
        raise OptionError(f"unknown pseudonym kind {kind!r}; expected one of {', '.join(KINDS)}")
    array = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    if not pa.types.is_string(array.type):
        raise OptionError(f"identifiers to pseudonymize must be strings, got an Arrow {array.type} column")
    encoded = pc.dictionary_encode(array)
    distinct = encoded.dictionary
    prefix = b"\0".join((_DOMAIN, kind.encode("ascii"), b""))
    digests = _truncated_hmacs(key, prefix, distinct.to_pylist(), PSEUDONYM_BYTES)
    text = _base32_lower(np.frombuffer(digests, dtype=np.uint8))
    offsets = np.arange(len(distinct) + 1, dtype=np.int32) * _PSEUDONYM_CHARS
    pseudonyms = pa.Array.from_buffers(
        pa.string(), len(distinct), [None, pa.py_buffer(offsets), pa.py_buffer(text)]
    )
    pseudonyms = pc.if_else(pc.equal(distinct, ""), distinct, pseudonyms)
    _check_unique(distinct, pseudonyms, kind)
    return pseudonyms.take(encoded.indices)


def _base32_lower(data: np.ndarray) -> bytes:
    """RFC 4648 base32 (lower case) of bytes whose length is a multiple of 5, vectorized.

    Equal to ``base64.b32encode(data).lower()``, which is pure Python and 1 s per 400k pseudonyms.
    """
    b0, b1, b2, b3, b4 = data.reshape(-1, 5).T
    fives = np.stack(
        [
            b0 >> 3,
            ((b0 & 7) << 2) | (b1 >> 6),
            (b1 >> 1) & 31,
            ((b1 & 1) << 4) | (b2 >> 4),
            ((b2 & 15) << 1) | (b3 >> 7),
            (b3 >> 2) & 31,
            ((b3 & 3) << 3) | (b4 >> 5),
            b4 & 31,
        ],
        axis=1,
    )
    return _BASE32_ALPHABET[fives].tobytes()


def _truncated_hmacs(key: bytes, prefix: bytes, messages: list[str], size: int) -> bytes:
    """``HMAC-SHA256(key, prefix + message)[:size]`` of every message, concatenated.

    RFC 2104's construction as :mod:`hmac` builds it, with the keyed inner and outer states
    (and the prefix) hashed once instead of once per message: twice as fast over many short
    ids. The tests check it against :func:`hmac.digest`.
    """
    block = hashlib.sha256().block_size
    padded = (key if len(key) <= block else hashlib.sha256(key).digest()).ljust(block, b"\0")
    inner = hashlib.sha256(bytes(byte ^ 0x36 for byte in padded) + prefix)
    outer = hashlib.sha256(bytes(byte ^ 0x5C for byte in padded))
    inner_copy, outer_copy = inner.copy, outer.copy
    parts = []
    for message in messages:
        state = inner_copy()
        state.update(message.encode("utf-8", "surrogatepass"))
        result = outer_copy()
        result.update(state.digest())
        parts.append(result.digest()[:size])
    return b"".join(parts)


def _check_unique(distinct: pa.Array, pseudonyms: pa.Array, kind: str) -> None:
    """Raise if two distinct ids got one pseudonym (160 bits: never seen, but never silently merged)."""
    if pc.count_distinct(pseudonyms).as_py() == len(distinct):
        return
    seen: dict[str, str] = {}
    for identifier, pseudonym in zip(distinct.to_pylist(), pseudonyms.to_pylist(), strict=True):
        other = seen.setdefault(pseudonym, identifier)
        if other != identifier:
            raise OptionError(f"{kind} ids {other!r} and {identifier!r} have the same pseudonym {pseudonym}")


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

    def array(self, values: pa.Array | pa.ChunkedArray, kind: Kind) -> pa.Array:
        return pseudonymize_array(values, self._key, kind)

    @property
    def fingerprint(self) -> str:
        return key_fingerprint(self._key)

    def describe(self, image_ids: bool) -> dict[str, object]:
        """What a store or a run records about its pseudonyms: scheme, what was replaced, which key."""
        return {
            "scheme": SCHEME,
            "user_ids": True,
            "image_ids": image_ids,
            "key_fingerprint": self.fingerprint,
        }

    def __repr__(self) -> str:
        return "<Pseudonymizer (HMAC-SHA256, key hidden)>"


@dataclass(frozen=True)
class _Replaced:
    """One id column before and after: its distinct originals and their pseudonyms (in the same order)."""

    originals: pa.Array
    pseudonyms: pa.Array

    @classmethod
    def of(cls, before: pa.ChunkedArray, after: pa.Array) -> _Replaced:
        pairs = pa.table({"o": before.combine_chunks(), "p": after}).group_by(["o", "p"]).aggregate([])
        return cls(pairs.column("o").combine_chunks(), pairs.column("p").combine_chunks())

    def originals_of(self, pseudonyms: Sequence[str | None]) -> list[str | None]:
        """For each value, its original id when it is one of the pseudonyms made here, else None."""
        index = pc.index_in(pa.array(pseudonyms, pa.string()), value_set=self.pseudonyms)
        return self.originals.take(index).to_pylist()


class PseudonymizedSource:
    """A source's record table with user ids (and optionally image ids) replaced by pseudonyms.

    ``metadata`` is what the plan sees. :meth:`scrub` makes the rejects report pseudonymous
    as well, by whole fields, never by searching text: every reject gets pseudonymous ids and
    loses its ``path`` (its reason shows ``[path withheld]`` where the path was); an origin that
    is the image id (a folder image's relative path) becomes what the report shows as the image
    id; other origins (``file line N``) stay. A reason's template and its ``detail`` (labels,
    column names) are kept as they are. A decoder's free-text reason (stage ``image``) that
    names the input's path, file name or an original id keeps only its kind.
    """

    def __init__(self, metadata: SourceMetadata, pseudonymizer: Pseudonymizer, image_ids: bool):
        self.pseudonymizer = pseudonymizer
        self.image_ids = image_ids
        table = metadata.table
        self._replaced: dict[str, _Replaced] = {}
        columns: list[tuple[str, Kind]] = [("user_id", "user")]
        if image_ids:
            columns.append(("image_id", "image"))
        for column, kind in columns:
            before = table.column(column)
            after = pseudonymizer.array(before, kind)
            self._replaced[kind] = _Replaced.of(before, after)
            table = table.set_column(table.schema.get_field_index(column), column, after)
        self.metadata = SourceMetadata(table, self.scrub(metadata.rejects))

    def scrub(self, rejects: Sequence[Reject]) -> list[Reject]:
        """The rejects with pseudonymous ids and no source path (see the class docstring).

        Rejects scrubbed already (``pseudonymous``) are kept as they are.
        """
        fresh = [reject for reject in rejects if not reject.pseudonymous]
        users = iter(self._ids(fresh, "user", "user_id"))
        images = iter(self._ids(fresh, "image", "image_id")) if self.image_ids else None
        scrubbed = []
        for reject in rejects:
            if reject.pseudonymous:
                scrubbed.append(reject)
                continue
            user_original, user_id = next(users)
            if images is not None:
                image_original, image_id = next(images)
            else:
                image_original, image_id = reject.image_id, reject.image_id
            origin, detail = reject.origin, reject.detail
            if origin and origin == image_original:  # a folder image's relative path
                origin = image_id or _WITHHELD_ORIGIN
            if detail and detail == image_original:  # a duplicate's first origin, that same path
                detail = image_id or _WITHHELD_ORIGIN
            reason = reject.reason
            if reject.stage == "image":
                reason = _withheld_free_text(reason, reject.path, image_original, user_original)
            scrubbed.append(
                replace(
                    reject,
                    origin=origin,
                    reason=reason,
                    detail=detail,
                    path=None,
                    user_id=user_id,
                    image_id=image_id,
                    pseudonymous=True,
                )
            )
        return scrubbed

    def _ids(self, rejects: Sequence[Reject], kind: Kind, field: str) -> list[tuple[str | None, str | None]]:
        """(original, pseudonym) of each reject's id, which may hold either (rejected before or after)."""
        values = [getattr(reject, field) for reject in rejects]
        replaced = self._replaced.get(kind)
        storable = [value if value is None or _is_utf8(value) else None for value in values]
        known = replaced.originals_of(storable) if replaced is not None and values else [None] * len(values)
        pairs: list[tuple[str | None, str | None]] = []
        for value, original in zip(values, known, strict=True):
            if not value:
                pairs.append((None, value))
            elif original is not None:
                pairs.append((original, value))
            else:
                pairs.append((value, getattr(self.pseudonymizer, kind)(value)))
        return pairs


_WITHHELD_ORIGIN = "[origin withheld]"


def _withheld_free_text(reason: str, path: str | None, *ids: str | None) -> str:
    """A decoder's reason, or only its kind when it names the path, the file name or an id.

    Such a reason is text the decoder wrote, not a template: it is searched for the values
    whole (the path, its file name and stem, each id), and withheld rather than rewritten.
    """
    if is_fixed_reason(reason):  # a fixed sentence quotes nothing of the input
        return reason
    names = [path, *ids]
    if path:
        names += [os.path.basename(path), os.path.splitext(os.path.basename(path))[0]]

    def names_one(text: str) -> bool:
        return any(name and (name in text or repr(name)[1:-1] in text) for name in names)

    if not names_one(reason):
        return reason
    kind = reason.split(": ", 1)[0].split(" (", 1)[0]
    return (literal(kind) if not names_one(kind) else "image cannot be read") + _WITHHELD_DETAILS


_WITHHELD_DETAILS = " (details withheld: they name the input)"


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_key(key: bytes) -> None:
    if not isinstance(key, bytes | bytearray) or len(key) != KEY_BYTES:
        size = len(key) if isinstance(key, bytes | bytearray) else type(key).__name__
        raise OptionError(f"a pseudonym key must be {KEY_BYTES} bytes, got {size}")
