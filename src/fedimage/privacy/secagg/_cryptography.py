"""The one place that imports ``cryptography`` (the ``privacy`` extra), with a clear error without it."""

from __future__ import annotations

try:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "fedimage.privacy.secagg needs the 'cryptography' package: pip install 'fedimage[privacy]'"
    ) from error

__all__ = [
    "AESGCM",
    "HKDF",
    "Cipher",
    "InvalidTag",
    "X25519PrivateKey",
    "X25519PublicKey",
    "algorithms",
    "hashes",
    "modes",
    "serialization",
]
