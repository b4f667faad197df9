"""The one place that imports ``cryptography`` (the ``privacy`` extra), with a clear error without it."""

from __future__ import annotations

from fedimage.extras import require

require("cryptography", "secure aggregation")  # a clear error before the imports below

from cryptography.exceptions import InvalidTag  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey  # noqa: E402
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes  # noqa: E402
from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: E402
from cryptography.hazmat.primitives.kdf.hkdf import HKDF  # noqa: E402

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
