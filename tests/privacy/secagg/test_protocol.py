"""SecAgg+ rounds: sums, dropouts at every stage, aborts, tampering, and what the server sees."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("cryptography")
from hypothesis import given, settings
from hypothesis import strategies as st

from fedimage.errors import OptionError
from fedimage.privacy.secagg import (
    DropoutPlan,
    Quantizer,
    SecAggAbort,
    SecAggClient,
    SecAggError,
    SecAggServer,
    SecretSource,
    Stage,
    secure_sum,
    simulate_round,
)
from fedimage.privacy.secagg.messages import MaskedInput, UnmaskRequest

# chi-square critical value for 255 degrees of freedom at alpha = 0.001 (scipy.stats.chi2.ppf(0.999, 255))
CHI2_255_CRITICAL = 330.52


def vectors_for(n: int, dimension: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {f"user{i}": rng.uniform(-1.2, 1.2, dimension).astype(np.float32) for i in range(n)}


def clipped_sum(vectors: dict[str, np.ndarray], ids, clip: float = 1.0) -> np.ndarray:
    return np.sum([np.clip(vectors[i].astype(np.float64), -clip, clip) for i in ids], axis=0)


def run(vectors, dropouts=None, seed=0, bits=32, **options):
    quantizer = Quantizer.for_cohort(1.0, len(vectors), bits)
    dimension = len(next(iter(vectors.values())))
    report = simulate_round(
        list(vectors), vectors.__getitem__, quantizer, dimension, dropouts=dropouts, seed=seed, **options
    )
    error = np.abs(report.total - clipped_sum(vectors, report.contributors)).max()
    assert error <= quantizer.max_sum_error(len(report.contributors)) + 1e-6
    return report


class Round:
    """Drives the server and clients by hand, so tests can intercept any message."""

    def __init__(self, n: int = 10, dimension: int = 64, seed: int = 3, **options) -> None:
        self.quantizer = Quantizer.for_cohort(1.0, n)
        secrets = SecretSource.from_seed(seed)
        self.server = SecAggServer(n, self.quantizer, dimension, graph_seed=seed, secrets=secrets, **options)
        self.clients = {i: SecAggClient(i, self.server.setup, secrets.child(str(i))) for i in range(n)}
        self.vectors = {i: np.random.default_rng(i).uniform(-1, 1, dimension) for i in range(n)}

    def to_deliveries(self, drop=()):
        for client in self.clients.values():
            self.server.receive(client.advertise_keys())
        broadcasts = self.server.broadcast_keys()
        for i, broadcast in broadcasts.items():
            if i not in drop:
                self.server.receive(self.clients[i].share_keys(broadcast))
        return self.server.deliver_shares()

    def to_request(self, drop=()):
        deliveries = self.to_deliveries()
        for i, delivery in deliveries.items():
            if i not in drop:
                self.server.receive(self.clients[i].masked_input(delivery, self.vectors[i]))
        return self.server.request_unmask()

    def responses(self, request):
        return {i: self.clients[i].unmask(request) for i in sorted(request.survivors)}


class TestSums:
    @given(
        n=st.integers(3, 36),
        dimension=st.integers(1, 200),
        rates=st.lists(st.sampled_from([0.0, 0.02, 0.05, 0.1]), min_size=4, max_size=4),
        seed=st.integers(0, 2**31),
    )
    @settings(max_examples=25, deadline=None)
    def test_the_sum_equals_the_plain_sum_of_the_contributors(self, n, dimension, rates, seed):
        vectors = vectors_for(n, dimension, seed)
        dropouts = DropoutPlan.random(vectors, rates, seed)
        try:
            report = run(vectors, dropouts, seed=seed)
        except SecAggAbort as abort:
            assert "threshold" in str(abort) or "not connected" in str(abort)
            return
        dropped_early = {c for c, stage in report.dropped.items() if stage < Stage.UNMASK}
        assert set(report.contributors) == set(vectors) - dropped_early
        assert set(report.contributors) >= set(vectors) - set().union(*(dropouts.at(s) for s in Stage))

    # dropouts: (stage, number of clients that vanish before their message of that stage), 30 clients
    @pytest.mark.parametrize(
        ("stage", "count"),
        [(Stage.ADVERTISE_KEYS, 4), (Stage.SHARE_KEYS, 4), (Stage.MASKED_INPUT, 4), (Stage.UNMASK, 4)],
    )
    def test_dropouts_at_each_stage_are_recovered(self, stage, count):
        vectors = vectors_for(30, 50, seed=1)
        gone = frozenset(list(vectors)[3 : 3 + count])
        report = run(vectors, DropoutPlan(**{stage.name.lower(): gone}), seed=1)
        assert report.dropped == dict.fromkeys(gone, stage)
        if stage == Stage.UNMASK:  # their masked inputs arrived: they are in the sum
            assert set(report.contributors) == set(vectors)
        else:
            assert set(report.contributors) == set(vectors) - gone

    def test_dropouts_at_every_stage_at_once(self):
        vectors = vectors_for(40, 30, seed=2)
        names = list(vectors)
        plan = DropoutPlan(names[0:2], names[10:12], names[20:23], names[30:32])
        report = run(vectors, plan, seed=2)
        assert len(report.contributors) == 40 - 7

    @pytest.mark.parametrize(("prg", "bits"), [("chacha20", 20), ("aes-ctr", 48), ("chacha20", 64)])
    def test_generators_and_moduli(self, prg, bits):
        vectors = vectors_for(12, 40, seed=4)
        run(vectors, DropoutPlan(masked_input={"user3"}, unmask={"user5"}), seed=4, bits=bits, prg=prg)

    def test_secure_sum_is_deterministic_and_order_independent(self):
        vectors = vectors_for(15, 25, seed=5)
        first = secure_sum(vectors, 1.0, seed=7)
        assert np.array_equal(first, secure_sum(dict(reversed(vectors.items())), 1.0, seed=7))
        assert np.array_equal(first, secure_sum(vectors, 1.0, seed=8))  # masks differ, sums do not
        assert np.array_equal(first, secure_sum(vectors, 1.0))  # OS randomness
        assert np.abs(first - clipped_sum(vectors, vectors)).max() <= Quantizer.for_cohort(
            1.0, 15
        ).max_sum_error(15)

    def test_same_seed_gives_identical_messages(self):
        inputs = []
        for seed in (11, 11, 12):
            round_ = Round(seed=seed)
            deliveries = round_.to_deliveries()
            inputs.append(round_.clients[0].masked_input(deliveries[0], round_.vectors[0]).masked)
        assert np.array_equal(inputs[0], inputs[1])
        assert not np.array_equal(inputs[0], inputs[2])

    # bad calls: (vectors, message fragment)
    @pytest.mark.parametrize(
        ("vectors", "fragment"),
        [
            ({}, "at least one"),
            ({"a": np.zeros(3), "b": np.zeros(4)}, "same length"),
            ({"a": np.zeros((2, 2))}, "1-D"),
        ],
    )
    def test_bad_inputs_are_refused(self, vectors, fragment):
        with pytest.raises(OptionError, match=fragment):
            secure_sum(vectors, 1.0)

    def test_a_dropout_plan_naming_unknown_clients_is_refused(self):
        with pytest.raises(OptionError, match="unknown clients"):
            secure_sum(vectors_for(5, 3, 0), 1.0, dropouts=DropoutPlan(unmask={"nobody"}))


class TestAborts:
    # too many dropouts: (stage, clients lost) with 10 clients, complete graph, threshold 6
    @pytest.mark.parametrize("stage", list(Stage))
    def test_fewer_survivors_than_the_threshold_abort(self, stage):
        vectors = vectors_for(10, 8, seed=6)
        gone = frozenset(list(vectors)[:5])
        with pytest.raises(SecAggAbort, match="threshold 6"):
            run(vectors, DropoutPlan(**{stage.name.lower(): gone}), seed=6, threshold=6)

    def test_disconnected_survivors_abort_instead_of_revealing_partial_sums(self):
        round_ = Round(n=12, degree=2, threshold=2)  # a ring: two dropouts can cut it in two
        ring = round_.server.setup.neighbours
        order = [0]
        while len(order) < 12:
            order.append(next(p for p in ring[order[-1]] if p not in order))
        with pytest.raises(SecAggAbort, match="not connected"):
            round_.to_request(drop={order[2], order[8]})


class TestTampering:
    def test_a_tampered_share_ciphertext_is_rejected(self):
        round_ = Round()
        deliveries = round_.to_deliveries()
        sender, sealed = next(iter(deliveries[4].ciphertexts.items()))
        tampered = bytearray(sealed)
        tampered[20] ^= 0x01
        deliveries[4].ciphertexts[sender] = bytes(tampered)
        with pytest.raises(
            SecAggError, match=f"client 4: shares from client {sender}: authentication failed"
        ):
            round_.clients[4].masked_input(deliveries[4], round_.vectors[4])

    def test_a_misrouted_share_is_rejected(self):
        round_ = Round()
        deliveries = round_.to_deliveries()
        deliveries[4].ciphertexts[1] = deliveries[5].ciphertexts[1]  # client 1's share for 5, sent to 4
        with pytest.raises(SecAggError, match="authentication failed"):
            round_.clients[4].masked_input(deliveries[4], round_.vectors[4])

    @pytest.mark.parametrize("field", ["seed_shares", "key_shares"])
    def test_a_tampered_unmask_share_is_rejected(self, field):
        round_ = Round()
        request = round_.to_request(drop={7})
        responses = round_.responses(request)
        owner = 2 if field == "seed_shares" else 7
        first_holder = min(i for i, r in responses.items() if owner in getattr(r, field))
        share = bytearray(getattr(responses[first_holder], field)[owner])
        share[-1] ^= 0x01
        getattr(responses[first_holder], field)[owner] = bytes(share)
        for response in responses.values():
            round_.server.receive(response)
        with pytest.raises(SecAggError, match=f"client {owner}'s .* (inconsistent|not a secret)"):
            round_.server.finish()

    # malformed masked inputs: (array, message fragment)
    @pytest.mark.parametrize(
        ("masked", "fragment"),
        [(np.zeros(63, np.uint32), "expected uint32"), (np.zeros(64, np.float32), "expected uint32")],
    )
    def test_a_malformed_masked_input_is_rejected(self, masked, fragment):
        round_ = Round()
        round_.to_deliveries()
        with pytest.raises(SecAggError, match=fragment):
            round_.server.receive(MaskedInput(0, masked))

    def test_messages_out_of_order_or_twice_are_rejected(self):
        round_ = Round()
        message = round_.clients[0].advertise_keys()
        round_.server.receive(message)
        with pytest.raises(SecAggError, match="twice"):
            round_.server.receive(message)
        with pytest.raises(SecAggError, match="MaskedInput from client 1 arrived during ADVERTISE_KEYS"):
            round_.server.receive(MaskedInput(1, np.zeros(64, np.uint32)))
        with pytest.raises(SecAggError, match="asked for stage UNMASK"):
            round_.clients[0].unmask(UnmaskRequest(frozenset(), frozenset()))

    def test_a_client_never_reveals_both_secrets_of_a_neighbour(self):
        round_ = Round()
        request = round_.to_request(drop={7})
        inconsistent = UnmaskRequest(request.survivors | {7}, request.dropped)
        with pytest.raises(SecAggError, match=r"\[7\] are both survivors and dropped"):
            round_.clients[0].unmask(inconsistent)


class TestServerView:
    @pytest.mark.parametrize("update", [0.0, 1.0])
    def test_a_single_masked_input_is_indistinguishable_from_uniform(self, update):
        """Chi-square on the top and bottom 8 bits of one client's masked words (fixed seed, alpha 0.001)."""
        round_ = Round(n=6, dimension=100_000, seed=21)
        deliveries = round_.to_deliveries()
        constant = np.full(100_000, update)
        words = round_.clients[0].masked_input(deliveries[0], constant).masked
        plain = round_.quantizer.quantize(constant)
        for view in (words >> np.uint32(24), words & np.uint32(0xFF)):
            counts = np.bincount(view.astype(np.int64), minlength=256)
            expected = words.size / 256
            assert ((counts - expected) ** 2 / expected).sum() < CHI2_255_CRITICAL
        # the same test on the unmasked words rejects them: it has the power to see structure
        plain_counts = np.bincount((plain & np.uint32(0xFF)).astype(np.int64), minlength=256)
        assert ((plain_counts - words.size / 256) ** 2 / (words.size / 256)).sum() > CHI2_255_CRITICAL
