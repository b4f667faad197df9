"""Where protocol secrets come from: the OS CSPRNG, or a seeded ChaCha20 stream for simulations."""

from __future__ import annotations

import hashlib
import os

from fedimage.privacy.secagg._cryptography import Cipher, algorithms

_SEED_DOMAIN = b"fedimage-secagg-simulation-seed-v1"


class SecretSource:
    """Random bytes for keys, seeds, nonces and Shamir coefficients.

    ``SecretSource()`` reads ``os.urandom`` (what a deployment must use). ``SecretSource.from_seed(s)``
    is a ChaCha20 keystream keyed by SHA-256 of the seed: every secret of a simulated round is then
    reproducible, and guessable by anyone who knows the seed, so it is for tests and benchmarks only.
    """

    __slots__ = ("_key", "_stream")

    def __init__(self, key: bytes | None = None) -> None:
        if key is not None and len(key) != 32:
            raise ValueError(f"a SecretSource key must be 32 bytes, got {len(key)}")
        self._key = key
        self._stream = None if key is None else Cipher(algorithms.ChaCha20(key, bytes(16)), None).encryptor()

    @classmethod
    def from_seed(cls, seed: int | None) -> SecretSource:
        """A deterministic source for ``seed``, or the OS CSPRNG when ``seed`` is None."""
        if seed is None:
            return cls()
        return cls(hashlib.sha256(_SEED_DOMAIN + str(int(seed)).encode("ascii")).digest())

    @property
    def deterministic(self) -> bool:
        return self._key is not None

    def random_bytes(self, size: int) -> bytes:
        if self._stream is None:
            return os.urandom(size)
        return self._stream.update(bytes(size))

    def child(self, label: str) -> SecretSource:
        """An independent source for one party (a client, the server), derived from this one's key."""
        if self._key is None:
            return SecretSource()
        return SecretSource(hashlib.sha256(self._key + b"\0" + label.encode("utf-8")).digest())

    def __repr__(self) -> str:
        return f"<SecretSource ({'seeded, simulation only' if self.deterministic else 'os.urandom'})>"
