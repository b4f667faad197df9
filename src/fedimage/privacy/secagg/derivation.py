"""Every key of a round, derived with HKDF from a secret and a label naming its purpose, round and parties.

Binding each key to the round id and the client indices means no key is ever used twice, so the
mask streams and share encryptions never reuse a (key, nonce) pair across rounds or pairs.
"""

from __future__ import annotations

import hashlib
import struct

from fedimage.privacy.secagg._cryptography import X25519PrivateKey
from fedimage.privacy.secagg.keys import agree, hkdf

_PREFIX = b"fedimage-secagg-v1/"


def _label(purpose: bytes, round_id: bytes, *indices: int) -> bytes:
    return _PREFIX + purpose + b"/" + round_id + struct.pack(f">{len(indices)}I", *indices)


def share_channel_key(private_key: X25519PrivateKey, peer_public: bytes, round_id: bytes) -> bytes:
    """The AES-GCM key two neighbours use for the shares they send each other."""
    return agree(private_key, peer_public, _label(b"share-channel", round_id))


def share_associated_data(round_id: bytes, owner: int, holder: int) -> bytes:
    """What a share ciphertext is bound to: the round, who made the shares and who holds them."""
    return _label(b"share", round_id, owner, holder)


def pairwise_mask_key(
    private_key: X25519PrivateKey, peer_public: bytes, round_id: bytes, one: int, other: int
) -> bytes:
    """The key of the mask that clients ``one`` and ``other`` add with opposite signs."""
    low, high = sorted((one, other))
    return agree(private_key, peer_public, _label(b"pairwise-mask", round_id, low, high))


def self_mask_key(seed: bytes, round_id: bytes, owner: int) -> bytes:
    """The key of a client's self mask, from its 256-bit seed."""
    return hkdf(seed, _label(b"self-mask", round_id, owner))


def seed_commitment(seed: bytes, round_id: bytes, owner: int) -> bytes:
    """SHA-256 binding of a self-mask seed, checked by the server after reconstructing the seed."""
    return hashlib.sha256(_label(b"seed-commitment", round_id, owner) + seed).digest()
