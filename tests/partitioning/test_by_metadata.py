"""Partitions by metadata: one client per column value, and a noisy ranking by a numeric column."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedimage.errors import OptionError
from fedimage.partitioning.by_metadata import column_partition, continuous_partition


def test_one_client_per_distinct_value_in_sorted_order():
    keys = np.array(["site-b", "site-a", "site-c", "site-b", "site-a"], dtype=object)
    assert column_partition(keys).tolist() == [1, 0, 2, 1, 0]
    assert column_partition(np.array([30, 10, 30])).tolist() == [1, 0, 1]


def test_column_values_missing_or_too_small_are_one_line_errors():
    with pytest.raises(OptionError, match="no value for 2 images \\(the first: image 1"):
        column_partition(np.array(["a", None, "b", float("nan")], dtype=object))
    with pytest.raises(OptionError, match="value 'c' has 1 images, fewer than `min_per_client` 2"):
        column_partition(np.array(["a", "a", "b", "b", "c"], dtype=object), min_per_client=2)


@given(st.lists(st.sampled_from(["x", "y", "z", "w"]), min_size=1, max_size=60))
def test_images_share_a_client_exactly_when_they_share_a_value(keys: list[str]):
    array = np.array(keys, dtype=object)
    clients = column_partition(array)
    assert np.array_equal(array[:, None] == array[None, :], clients[:, None] == clients[None, :])
    assert sorted(set(clients.tolist())) == list(range(len(set(keys))))


def test_full_strictness_cuts_the_sorted_values_into_equal_clients():
    values = np.random.default_rng(0).permutation(100).astype(float)
    clients = continuous_partition(values, num_clients=4, strictness=1.0, seed=3)
    assert np.bincount(clients).tolist() == [25, 25, 25, 25]
    for client in range(3):  # each client's values all lie below the next client's
        assert values[clients == client].max() < values[clients == client + 1].min()


def test_strictness_moves_from_iid_to_sorted():
    values = np.linspace(0, 1, 2000)

    def rank_correlation(strictness: float) -> float:
        clients = continuous_partition(values, num_clients=10, strictness=strictness, seed=7)
        return float(np.corrcoef(values, clients)[0, 1])

    correlations = [rank_correlation(s) for s in (0.0, 0.3, 0.7, 1.0)]
    assert abs(correlations[0]) < 0.1
    assert correlations == sorted(correlations) and correlations[-1] > 0.99


def test_continuous_is_seeded_and_checks_its_input():
    values = np.random.default_rng(1).normal(size=300)
    same = continuous_partition(values, 5, 0.5, seed=4)
    assert np.array_equal(same, continuous_partition(values, 5, 0.5, seed=4))
    assert not np.array_equal(same, continuous_partition(values, 5, 0.5, seed=5))
    with pytest.raises(OptionError, match="`strictness` must be between 0 and 1"):
        continuous_partition(values, 5, 1.5)
    with pytest.raises(OptionError, match="image 2 \\(in id order\\) is nan"):
        continuous_partition(np.array([1.0, 2.0, np.nan]), 1)
    with pytest.raises(OptionError, match="same value for every image"):
        continuous_partition(np.ones(10), 2, 0.5)
    assert np.bincount(continuous_partition(np.ones(10), 2, 0.0)).tolist() == [5, 5]
    with pytest.raises(OptionError, match="cannot give 4 clients at least 3 images"):
        continuous_partition(values[:10], 4, 1.0, min_per_client=3)
