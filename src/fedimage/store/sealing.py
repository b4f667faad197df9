"""Sealed (encrypted) stores, as the file format sees them: a protocol the writer and reader call.

The store never imports a cipher. An encrypted store's ``/metadata/manifest`` is public and names
its scheme (``{"encryption": {"scheme": ..., ...}}``); each user group is one dataset,
:data:`SEALED`, and ``/metadata`` holds the rest of the metadata sealed under the same name.
A scheme (:mod:`fedimage.privacy.encryption` implements one) registers an opener with
:func:`register_scheme`; :func:`open_sealing` finds it from the header when a store is read.

    sealing = open_sealing(key, store_manifest["encryption"], "store.h5")
    arrays = sealing.open_user("train", "alice", blob, nonce)
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import h5py
import numpy as np

from fedimage.errors import StoreError
from fedimage.store import schema
from fedimage.store.checksum import array_line, group_checksum

#: The one dataset of a sealed user group, and the ``/metadata`` entry holding the sealed metadata.
SEALED = "sealed"


@dataclass(frozen=True)
class SealedBlob:
    """A sealed user group: the bytes to store and the nonce the manifest records to pin them."""

    data: np.ndarray  # uint8 [nonce + ciphertext + tag]
    nonce: str  # hex


class Sealing(Protocol):
    """What the writer and reader need of a store's cipher."""

    #: The public description of the scheme and key, kept in the clear manifest.
    header: dict[str, Any]

    def seal_user(self, split: str, user_id: str, arrays: Mapping[str, np.ndarray]) -> SealedBlob:
        """One user's datasets packed and sealed into one blob."""
        ...

    def open_user(
        self, split: str, user_id: str, blob: bytes, nonce: str | None = None
    ) -> dict[str, np.ndarray]:
        """The datasets of a sealed user; any tampering is a StoreError."""
        ...

    def seal_metadata(self, entries: Mapping[str, str]) -> np.ndarray:
        """``/metadata``'s JSON entries sealed as one uint8 array."""
        ...

    def open_metadata(self, blob: bytes, where: str) -> dict[str, str]:
        """The sealed ``/metadata`` entries."""
        ...


#: A key that a scheme accepts (for fedimage's: 32 bytes, a key file path, or a
#: :class:`~fedimage.privacy.keys.Passphrase`); the scheme checks it.
StoreKey = Any

#: ``opener(key, header, where)``: the sealing of an existing store, or a StoreError (wrong key...).
SealingOpener = Callable[[Any, dict[str, Any], str], Sealing]
_SCHEMES: dict[str, SealingOpener] = {}
#: The package that registers each of fedimage's own schemes, imported when a store sealed under one is
#: first opened (``import fedimage`` imports nothing eagerly, so nothing may have registered it yet).
SCHEME_PROVIDERS = {"fedimage-aes256gcm-hkdf-siv-v1": "fedimage.privacy"}


def register_scheme(scheme: str, opener: SealingOpener) -> None:
    """Let stores sealed under ``scheme`` be opened by ``opener`` (done by :mod:`fedimage.privacy`)."""
    _SCHEMES[scheme] = opener


def open_sealing(key: Any, header: Any, where: str) -> Sealing:
    """The sealing of the store ``where`` described by its public ``header``, opened with ``key``."""
    scheme = header.get("scheme") if isinstance(header, dict) else None
    if isinstance(scheme, str) and scheme not in _SCHEMES and scheme in SCHEME_PROVIDERS:
        importlib.import_module(SCHEME_PROVIDERS[scheme])  # registers it (the `privacy` extra)
    opener = _SCHEMES.get(scheme) if isinstance(scheme, str) else None
    if opener is None:
        known = ", ".join(sorted(_SCHEMES)) or "none"
        raise StoreError(f"{where}: unknown encryption scheme {scheme!r} (this fedimage reads: {known})")
    return opener(key, header, where)


def public_manifest(header: dict[str, Any]) -> dict[str, Any]:
    """The manifest a sealed store shows without its key: the format and how to unlock it."""
    return {"format": schema.FORMAT_NAME, "format_version": schema.FORMAT_VERSION, "encryption": header}


def seal_metadata_entries(sealing: Sealing, texts: Mapping[str, str]) -> tuple[dict[str, str], np.ndarray]:
    """``/metadata``'s JSON entries of a sealed store: the public manifest, and the rest sealed."""
    public = {schema.MANIFEST: json.dumps(public_manifest(sealing.header), ensure_ascii=False)}
    return public, sealing.seal_metadata(texts)


def write_sealed_group(
    group: h5py.Group,
    sealing: Sealing,
    split: str,
    user_id: str,
    arrays: Mapping[str, np.ndarray],
    write: Callable[[h5py.Group, str, np.ndarray], None],
) -> tuple[str, str]:
    """Write one user's datasets as the group's single sealed dataset; returns (checksum, nonce).

    The checksum is the usual group checksum, here of the sealed dataset (so it reveals
    nothing about the plaintext); the nonce pins this blob in the sealed manifest.
    """
    sealed = sealing.seal_user(split, user_id, arrays)
    write(group, SEALED, sealed.data)
    return group_checksum([array_line(SEALED, sealed.data)]), sealed.nonce
