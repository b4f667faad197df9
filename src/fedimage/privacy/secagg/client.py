"""The client side of a SecAgg+ round, as a state machine that answers one message per stage."""

from __future__ import annotations

import struct
from collections.abc import Mapping

import numpy as np

from fedimage.privacy.secagg import derivation, keys, shamir, wire
from fedimage.privacy.secagg._cryptography import X25519PrivateKey
from fedimage.privacy.secagg.errors import SecAggAbort, SecAggError
from fedimage.privacy.secagg.graph import is_connected
from fedimage.privacy.secagg.masks import apply_masks
from fedimage.privacy.secagg.messages import (
    AdvertiseKeys,
    KeysBroadcast,
    MaskedInput,
    RoundSetup,
    ShareKeys,
    SharesDelivery,
    Stage,
    UnmaskRequest,
    UnmaskResponse,
)
from fedimage.privacy.secagg.randomness import SecretSource

_SHARE_HEADER = struct.Struct(">II")
SHARE_PLAINTEXT_BYTES = _SHARE_HEADER.size + 2 * shamir.SHARE_BYTES
SHARE_CIPHERTEXT_BYTES = keys.NONCE_BYTES + SHARE_PLAINTEXT_BYTES + keys.TAG_BYTES
STATE_KIND = "client-state"
_DONE = len(Stage)  # ``next-stage`` of a client that answered the unmask request


class SecAggClient:
    """One client of one round: ``advertise_keys``, ``share_keys``, ``masked_input``, ``unmask``, in order.

    The client never reveals both secrets of a neighbour: it answers a single unmask request, and
    only after checking that it is consistent (disjoint, large and connected enough).

    A client that lives in a new process at each stage (Flower's ``flwr-clientapp``) saves
    ``export_state()`` after a stage and continues with ``SecAggClient.restore(state)`` at the next.
    Save the state after every stage call, failed ones included (a stage is used up once asked for),
    and never restore an older one: a client restored twice at ``UNMASK`` could answer two requests.
    """

    def __init__(self, index: int, setup: RoundSetup, secrets: SecretSource | None = None) -> None:
        if not 0 <= index < setup.num_clients:
            raise SecAggError(f"client index {index} is not in the round's {setup.num_clients} clients")
        self.index = index
        self.setup = setup
        self._secrets = secrets if secrets is not None else SecretSource()
        self._next: Stage | None = Stage.ADVERTISE_KEYS
        self._neighbour_set = frozenset(setup.neighbours[index])
        self._cipher_key: X25519PrivateKey | None = None  # made in advertise_keys
        self._mask_key: X25519PrivateKey | None = None
        self._peer_keys: dict[int, tuple[bytes, bytes]] = {}
        self._mask_partners: tuple[int, ...] = ()
        self._seed = b""
        self._held: dict[int, tuple[bytes, bytes]] = {}  # owner -> (seed share, mask-key share)

    def export_state(self) -> wire.Record:
        """Everything needed to continue the round, as a flat record of ``wire`` values.

        The record holds the client's private keys, self-mask seed and the shares it keeps for its
        neighbours: store it only where the client's own secrets may live. The secret source is not
        part of it (``restore`` takes one).
        """
        record = wire.new_record(STATE_KIND)
        record["index"] = self.index
        wire.put_setup(record, self.setup, "setup-")
        record["next-stage"] = _DONE if self._next is None else int(self._next)
        for key, private in (("cipher-private-key", self._cipher_key), ("mask-private-key", self._mask_key)):
            if private is not None:  # left out until made
                record[key] = keys.private_bytes(private)
        wire.put_mapping(
            record,
            "peers",
            "peers",
            self._peer_keys,
            **{"peer-cipher-keys": lambda pair: pair[0], "peer-mask-keys": lambda pair: pair[1]},
        )
        record["mask-partners-count"] = len(self._mask_partners)
        wire.put_list(record, "mask-partners", list(self._mask_partners))
        wire.put_blob(record, "seed", self._seed)
        wire.put_mapping(
            record,
            "held",
            "held-owners",
            self._held,
            **{"held-seed-shares": lambda held: held[0], "held-key-shares": lambda held: held[1]},
        )
        return record

    @classmethod
    def restore(
        cls,
        state: Mapping[str, object],
        *,
        round_id: bytes | None = None,
        setup: RoundSetup | None = None,
        secrets: SecretSource | None = None,
    ) -> SecAggClient:
        """The client ``export_state`` saved, at the stage it had reached.

        ``round_id`` or ``setup``, when given, must be the saved round's (a state of another round is
        refused with ``SecAggError``, as is a malformed one). ``secrets`` feeds what the client still
        draws (keys and shares; the OS CSPRNG by default).
        """
        reader = wire.RecordReader(state, f"SecAgg {STATE_KIND}")
        wire.check_kind(reader, STATE_KIND)
        saved = wire.read_setup(reader, "setup-")
        if round_id is not None and bytes(round_id) != saved.round_id:
            raise SecAggError(
                f"the saved SecAgg client state is of round {saved.round_id.hex()},"
                f" not {bytes(round_id).hex()}"
            )
        if setup is not None and setup != saved:
            raise SecAggError(
                f"the saved SecAgg client state is of round {saved.round_id.hex()} with another setup than"
                f" round {setup.round_id.hex()}"
            )
        reader.index_limit = saved.num_clients
        client = cls(reader.index("index"), saved, secrets)
        reached = reader.integer("next-stage", 0, _DONE + 1)
        client._next = None if reached == _DONE else Stage(reached)
        advertised = keys.KEY_BYTES if reached > Stage.ADVERTISE_KEYS else 0
        cipher_key = reader.blob("cipher-private-key", advertised, optional=not advertised)
        mask_key = reader.blob("mask-private-key", advertised, optional=not advertised)
        if advertised:
            client._cipher_key = keys.private_key_from_bytes(cipher_key)
            client._mask_key = keys.private_key_from_bytes(mask_key)
        for peer, cipher, mask in reader.mapping("peers", "peers", "peer-cipher-keys", "peer-mask-keys"):
            if peer not in client._neighbour_set:
                reader.fail("peers", f"lists client {peer}, who is not a neighbour")
            if len(cipher) != keys.KEY_BYTES or len(mask) != keys.KEY_BYTES:
                reader.fail("peer-cipher-keys", f"client {peer}'s keys are not {keys.KEY_BYTES} bytes")
            client._peer_keys[peer] = (cipher, mask)
        partners = reader.indices("mask-partners", reader.count("mask-partners-count"))
        if not set(partners) <= client._peer_keys.keys():
            reader.fail("mask-partners", "lists clients whose keys the client never got")
        client._mask_partners = tuple(partners)
        # share_keys draws the seed when it keeps the peers' keys: both or neither
        client._seed = reader.blob(
            "seed", keys.KEY_BYTES if client._peer_keys else 0, optional=not client._peer_keys
        )
        for owner, seed_share, key_share in reader.mapping(
            "held", "held-owners", "held-seed-shares", "held-key-shares"
        ):
            if owner not in client._peer_keys:
                reader.fail("held-owners", f"lists client {owner}, whose keys the client never got")
            if len(seed_share) != shamir.SHARE_BYTES or len(key_share) != shamir.SHARE_BYTES:
                reader.fail("held-seed-shares", f"client {owner}'s shares are not {shamir.SHARE_BYTES} bytes")
            client._held[owner] = (seed_share, key_share)
        return client

    def __repr__(self) -> str:
        state = self._next.name if self._next is not None else "done"
        return f"<SecAggClient {self.index} of {self.setup.num_clients}, next stage {state}>"

    def _enter(self, stage: Stage) -> None:
        if self._next != stage:
            state = self._next.name if self._next is not None else "the end of the round"
            raise SecAggError(f"client {self.index}: asked for stage {stage.name} while at {state}")
        self._next = Stage(stage + 1) if stage < Stage.UNMASK else None

    def advertise_keys(self) -> AdvertiseKeys:
        self._enter(Stage.ADVERTISE_KEYS)
        self._cipher_key = keys.new_private_key(self._secrets)
        self._mask_key = keys.new_private_key(self._secrets)
        return AdvertiseKeys(
            self.index, keys.public_bytes(self._cipher_key), keys.public_bytes(self._mask_key)
        )

    def share_keys(self, broadcast: KeysBroadcast) -> ShareKeys:
        """Shamir-share the self-mask seed and mask private key among the neighbours that advertised."""
        self._enter(Stage.SHARE_KEYS)
        if broadcast.recipient != self.index:
            raise SecAggError(
                f"client {self.index}: got the key broadcast meant for client {broadcast.recipient}"
            )
        own = {keys.public_bytes(self._cipher_key), keys.public_bytes(self._mask_key)}
        seen: set[bytes] = set(own)
        for peer, pair in broadcast.keys.items():
            if peer not in self._neighbour_set:
                raise SecAggError(f"client {self.index}: keys of client {peer}, who is not a neighbour")
            if any(len(key) != keys.KEY_BYTES for key in pair) or pair[0] == pair[1] or seen & set(pair):
                raise SecAggError(f"client {self.index}: client {peer}'s public keys are malformed or reused")
            seen.update(pair)
        if len(broadcast.keys) < self.setup.threshold:
            raise SecAggAbort(
                f"client {self.index}: only {len(broadcast.keys)} neighbours advertised keys,"
                f" fewer than the threshold {self.setup.threshold}"
            )
        self._peer_keys = dict(broadcast.keys)
        self._seed = self._secrets.random_bytes(keys.KEY_BYTES)
        holders = sorted(self._peer_keys)
        xs = [holder + 1 for holder in holders]
        seed_shares = shamir.split(self._seed, xs, self.setup.threshold, self._secrets)
        key_shares = shamir.split(keys.private_bytes(self._mask_key), xs, self.setup.threshold, self._secrets)
        round_id = self.setup.round_id
        ciphertexts = {}
        for holder, x in zip(holders, xs, strict=True):
            plaintext = _SHARE_HEADER.pack(self.index, holder) + seed_shares[x] + key_shares[x]
            channel = derivation.share_channel_key(self._cipher_key, self._peer_keys[holder][0], round_id)
            associated = derivation.share_associated_data(round_id, self.index, holder)
            ciphertexts[holder] = keys.seal(channel, plaintext, associated, self._secrets)
        commitment = derivation.seed_commitment(self._seed, round_id, self.index)
        return ShareKeys(self.index, ciphertexts, commitment)

    def masked_input(self, delivery: SharesDelivery, vector: np.ndarray) -> MaskedInput:
        """Keep the neighbours' shares, then mask the quantized ``vector`` for those neighbours."""
        self._enter(Stage.MASKED_INPUT)
        if delivery.recipient != self.index:
            raise SecAggError(f"client {self.index}: got the shares meant for client {delivery.recipient}")
        round_id = self.setup.round_id
        for owner, sealed in delivery.ciphertexts.items():
            if owner not in self._peer_keys:
                raise SecAggError(f"client {self.index}: shares from client {owner}, whose keys it never got")
            channel = derivation.share_channel_key(self._cipher_key, self._peer_keys[owner][0], round_id)
            associated = derivation.share_associated_data(round_id, owner, self.index)
            plaintext = keys.open_sealed(
                channel, sealed, associated, f"client {self.index}: shares from client {owner}"
            )
            if len(plaintext) != SHARE_PLAINTEXT_BYTES or _SHARE_HEADER.unpack_from(plaintext) != (
                owner,
                self.index,
            ):
                raise SecAggError(f"client {self.index}: the shares from client {owner} are malformed")
            body = plaintext[_SHARE_HEADER.size :]
            self._held[owner] = (body[: shamir.SHARE_BYTES], body[shamir.SHARE_BYTES :])
        partners = tuple(sorted(delivery.ciphertexts))
        if len(partners) < self.setup.threshold:
            raise SecAggAbort(
                f"client {self.index}: only {len(partners)} neighbours shared keys,"
                f" fewer than the threshold {self.setup.threshold}"
            )
        self._mask_partners = partners
        values = np.asarray(vector)
        if values.shape != (self.setup.dimension,):
            raise SecAggError(
                f"client {self.index}: update has shape {values.shape}, expected ({self.setup.dimension},)"
            )
        words = self.setup.quantizer.quantize(values)
        add = [derivation.self_mask_key(self._seed, round_id, self.index)]
        subtract = []
        for peer in partners:
            key = derivation.pairwise_mask_key(
                self._mask_key, self._peer_keys[peer][1], round_id, self.index, peer
            )
            (add if self.index < peer else subtract).append(key)
        apply_masks(words, add, subtract, self.setup.prg)
        return MaskedInput(self.index, self.setup.quantizer.reduce(words))

    def unmask(self, request: UnmaskRequest) -> UnmaskResponse:
        """Reveal seed shares of survivors and mask-key shares of dropped clients, never both for one."""
        self._enter(Stage.UNMASK)
        survivors, dropped = request.survivors, request.dropped
        if survivors & dropped:
            raise SecAggError(
                f"client {self.index}: clients {sorted(survivors & dropped)} are both survivors and dropped"
            )
        strangers = {index for index in survivors | dropped if not 0 <= index < self.setup.num_clients}
        if strangers:
            raise SecAggError(
                f"client {self.index}: the unmask request names unknown clients {sorted(strangers)}"
            )
        if self.index not in survivors:
            raise SecAggError(f"client {self.index}: the unmask request does not list it among the survivors")
        if len(survivors) < self.setup.threshold:
            raise SecAggAbort(
                f"client {self.index}: only {len(survivors)} clients survived, fewer than the threshold"
                f" {self.setup.threshold}"
            )
        listed = (survivors | dropped) & self._neighbour_set
        if not listed <= self._held.keys():
            raise SecAggError(
                f"client {self.index}: neighbours {sorted(listed - self._held.keys())} are listed as having"
                " shared keys, but never sent it shares"
            )
        if not is_connected(survivors, self.setup.neighbours):
            raise SecAggAbort(
                f"client {self.index}: the survivors are not connected in the graph; unmasking would reveal"
                " partial sums"
            )
        seed_shares = {owner: held[0] for owner, held in self._held.items() if owner in survivors}
        key_shares = {owner: held[1] for owner, held in self._held.items() if owner in dropped}
        return UnmaskResponse(self.index, seed_shares, key_shares)
