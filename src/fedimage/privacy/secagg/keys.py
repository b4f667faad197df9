"""Key agreement (X25519 + HKDF-SHA256) and authenticated encryption (AES-256-GCM) of share messages."""

from __future__ import annotations

from fedimage.privacy.secagg._cryptography import (
    AESGCM,
    HKDF,
    InvalidTag,
    X25519PrivateKey,
    X25519PublicKey,
    hashes,
    serialization,
)
from fedimage.privacy.secagg.errors import SecAggError
from fedimage.privacy.secagg.randomness import SecretSource

KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16


def new_private_key(secrets: SecretSource) -> X25519PrivateKey:
    return X25519PrivateKey.from_private_bytes(secrets.random_bytes(KEY_BYTES))


def private_bytes(key: X25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )


def public_bytes(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def private_key_from_bytes(data: bytes) -> X25519PrivateKey:
    return X25519PrivateKey.from_private_bytes(data)


def hkdf(secret: bytes, info: bytes) -> bytes:
    """A 256-bit key derived from ``secret`` for the purpose ``info``."""
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=info).derive(secret)


def agree(private_key: X25519PrivateKey, peer_public: bytes, info: bytes) -> bytes:
    """The key both sides of an X25519 exchange derive for ``info``; a malformed peer key is an error."""
    try:
        peer = X25519PublicKey.from_public_bytes(peer_public)
        shared = private_key.exchange(peer)
    except ValueError as error:  # wrong length, or a low-order point giving an all-zero secret
        raise SecAggError(f"invalid X25519 public key: {error}") from None
    return hkdf(shared, info)


def seal(key: bytes, plaintext: bytes, associated: bytes, secrets: SecretSource) -> bytes:
    """AES-256-GCM with a fresh random nonce: ``nonce || ciphertext || tag``."""
    nonce = secrets.random_bytes(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, associated)


def open_sealed(key: bytes, sealed: bytes, associated: bytes, what: str) -> bytes:
    """Decrypt and authenticate ``sealed``; any change to it or to ``associated`` raises ``SecAggError``."""
    if len(sealed) < NONCE_BYTES + TAG_BYTES:
        raise SecAggError(f"{what}: ciphertext of {len(sealed)} bytes is too short")
    try:
        return AESGCM(key).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], associated)
    except InvalidTag:
        raise SecAggError(f"{what}: authentication failed (tampered with or misrouted)") from None
