"""The server side of a SecAgg+ round: routes keys and shares, sums masked inputs, unmasks only the sum."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedimage.errors import OptionError
from fedimage.privacy.secagg import derivation, keys, shamir
from fedimage.privacy.secagg.client import SHARE_CIPHERTEXT_BYTES
from fedimage.privacy.secagg.errors import SecAggAbort, SecAggError
from fedimage.privacy.secagg.graph import (
    check_threshold,
    default_degree,
    default_threshold,
    is_connected,
    random_regular_graph,
)
from fedimage.privacy.secagg.masks import apply_masks, check_prg
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
from fedimage.privacy.secagg.quantization import Quantizer
from fedimage.privacy.secagg.randomness import SecretSource

ROUND_ID_BYTES = 16


@dataclass(frozen=True, eq=False)
class AggregationResult:
    """The unmasked sum and who is in it."""

    total: np.ndarray  # float64 sum of the contributors' clipped, quantized updates
    contributors: frozenset[int]  # clients whose masked input is in the sum
    dropped: frozenset[int]  # clients that shared keys but sent no masked input


class SecAggServer:
    """Collects each stage's messages with ``receive`` and closes each stage with one method call.

    ``broadcast_keys()``, ``deliver_shares()``, ``request_unmask()`` and ``finish()`` close the four
    collection stages in order; each aborts with ``SecAggAbort`` when fewer than ``threshold`` clients
    are left. The server holds only a running sum of the masked inputs, never each one.
    """

    def __init__(
        self,
        num_clients: int,
        quantizer: Quantizer,
        dimension: int,
        *,
        threshold: int | None = None,
        degree: int | None = None,
        graph_seed: int = 0,
        prg: str = "chacha20",
        secrets: SecretSource | None = None,
    ) -> None:
        if dimension < 1:
            raise OptionError(f"the update dimension must be positive, got {dimension}")
        quantizer.check_capacity(num_clients)
        degree = default_degree(num_clients) if degree is None else min(degree, num_clients - 1)
        threshold = default_threshold(degree) if threshold is None else threshold
        check_threshold(threshold, degree)
        secrets = secrets if secrets is not None else SecretSource()
        self.setup = RoundSetup(
            round_id=secrets.random_bytes(ROUND_ID_BYTES),
            neighbours=random_regular_graph(num_clients, degree, graph_seed),
            threshold=threshold,
            quantizer=quantizer,
            dimension=dimension,
            prg=check_prg(prg),
        )
        self._stage: Stage | None = Stage.ADVERTISE_KEYS
        self._advertised: dict[int, AdvertiseKeys] = {}
        self._shared: dict[int, ShareKeys] = {}
        self._contributors: set[int] = set()
        self._total = np.zeros(dimension, dtype=quantizer.dtype)
        self._responses: dict[int, UnmaskResponse] = {}
        self._request: UnmaskRequest | None = None

    def __repr__(self) -> str:
        setup = self.setup
        return (
            f"<SecAggServer {setup.num_clients} clients, threshold {setup.threshold},"
            f" dimension {setup.dimension},"
            f" stage {self._stage.name if self._stage is not None else 'done'}>"
        )

    @property
    def stage(self) -> Stage | None:
        """The stage whose messages are being collected; None once the round is finished."""
        return self._stage

    # -- collecting ---------------------------------------------------------------------------------

    def receive(self, message: AdvertiseKeys | ShareKeys | MaskedInput | UnmaskResponse) -> None:
        """Accept one message of the current stage; a malformed or misplaced one raises ``SecAggError``."""
        handlers = {
            AdvertiseKeys: (Stage.ADVERTISE_KEYS, self._receive_keys),
            ShareKeys: (Stage.SHARE_KEYS, self._receive_shares),
            MaskedInput: (Stage.MASKED_INPUT, self._receive_masked),
            UnmaskResponse: (Stage.UNMASK, self._receive_unmask),
        }
        if type(message) not in handlers:
            raise SecAggError(f"the server does not accept {type(message).__name__} messages")
        stage, handler = handlers[type(message)]
        if stage != self._stage:
            state = self._stage.name if self._stage is not None else "the end of the round"
            raise SecAggError(f"{type(message).__name__} from client {message.sender} arrived during {state}")
        if not 0 <= message.sender < self.setup.num_clients:
            raise SecAggError(f"message from unknown client {message.sender}")
        handler(message)

    def _receive_keys(self, message: AdvertiseKeys) -> None:
        if message.sender in self._advertised:
            raise SecAggError(f"client {message.sender} advertised keys twice")
        if len(message.cipher_public_key) != keys.KEY_BYTES or len(message.mask_public_key) != keys.KEY_BYTES:
            raise SecAggError(f"client {message.sender} advertised keys of the wrong size")
        self._advertised[message.sender] = message

    def _receive_shares(self, message: ShareKeys) -> None:
        sender = message.sender
        if sender in self._shared or sender not in self._advertised:
            raise SecAggError(f"client {sender} sent shares twice or without advertising keys")
        expected = self._live_neighbours(sender, self._advertised)
        if set(message.ciphertexts) != expected:
            raise SecAggError(
                f"client {sender} addressed shares to {sorted(message.ciphertexts)}, not {sorted(expected)}"
            )
        if any(len(c) != SHARE_CIPHERTEXT_BYTES for c in message.ciphertexts.values()):
            raise SecAggError(f"client {sender} sent share ciphertexts of the wrong size")
        if len(message.seed_commitment) != 32:
            raise SecAggError(f"client {sender} sent a malformed seed commitment")
        self._shared[sender] = message

    def _receive_masked(self, message: MaskedInput) -> None:
        sender, masked = message.sender, message.masked
        quantizer = self.setup.quantizer
        if sender in self._contributors or sender not in self._shared:
            raise SecAggError(f"client {sender} sent a masked input twice or without sharing keys")
        if masked.dtype != quantizer.dtype or masked.shape != (self.setup.dimension,):
            raise SecAggError(
                f"client {sender}'s masked input is {masked.dtype}{masked.shape},"
                f" expected {quantizer.dtype}({self.setup.dimension},)"
            )
        if quantizer.modulus_bits not in (32, 64) and int(masked.max()) >= quantizer.modulus:
            raise SecAggError(
                f"client {sender}'s masked input has words outside Z_2^{quantizer.modulus_bits}"
            )
        np.add(self._total, masked, out=self._total)
        self._contributors.add(sender)

    def _receive_unmask(self, message: UnmaskResponse) -> None:
        sender, request = message.sender, self._request
        assert request is not None  # set when the stage opened
        if sender in self._responses or sender not in request.survivors:
            raise SecAggError(f"client {sender} answered the unmask request twice or was not asked")
        neighbours = set(self.setup.neighbours[sender])
        if (
            not set(message.seed_shares) <= neighbours & request.survivors
            or not set(message.key_shares) <= neighbours & request.dropped
        ):
            raise SecAggError(f"client {sender} sent shares for clients it was not asked about")
        self._responses[sender] = message

    # -- closing stages -----------------------------------------------------------------------------

    def broadcast_keys(self) -> dict[int, KeysBroadcast]:
        """Close stage 1: send each client the public keys of its neighbours that advertised."""
        self._close(Stage.ADVERTISE_KEYS, self._advertised.keys(), "advertised keys")
        return {
            client: KeysBroadcast(
                client,
                {
                    peer: (self._advertised[peer].cipher_public_key, self._advertised[peer].mask_public_key)
                    for peer in sorted(self._live_neighbours(client, self._advertised))
                },
            )
            for client in sorted(self._advertised)
        }

    def deliver_shares(self) -> dict[int, SharesDelivery]:
        """Close stage 2: route each encrypted share to its holder (only shares of clients that completed)."""
        self._close(Stage.SHARE_KEYS, self._shared.keys(), "shared keys")
        inbox: dict[int, dict[int, bytes]] = {client: {} for client in self._shared}
        for sender in sorted(self._shared):
            for holder, sealed in self._shared[sender].ciphertexts.items():
                if holder in inbox:
                    inbox[holder][sender] = sealed
        return {client: SharesDelivery(client, ciphertexts) for client, ciphertexts in inbox.items()}

    def request_unmask(self) -> UnmaskRequest:
        """Close stage 3: name the survivors and the clients that dropped out after sharing keys."""
        self._close(Stage.MASKED_INPUT, self._contributors, "sent masked inputs")
        survivors = frozenset(self._contributors)
        if not is_connected(survivors, self.setup.neighbours):
            raise SecAggAbort(
                "the surviving clients are not connected in the graph; the round cannot unmask safely"
            )
        self._request = UnmaskRequest(survivors, frozenset(self._shared.keys() - survivors))
        return self._request

    def finish(self) -> AggregationResult:
        """Close stage 4: rebuild the secrets the sum needs, remove the masks, return the dequantized sum."""
        self._close(Stage.UNMASK, self._responses.keys(), "answered the unmask request")
        self._stage = None  # one attempt: the running sum is consumed below
        request, setup = self._request, self.setup
        assert request is not None
        add: list[bytes] = []
        subtract: list[bytes] = []
        for owner in sorted(request.survivors):
            seed = self._recover(owner, "seed_shares", "self-mask seed")
            if derivation.seed_commitment(seed, setup.round_id, owner) != self._shared[owner].seed_commitment:
                raise SecAggError(
                    f"the shares of client {owner}'s self-mask seed are inconsistent (a tampered share)"
                )
            subtract.append(derivation.self_mask_key(seed, setup.round_id, owner))
        for owner in sorted(request.dropped):
            private = keys.private_key_from_bytes(self._recover(owner, "key_shares", "mask key"))
            if keys.public_bytes(private) != self._advertised[owner].mask_public_key:
                raise SecAggError(
                    f"the shares of client {owner}'s mask key are inconsistent (a tampered share)"
                )
            for peer in setup.neighbours[owner]:
                if peer in request.survivors:
                    key = derivation.pairwise_mask_key(
                        private, self._advertised[peer].mask_public_key, setup.round_id, owner, peer
                    )
                    # the survivor added +mask when its index is the smaller one: take it back out
                    (subtract if peer < owner else add).append(key)
        total = self._total
        apply_masks(total, add, subtract, setup.prg)
        setup.quantizer.reduce(total)
        return AggregationResult(
            total=setup.quantizer.dequantize_sum(total, len(request.survivors)),
            contributors=request.survivors,
            dropped=request.dropped,
        )

    # -- helpers ------------------------------------------------------------------------------------

    def _close(self, stage: Stage, done: object, what: str) -> None:
        if self._stage != stage:
            state = self._stage.name if self._stage is not None else "the end of the round"
            raise SecAggError(f"cannot close stage {stage.name} while at {state}")
        count = len(done)  # type: ignore[arg-type]
        if count < self.setup.threshold:
            raise SecAggAbort(
                f"secure aggregation aborted at stage {stage.name}: only {count} clients {what},"
                f" fewer than the threshold {self.setup.threshold}"
            )
        self._stage = Stage(stage + 1) if stage < Stage.UNMASK else stage

    def _live_neighbours(self, client: int, alive: dict[int, object]) -> set[int]:
        return {peer for peer in self.setup.neighbours[client] if peer in alive}

    def _recover(self, owner: int, field: str, what: str) -> bytes:
        shares = {
            holder + 1: getattr(response, field)[owner]
            for holder, response in self._responses.items()
            if owner in getattr(response, field)
        }
        if len(shares) < self.setup.threshold:
            raise SecAggAbort(
                f"secure aggregation aborted: only {len(shares)} shares of client {owner}'s {what} came back,"
                f" fewer than the threshold {self.setup.threshold}"
            )
        return shamir.combine(shares, self.setup.threshold)
