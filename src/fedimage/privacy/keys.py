"""Where the master key of an encrypted store comes from: a key file, raw bytes, or a passphrase.

This module needs no optional package; the cipher itself lives in
:mod:`fedimage.privacy.encryption` (the ``privacy`` extra), imported by :func:`cipher_module`.

A *store key* is any of:

- ``bytes``: the 32-byte master key itself;
- a ``str`` or ``os.PathLike``: a key file, as made by ``fedimage keygen`` (32 raw bytes or 64 hex
  digits, mode 0600; see :func:`fedimage.privacy.pseudonyms.load_key`);
- a :class:`Passphrase`: stretched with scrypt under the store's salt.
"""

from __future__ import annotations

import argparse
import os
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TypeAlias

from fedimage.errors import OptionError, StoreError
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


#: The scrypt cost of new stores. Tests lower it through ``_set_scrypt_params_for_tests``; users cannot.
DEFAULT_SCRYPT = ScryptParams()
_new_store_scrypt = DEFAULT_SCRYPT


def new_store_scrypt() -> ScryptParams:
    return _new_store_scrypt


def _set_scrypt_params_for_tests(params: ScryptParams) -> ScryptParams:
    """Internal test hook: the scrypt cost of stores made from now on; returns the previous one."""
    global _new_store_scrypt
    previous, _new_store_scrypt = _new_store_scrypt, params
    return previous


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


def add_key_options(parser: argparse.ArgumentParser) -> None:
    """``--key`` / ``--passphrase-env``: how a command opens an encrypted store."""
    group = parser.add_argument_group("encrypted stores")
    group.add_argument("--key", type=Path, metavar="KEYFILE", help="key file of an encrypted store")
    group.add_argument(
        "--passphrase-env", metavar="VARIABLE", help="environment variable holding the store's passphrase"
    )


def key_from_options(key_file: str | os.PathLike | None, passphrase_env: str | None) -> StoreKey | None:
    """The store key the command-line options ``--key``/``--passphrase-env`` (or the convert ones) name."""
    if key_file is not None and passphrase_env is not None:
        raise OptionError("give a key file or a passphrase variable, not both")
    if key_file is not None:
        return load_key(key_file)
    if passphrase_env is not None:
        return Passphrase.from_env(passphrase_env)
    return None


def cipher_module() -> ModuleType:
    """:mod:`fedimage.privacy.encryption`, or a clear error naming the ``privacy`` extra."""
    try:
        from fedimage.privacy import encryption
    except ImportError:
        raise StoreError(
            "encrypted stores need the 'cryptography' package: pip install 'fedimage[privacy]'"
        ) from None
    return encryption
