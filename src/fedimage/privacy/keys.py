"""Where the master key of an encrypted store comes from: a key file, raw bytes, or a passphrase.

This module needs no optional package; the cipher itself lives in
:mod:`fedimage.privacy.encryption` (the ``privacy`` extra).

A *store key* is any of:

- ``bytes``: the 32-byte master key itself;
- a ``str`` or ``os.PathLike``: a key file, as made by ``fedimage keygen`` (32 raw bytes or 64 hex
  digits, mode 0600; see :func:`fedimage.privacy.pseudonyms.load_key`);
- a :class:`Passphrase`: stretched with scrypt under the store's salt.
"""

from __future__ import annotations

import os
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias

from fedimage.errors import OptionError
from fedimage.privacy.pseudonyms import KEY_BYTES, load_key


class Passphrase:
    """A passphrase (NFC-normalized UTF-8) that unlocks a store through scrypt; its ``repr`` hides it."""

    __slots__ = ("_secret",)

    def __init__(self, passphrase: str):
        if not isinstance(passphrase, str) or not passphrase:
            raise OptionError("a passphrase must be a non-empty string")
        self._secret = unicodedata.normalize("NFC", passphrase).encode("utf-8")

    @classmethod
    def from_env(cls, variable: str) -> Passphrase:
        """The passphrase held by the environment variable ``variable`` (never by a command-line argument)."""
        value = os.environ.get(variable)
        if value is None:
            raise OptionError(f"environment variable {variable} (the passphrase) is not set")
        if not value:
            raise OptionError(f"environment variable {variable} (the passphrase) is empty")
        return cls(value)

    @property
    def secret(self) -> bytes:
        return self._secret

    def __repr__(self) -> str:
        return "<Passphrase (hidden)>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Passphrase) and other._secret == self._secret

    def __hash__(self) -> int:
        return hash((Passphrase, self._secret))


#: The name of fedimage's encryption scheme (:mod:`fedimage.privacy.encryption`).
SCHEME = "fedimage-aes256gcm-hkdf-siv-v1"

StoreKey: TypeAlias = bytes | str | os.PathLike | Passphrase


@dataclass(frozen=True, slots=True)
class ScryptParams:
    """scrypt's cost: ``n`` (CPU/memory, a power of two), ``r`` (block size), ``p`` (parallelism).

    Memory is ``128 * n * r`` bytes: 128 MiB for the default ``n = 2**17, r = 8``.
    """

    n: int = 2**17
    r: int = 8
    p: int = 1

    MAX_MEMORY = 1 << 30  # a store's header may not make a reader spend more

    def __post_init__(self) -> None:
        for name in ("n", "r", "p"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise OptionError(f"scrypt parameter {name} must be a positive integer, got {value!r}")
        if self.n < 2 or self.n & (self.n - 1):
            raise OptionError(f"scrypt parameter n must be a power of two above 1, got {self.n}")
        if 128 * self.n * self.r > self.MAX_MEMORY or self.p > 16:
            raise OptionError(f"scrypt parameters n={self.n}, r={self.r}, p={self.p} are beyond the limits")


#: The scrypt cost of new stores (a reader follows the cost a store's header names).
NEW_STORE_SCRYPT = ScryptParams()


def resolve_key(key: StoreKey) -> bytes | Passphrase:
    """A store key as 32 master-key bytes (a key file is read here) or a :class:`Passphrase`."""
    if isinstance(key, Passphrase):
        return key
    if isinstance(key, bytes | bytearray):
        if len(key) != KEY_BYTES:
            raise OptionError(f"an encryption key must be {KEY_BYTES} bytes, got {len(key)}")
        return bytes(key)
    if isinstance(key, str | os.PathLike):
        return load_key(Path(key))
    raise OptionError(
        f"an encryption key must be 32 bytes, a key file path or a Passphrase, got {type(key).__name__}"
    )
