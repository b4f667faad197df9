"""Privacy: keyed pseudonyms, encryption at rest, and secure aggregation.

- :mod:`~fedimage.privacy.pseudonyms` (core): HMAC-SHA256 pseudonyms for user and image ids.
- :mod:`~fedimage.privacy.keys` (core): where a store's key comes from (key file, bytes, passphrase).
- :mod:`~fedimage.privacy.encryption` (``privacy`` extra): AES-256-GCM per user group. This package
  registers it with the store (:mod:`fedimage.store.sealing`), so that ``fedimage.open(path, key=...)``
  reads encrypted stores; ``cryptography`` is imported only when one is opened or written.
- :mod:`~fedimage.privacy.secagg` (``privacy`` extra): SecAgg+ secure aggregation, imported on demand.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fedimage.privacy.keys import SCHEME, Passphrase, StoreKey
from fedimage.store.sealing import Sealing, register_scheme

#: The pseudonym names, imported on first use (they need pyarrow; a SecAgg+ client stage does not).
_PSEUDONYMS = (
    "KEY_BYTES",
    "Pseudonymizer",
    "generate_key_file",
    "load_key",
    "pseudonymize",
    "pseudonymize_all",
)

if TYPE_CHECKING:
    from fedimage.privacy.pseudonyms import (
        KEY_BYTES,
        Pseudonymizer,
        generate_key_file,
        load_key,
        pseudonymize,
        pseudonymize_all,
    )


def __getattr__(name: str) -> Any:
    if name in _PSEUDONYMS:
        from fedimage.privacy import pseudonyms

        return getattr(pseudonyms, name)
    raise AttributeError(f"module 'fedimage.privacy' has no attribute {name!r}")


def new_store_cipher(key: StoreKey, fingerprint: bytes) -> Sealing:
    """The cipher of a new encrypted store; the same key and ``fingerprint`` give the same bytes.

    Parameters:
        key: 32 bytes, a key file (``fedimage keygen``) or a :class:`~fedimage.privacy.keys.Passphrase`.
        fingerprint: what identifies the store's content (a conversion's settings, a bundle's user).

    Example::

        cipher = new_store_cipher("store.key", b"my conversion")
    """
    from fedimage.privacy.encryption import StoreCipher

    return StoreCipher.for_new_store(key, fingerprint)


def _open_store_cipher(key: Any, header: dict[str, Any], where: str) -> Sealing:
    from fedimage.privacy.encryption import StoreCipher

    return StoreCipher.for_store(key, header, where)


register_scheme(SCHEME, _open_store_cipher)

__all__ = [
    "KEY_BYTES",
    "SCHEME",
    "Passphrase",
    "Pseudonymizer",
    "StoreKey",
    "generate_key_file",
    "load_key",
    "new_store_cipher",
    "pseudonymize",
    "pseudonymize_all",
]
