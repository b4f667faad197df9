"""Secure aggregation building blocks: quantization, Shamir sharing, the graph, mask streams."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("cryptography")
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from fedimage.errors import OptionError
from fedimage.privacy.secagg import Quantizer, SecAggServer, SecretSource, random_regular_graph
from fedimage.privacy.secagg.errors import SecAggError
from fedimage.privacy.secagg.graph import check_threshold, default_degree, is_connected
from fedimage.privacy.secagg.masks import PRGS, apply_masks, expand_mask
from fedimage.privacy.secagg.shamir import SHARE_BYTES, combine, split


class TestQuantizer:
    @given(
        clients=st.integers(1, 300),
        bits=st.sampled_from([16, 24, 32, 40, 64]),
        clip=st.floats(1e-3, 1e3),
        seed=st.integers(0, 2**32 - 1),
    )
    @settings(max_examples=60, deadline=None)
    def test_sum_of_quantized_vectors_is_within_the_bound(self, clients, bits, clip, seed):
        assume(clients.bit_length() < bits)
        quantizer = Quantizer.for_cohort(clip, clients, bits)
        rng = np.random.default_rng(seed)
        vectors = rng.uniform(-1.5 * clip, 1.5 * clip, size=(clients, 17))
        total = np.zeros(17, dtype=quantizer.dtype)
        for vector in vectors:
            total += quantizer.quantize(vector)
        quantizer.reduce(total)
        clipped_sum = np.clip(vectors, -clip, clip).sum(axis=0)
        error = np.abs(quantizer.dequantize_sum(total, clients) - clipped_sum)
        assert error.max() <= quantizer.max_sum_error(clients) * (1 + 1e-9) + 1e-9 * clients * clip

    def test_the_finest_cohort_quantizer_fills_the_modulus_exactly(self):
        quantizer = Quantizer.for_cohort(1.0, 1000, 32)
        assert quantizer.max_clients() == 1000
        ones = np.full(4, 1.0)
        total = sum(quantizer.quantize(ones).astype(np.uint64) for _ in range(1000))
        assert int(total.max()) <= 2**32 - 1  # the largest possible sum still fits

    # overflow guard: (clients, modulus bits, levels) that must be refused
    @pytest.mark.parametrize(
        ("clients", "bits", "levels"), [(2, 8, 200), (1001, 32, 2**32 // 1000), (3, 2, 3)]
    )
    def test_overflow_guard_triggers(self, clients, bits, levels):
        quantizer = Quantizer(clip=1.0, levels=levels, modulus_bits=bits)
        with pytest.raises(OptionError, match="overflow"):
            quantizer.check_capacity(clients)
        with pytest.raises(OptionError, match="overflow"):
            SecAggServer(clients, quantizer, 8)

    def test_overflow_guard_is_needed(self):
        """Without the guard, one more client would wrap the sum around and corrupt it."""
        quantizer = Quantizer.for_cohort(1.0, 10, 8)
        total = np.zeros(1, dtype=np.uint32)
        for _ in range(11):
            total += quantizer.quantize(np.array([1.0]))
        assert int(quantizer.reduce(total)[0]) != 11 * (quantizer.levels - 1)

    # invalid settings: (clip, levels, bits)
    @pytest.mark.parametrize(
        ("clip", "levels", "bits"), [(0.0, 10, 32), (float("nan"), 10, 32), (1.0, 1, 32), (1.0, 2, 65)]
    )
    def test_bad_settings_are_refused(self, clip, levels, bits):
        with pytest.raises(OptionError):
            Quantizer(clip=clip, levels=levels, modulus_bits=bits)

    def test_non_finite_updates_are_refused(self):
        with pytest.raises(OptionError, match="NaN"):
            Quantizer.for_cohort(1.0, 2).quantize(np.array([0.0, np.nan]))


class TestShamir:
    @given(
        secret=st.binary(min_size=32, max_size=32),
        holders=st.sets(st.integers(1, 5000), min_size=1, max_size=12),
        data=st.data(),
    )
    @settings(max_examples=50, deadline=None)
    def test_any_threshold_subset_recovers_the_secret(self, secret, holders, data):
        threshold = data.draw(st.integers(1, len(holders)))
        shares = split(secret, holders, threshold, SecretSource.from_seed(data.draw(st.integers(0, 99))))
        assert set(shares) == holders and all(len(s) == SHARE_BYTES for s in shares.values())
        subset = data.draw(st.sets(st.sampled_from(sorted(holders)), min_size=threshold, max_size=threshold))
        assert combine({x: shares[x] for x in subset}, threshold) == secret

    def test_fewer_shares_than_the_threshold_are_refused(self):
        shares = split(bytes(range(32)), range(1, 6), 3, SecretSource.from_seed(1))
        with pytest.raises(SecAggError, match="threshold 3"):
            combine({1: shares[1], 2: shares[2]}, 3)

    def test_a_tampered_share_changes_the_result(self):
        secret = bytes(range(32))
        shares = split(secret, [1, 2, 3], 2, SecretSource.from_seed(2))
        bad = bytearray(shares[2])
        bad[-1] ^= 1
        try:
            recovered = combine({1: shares[1], 2: bytes(bad)}, 2)
        except SecAggError:
            return  # out-of-range result: detected outright
        assert recovered != secret


class TestGraph:
    @given(n=st.integers(3, 400), seed=st.integers(0, 2**32 - 1))
    @settings(max_examples=40, deadline=None)
    def test_the_graph_is_regular_symmetric_and_seeded(self, n, seed):
        degree = default_degree(n)
        graph = random_regular_graph(n, degree, seed)
        assert all(len(neighbours) == degree for neighbours in graph)
        assert all(i not in graph[i] for i in range(n))
        assert all(i in graph[j] for i in range(n) for j in graph[i])
        assert graph == random_regular_graph(n, degree, seed)
        assert is_connected(set(range(n)), graph)

    def test_degree_grows_logarithmically(self):
        assert [default_degree(n) for n in (10, 100, 1000, 10000)] == [9, 20, 30, 40]

    def test_disconnected_survivors_are_detected(self):
        ring = random_regular_graph(12, 2, seed=0)  # a cycle
        order = [0]
        while len(order) < 12:
            order.append(next(p for p in ring[order[-1]] if p not in order))
        assert not is_connected(set(order) - {order[3], order[9]}, ring)

    @pytest.mark.parametrize(("threshold", "degree"), [(5, 10), (11, 10), (1, 2)])
    def test_a_threshold_must_be_a_strict_majority(self, threshold, degree):
        with pytest.raises(OptionError, match="threshold"):
            check_threshold(threshold, degree)


class TestMasks:
    @pytest.mark.parametrize("prg", PRGS)
    def test_masks_cancel_and_are_chunk_independent(self, prg, monkeypatch):
        key = bytes(range(32))
        whole = expand_mask(key, 5000, np.uint32, prg)
        monkeypatch.setattr("fedimage.privacy.secagg.masks.CHUNK_BYTES", 1000)
        assert np.array_equal(expand_mask(key, 5000, np.uint32, prg), whole)
        accumulator = np.arange(5000, dtype=np.uint32)
        apply_masks(accumulator, add=[key, b"\x01" * 32], subtract=[b"\x01" * 32, key], prg=prg)
        assert np.array_equal(accumulator, np.arange(5000, dtype=np.uint32))

    def test_different_keys_and_generators_give_different_masks(self):
        a = expand_mask(b"\x00" * 32, 64, np.uint64)
        assert not np.array_equal(a, expand_mask(b"\x00" * 31 + b"\x01", 64, np.uint64))
        assert not np.array_equal(a, expand_mask(b"\x00" * 32, 64, np.uint64, "aes-ctr"))

    def test_unknown_generator_is_refused(self):
        with pytest.raises(OptionError, match="chacha20"):
            expand_mask(b"\x00" * 32, 4, np.uint32, "numpy")
