"""Encryption at rest: AES-256-GCM per user group under HKDF-derived keys (needs the ``privacy`` extra).

A store's master key is a 32-byte key file or a passphrase stretched by scrypt. From it,
HKDF-SHA256 derives, per user, a 256-bit AES key and a 256-bit key for the synthetic nonce,
bound (through HKDF's ``info``) to the scheme version, the store id, the split and the user.
Each sealed object is ``nonce || AES-256-GCM(plaintext, associated data)`` where the associated
data repeats that binding, and the 96-bit nonce is ``HMAC-SHA256(nonce key, aad || plaintext)``:
deterministic (the same inputs and key give a byte-identical store) and different for every
different plaintext under one key, so a (key, nonce) pair never encrypts two plaintexts
(a synthetic-IV construction). The store id is derived from the master key and the
conversion's settings, the scrypt salt from the settings; see THREAT_MODEL.md.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import struct
from collections.abc import Mapping
from typing import Any

import numpy as np

from fedimage.errors import OptionError, StoreError
from fedimage.extras import require
from fedimage.privacy import keys
from fedimage.privacy.encryption_container import pack_arrays, unpack_arrays
from fedimage.privacy.keys import SCHEME, Passphrase, ScryptParams, StoreKey, resolve_key
from fedimage.privacy.pseudonyms import KEY_BYTES
from fedimage.store.sealing import SEALED, SealedBlob

require("cryptography", "encryption at rest")  # a clear error before the imports below

from cryptography.exceptions import InvalidTag  # noqa: E402
from cryptography.hazmat.primitives import hashes  # noqa: E402
from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: E402
from cryptography.hazmat.primitives.kdf.hkdf import HKDF  # noqa: E402
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt  # noqa: E402

__all__ = ["SCHEME", "SEALED", "StoreCipher"]
NONCE_BYTES = 12
TAG_BYTES = 16
STORE_ID_BYTES = 16
SALT_BYTES = 16
_DOMAIN = b"fedimage-encryption-v1"
_HEADER_KEYS = {"key-file": {"scheme", "key", "store_id", "key_check"}}
_HEADER_KEYS["passphrase"] = _HEADER_KEYS["key-file"] | {"kdf"}


def _fields(*parts: bytes | str) -> bytes:
    """Length-prefixed concatenation: no two different field lists give the same bytes."""
    out = [_DOMAIN]
    for part in parts:
        data = part.encode("utf-8", "surrogatepass") if isinstance(part, str) else part
        out += [struct.pack(">I", len(data)), data]
    return b"".join(out)


def _mac(key: bytes, *parts: bytes | str) -> bytes:
    return hmac.new(key, _fields(*parts), hashlib.sha256).digest()


@functools.lru_cache(maxsize=8)
def _scrypt(secret: bytes, salt: bytes, params: ScryptParams) -> bytes:
    """The master key of a passphrase (cached: a process that reopens a store pays scrypt once)."""
    return Scrypt(salt=salt, length=KEY_BYTES, n=params.n, r=params.r, p=params.p).derive(secret)


class StoreCipher:
    """The keys of one encrypted store: seals and opens user groups and the store's metadata.

    Make one with :meth:`for_new_store` (conversion, bundles) or :meth:`for_store` (reading);
    ``header`` is the public description kept in the clear manifest. The ``repr`` hides keys.
    """

    def __init__(self, master: bytes, header: dict[str, Any]):
        self._master = master
        self.header = header
        self.store_id = bytes.fromhex(header["store_id"])

    # -- construction -----------------------------------------------------------------------
    @classmethod
    def for_new_store(cls, key: StoreKey, fingerprint: bytes) -> StoreCipher:
        """The cipher of a new store; ``fingerprint`` identifies the conversion (its settings).

        Everything is derived from the key and the fingerprint, so the same inputs, options,
        seed and key give a byte-identical store.
        """
        material = resolve_key(key)
        header: dict[str, Any] = {"scheme": SCHEME}
        if isinstance(material, Passphrase):
            params = keys.NEW_STORE_SCRYPT
            salt = hashlib.sha256(_fields("scrypt-salt", fingerprint)).digest()[:SALT_BYTES]
            header["key"] = "passphrase"
            header["kdf"] = {
                "name": "scrypt",
                "n": params.n,
                "r": params.r,
                "p": params.p,
                "salt": salt.hex(),
            }
            master = _scrypt(material.secret, salt, params)
        else:
            header["key"] = "key-file"
            master = material
        store_id = _mac(master, "store-id", fingerprint)[:STORE_ID_BYTES]
        header["store_id"] = store_id.hex()
        header["key_check"] = _mac(master, "key-check", store_id).hex()[:32]
        return cls(master, header)

    @classmethod
    def for_store(cls, key: StoreKey, header: Any, where: str) -> StoreCipher:
        """The cipher of an existing store from its public ``header``; a wrong key is a clear error."""
        header = _checked_header(header, where)
        material = resolve_key(key)
        if header["key"] == "passphrase":
            if not isinstance(material, Passphrase):
                raise StoreError(
                    f"{where} is encrypted under a passphrase; open it with `key=Passphrase(...)`"
                )
            kdf = header["kdf"]
            master = _scrypt(material.secret, bytes.fromhex(kdf["salt"]), _scrypt_params(kdf, where))
        else:
            if isinstance(material, Passphrase):
                raise StoreError(f"{where} is encrypted under a key file; open it with `key=KEYFILE`")
            master = material
        cipher = cls(master, header)
        expected = _mac(master, "key-check", cipher.store_id).hex()[:32]
        if not hmac.compare_digest(expected, header["key_check"]):
            raise StoreError(f"{where}: wrong key (this key or passphrase does not open the store)")
        return cipher

    def __repr__(self) -> str:
        return f"<StoreCipher {SCHEME} store {self.header['store_id']} (key hidden)>"

    # -- users -----------------------------------------------------------------------------------
    def _user_keys(self, split: str, user_id: str) -> tuple[bytes, bytes]:
        okm = HKDF(
            algorithm=hashes.SHA256(),
            length=2 * KEY_BYTES,
            salt=None,
            info=_fields("user-keys", self.store_id, split, user_id),
        ).derive(self._master)
        return okm[:KEY_BYTES], okm[KEY_BYTES:]

    def _user_aad(self, split: str, user_id: str) -> bytes:
        return _fields("user", SCHEME, self.store_id, split, user_id)

    def seal_user(self, split: str, user_id: str, arrays: Mapping[str, np.ndarray]) -> SealedBlob:
        """One user's datasets packed and sealed into one blob."""
        key, nonce_key = self._user_keys(split, user_id)
        sealed = _seal(key, nonce_key, pack_arrays(arrays), self._user_aad(split, user_id))
        return SealedBlob(np.frombuffer(sealed, dtype=np.uint8), sealed[:NONCE_BYTES].hex())

    def open_user(
        self, split: str, user_id: str, blob: bytes, nonce: str | None = None
    ) -> dict[str, np.ndarray]:
        """The datasets of a sealed user; any change to the blob, its place or the key is a StoreError.

        ``nonce`` (the manifest's record of it) pins the blob to this version of the store.
        """
        where = f"user {user_id!r} of split {split!r}"
        if nonce is not None and blob[:NONCE_BYTES].hex() != nonce:
            raise StoreError(f"{where}: the sealed data is not the one this store's manifest records")
        key, _ = self._user_keys(split, user_id)
        plaintext = _open(key, blob, self._user_aad(split, user_id), where)
        return unpack_arrays(plaintext, where)

    # -- metadata --------------------------------------------------------------------------------
    def _metadata_keys(self) -> tuple[bytes, bytes]:
        okm = HKDF(
            algorithm=hashes.SHA256(),
            length=2 * KEY_BYTES,
            salt=None,
            info=_fields("metadata-keys", self.store_id),
        ).derive(self._master)
        return okm[:KEY_BYTES], okm[KEY_BYTES:]

    def seal_metadata(self, entries: Mapping[str, str]) -> np.ndarray:
        """The store's ``/metadata`` JSON entries (``{name: text}``) sealed as one uint8 array."""
        key, nonce_key = self._metadata_keys()
        plaintext = json.dumps(dict(entries), ensure_ascii=False).encode("utf-8")
        aad = _fields("metadata", SCHEME, self.store_id)
        return np.frombuffer(_seal(key, nonce_key, plaintext, aad), dtype=np.uint8)

    def open_metadata(self, blob: bytes, where: str) -> dict[str, str]:
        key, _ = self._metadata_keys()
        plaintext = _open(key, blob, _fields("metadata", SCHEME, self.store_id), f"{where} metadata")
        entries = json.loads(plaintext)
        if not isinstance(entries, dict) or not all(isinstance(v, str) for v in entries.values()):
            raise StoreError(f"{where}: the sealed metadata is not a set of JSON entries")
        return entries


def _seal(key: bytes, nonce_key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    nonce = hmac.new(nonce_key, _fields(aad, plaintext), hashlib.sha256).digest()[:NONCE_BYTES]
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def _open(key: bytes, blob: bytes, aad: bytes, where: str) -> bytes:
    if len(blob) < NONCE_BYTES + TAG_BYTES:
        raise StoreError(f"{where}: the sealed data is truncated ({len(blob)} bytes)")
    try:
        return AESGCM(key).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad)
    except InvalidTag:
        raise StoreError(
            f"{where}: authentication failed: the sealed data was altered, or belongs to another "
            "user or store"
        ) from None


def _checked_header(header: Any, where: str) -> dict[str, Any]:
    """The public encryption header, checked field by field (anything unexpected is refused)."""
    if not isinstance(header, dict) or header.get("scheme") != SCHEME:
        scheme = header.get("scheme") if isinstance(header, dict) else header
        raise StoreError(f"{where}: unknown encryption scheme {scheme!r}; this fedimage reads {SCHEME}")
    expected = _HEADER_KEYS.get(header.get("key"))
    if expected is None or set(header) != expected:
        raise StoreError(f"{where}: malformed encryption header")
    try:
        if len(bytes.fromhex(header["store_id"])) != STORE_ID_BYTES or len(header["key_check"]) != 32:
            raise ValueError
        bytes.fromhex(header["key_check"])
    except (TypeError, ValueError):
        raise StoreError(f"{where}: malformed store id or key check in the encryption header") from None
    return header


def _scrypt_params(kdf: Any, where: str) -> ScryptParams:
    try:
        if set(kdf) != {"name", "n", "r", "p", "salt"} or kdf["name"] != "scrypt":
            raise ValueError
        if len(bytes.fromhex(kdf["salt"])) != SALT_BYTES:
            raise ValueError
        return ScryptParams(kdf["n"], kdf["r"], kdf["p"])
    except (TypeError, ValueError, OptionError):
        raise StoreError(f"{where}: malformed scrypt parameters in the encryption header") from None
