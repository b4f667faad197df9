"""The messages of one SecAgg+ round, stage by stage, as plain frozen dataclasses.

The protocol is transport-agnostic: a deployment serializes these however it likes. ``wire_bytes``
is the size of each message's payload with 4-byte client indices, used for bandwidth accounting.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from fedimage.privacy.secagg.quantization import Quantizer
from fedimage.privacy.secagg.shamir import SHARE_BYTES

INDEX_BYTES = 4


class Stage(enum.IntEnum):
    """The four stages of a round, in order."""

    ADVERTISE_KEYS = 0
    SHARE_KEYS = 1
    MASKED_INPUT = 2
    UNMASK = 3


@dataclass(frozen=True)
class RoundSetup:
    """Server -> every client: the round's public parameters and the communication graph."""

    round_id: bytes
    neighbours: tuple[tuple[int, ...], ...]
    threshold: int
    quantizer: Quantizer
    dimension: int
    prg: str

    @property
    def num_clients(self) -> int:
        return len(self.neighbours)

    def wire_bytes_for(self, client: int) -> int:
        """What one client receives: its own neighbour list and the scalar parameters."""
        return len(self.round_id) + INDEX_BYTES * (len(self.neighbours[client]) + 6)


@dataclass(frozen=True)
class AdvertiseKeys:
    """Client -> server: the public keys for share encryption and for pairwise masks."""

    sender: int
    cipher_public_key: bytes
    mask_public_key: bytes

    @property
    def wire_bytes(self) -> int:
        return INDEX_BYTES + len(self.cipher_public_key) + len(self.mask_public_key)


@dataclass(frozen=True)
class KeysBroadcast:
    """Server -> one client: the public key pairs of its neighbours that advertised keys."""

    recipient: int
    keys: Mapping[int, tuple[bytes, bytes]]

    @property
    def wire_bytes(self) -> int:
        return INDEX_BYTES + sum(INDEX_BYTES + len(c) + len(m) for c, m in self.keys.values())


@dataclass(frozen=True)
class ShareKeys:
    """Client -> server: encrypted shares for each holder, and a commitment to the self-mask seed."""

    sender: int
    ciphertexts: Mapping[int, bytes]
    seed_commitment: bytes

    @property
    def wire_bytes(self) -> int:
        payload = sum(INDEX_BYTES + len(c) for c in self.ciphertexts.values())
        return INDEX_BYTES + len(self.seed_commitment) + payload


@dataclass(frozen=True)
class SharesDelivery:
    """Server -> one client: the encrypted shares its neighbours addressed to it, by sender."""

    recipient: int
    ciphertexts: Mapping[int, bytes]

    @property
    def wire_bytes(self) -> int:
        return INDEX_BYTES + sum(INDEX_BYTES + len(c) for c in self.ciphertexts.values())


@dataclass(frozen=True, eq=False)
class MaskedInput:
    """Client -> server: the quantized update plus self mask plus pairwise masks, mod 2^b."""

    sender: int
    masked: np.ndarray

    @property
    def wire_bytes(self) -> int:
        return INDEX_BYTES + self.masked.nbytes


@dataclass(frozen=True)
class UnmaskRequest:
    """Server -> surviving clients: who sent a masked input and who dropped out after sharing keys."""

    survivors: frozenset[int]
    dropped: frozenset[int]

    @property
    def wire_bytes(self) -> int:
        return INDEX_BYTES * (len(self.survivors) + len(self.dropped) + 2)


@dataclass(frozen=True)
class UnmaskResponse:
    """Client -> server: self-mask seed shares of survivors and mask-key shares of dropped clients."""

    sender: int
    seed_shares: Mapping[int, bytes]
    key_shares: Mapping[int, bytes]

    @property
    def wire_bytes(self) -> int:
        return INDEX_BYTES + (INDEX_BYTES + SHARE_BYTES) * (len(self.seed_shares) + len(self.key_shares))
