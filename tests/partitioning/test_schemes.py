"""Partitioners: sizes, minimums, determinism, order independence, label skew, errors, regrouping."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import fast_options
from hypothesis import given, settings
from hypothesis import strategies as st

import fedimage
from fedimage import ImageOptions, OptionError, convert, open_source
from fedimage.analysis.repartition import regroup_store, repartition_store
from fedimage.partitioning import (
    NO_LABEL,
    UNKEYED_SCHEMES,
    PartitionOptions,
    enforce_min_size,
    group_users,
    partition,
    partition_images,
    regroup,
    skew_labels,
)
from fedimage.partitioning.repair import donations


def sizes_of(clients: np.ndarray, num_clients: int) -> np.ndarray:
    return np.bincount(clients, minlength=num_clients)


def labels_per_client(clients: np.ndarray, labels: np.ndarray, num_clients: int) -> list[set[int]]:
    found: list[set[int]] = [set() for _ in range(num_clients)]
    for client, label in zip(clients.tolist(), labels.tolist(), strict=True):
        found[client].add(label)
    return found


LABELS = np.random.default_rng(0).integers(0, 10, 5000)

# scheme, extra options
ALL_SCHEMES = [
    ("iid", {}),
    ("quantity", {"size_sigma": 2.0}),
    ("quantity", {"size_distribution": "powerlaw", "size_exponent": 0.8}),
    ("dirichlet", {"alpha": 0.05}),
    ("dirichlet", {"alpha": 100.0}),
    ("shards", {"shards_per_client": 2}),
    ("pathological", {"classes_per_client": 3}),
]


class TestEverySchemeGuarantees:
    @pytest.mark.parametrize(("scheme", "extra"), ALL_SCHEMES)
    def test_sizes_minimum_and_determinism(self, scheme, extra):
        options = PartitionOptions(scheme, num_clients=40, min_per_client=20, seed=7, **extra)
        clients = partition(len(LABELS), options, LABELS)
        sizes = sizes_of(clients, 40)
        assert clients.dtype == np.int64 and clients.shape == LABELS.shape
        assert sizes.sum() == len(LABELS) and len(sizes) == 40
        assert sizes.min() >= 20
        np.testing.assert_array_equal(clients, partition(len(LABELS), options, LABELS))
        other_seed = PartitionOptions(scheme, num_clients=40, min_per_client=20, seed=8, **extra)
        assert not np.array_equal(clients, partition(len(LABELS), other_seed, LABELS))

    @pytest.mark.parametrize("scheme", sorted(UNKEYED_SCHEMES))
    def test_impossible_minimum_is_a_clear_error(self, scheme):
        with pytest.raises(OptionError, match=r"cannot give 11 clients at least 10 images each: .* only 100"):
            partition(100, PartitionOptions(scheme, num_clients=11, min_per_client=10), LABELS[:100])

    def test_exactly_feasible_minimum(self):
        for scheme in UNKEYED_SCHEMES:
            options = PartitionOptions(scheme, num_clients=10, min_per_client=10, classes_per_client=10)
            assert (sizes_of(partition(100, options, np.arange(100) % 10), 10) == 10).all()


class TestSchemes:
    def test_iid_is_a_shuffle_not_blocks(self):
        clients = partition(1000, PartitionOptions("iid", num_clients=10, seed=1))
        assert set(np.unique(sizes_of(clients, 10))) == {100}
        assert len(set(clients[:100].tolist())) > 5

    def test_dirichlet_skew_follows_alpha(self):
        def mean_labels(alpha: float) -> float:
            clients = partition(5000, PartitionOptions("dirichlet", num_clients=20, alpha=alpha), LABELS)
            return np.mean([len(s) for s in labels_per_client(clients, LABELS, 20)])

        assert mean_labels(0.01) < 3 < 9.5 < mean_labels(1000.0)

    @pytest.mark.parametrize("alpha", [1e-9, 1e-4, 0.01])
    def test_dirichlet_tiny_alpha_terminates_with_minimum(self, alpha):
        labels = np.random.default_rng(1).integers(0, 3, 20_000)
        options = PartitionOptions("dirichlet", num_clients=500, min_per_client=30, alpha=alpha)
        assert sizes_of(partition(len(labels), options, labels), 500).min() >= 30

    def test_shards_hold_two_labels_when_shards_align(self):
        labels = np.repeat(np.arange(10), 100)  # 40 shards of 25: a shard never spans labels
        clients = partition(1000, PartitionOptions("shards", num_clients=20, shards_per_client=2), labels)
        assert all(1 <= len(held) <= 2 for held in labels_per_client(clients, labels, 20))
        assert (sizes_of(clients, 20) == 2 * 25).all()

    def test_pathological_holds_exactly_k_labels_even_after_repair(self):
        labels = np.r_[np.zeros(2000, int), np.ones(1000, int), np.full(30, 2), np.full(30, 3)]
        options = PartitionOptions(
            "pathological", num_clients=30, classes_per_client=2, min_per_client=40, seed=3
        )
        clients = partition(len(labels), options, labels)
        assert sizes_of(clients, 30).min() >= 40
        assert all(len(held) <= 2 for held in labels_per_client(clients, labels, 30))
        assert set(labels_per_client(clients, labels, 30)[0]) <= {0, 1, 2, 3}

    def test_pathological_minimum_unreachable_with_own_labels(self):
        labels = np.r_[np.zeros(1000, int), np.ones(5, int)]
        options = PartitionOptions("pathological", num_clients=4, classes_per_client=1, min_per_client=10)
        with pytest.raises(OptionError, match=r"pathological: client \d+ holds labels \[1\]"):
            partition(len(labels), options, labels)

    def test_quantity_sizes_are_skewed_and_sigma_zero_is_even(self):
        skewed = sizes_of(partition(10_000, PartitionOptions("quantity", num_clients=50, size_sigma=2)), 50)
        even = sizes_of(partition(10_000, PartitionOptions("quantity", num_clients=50, size_sigma=0)), 50)
        assert skewed.max() > 5 * skewed.min()
        assert even.max() - even.min() <= 1


class TestBadInput:
    # options, message
    CASES = [
        ({"scheme": "random"}, "unknown partition scheme 'random'; choose one of: iid, dirichlet"),
        ({"num_clients": 0}, "num_clients must be an integer >= 1"),
        ({"min_per_client": -1}, "min_per_client must be an integer >= 0"),
        ({"alpha": 0.0}, "alpha must be a positive number"),
        ({"alpha": float("nan")}, "alpha must be a positive number"),
        ({"size_distribution": "zipf"}, "unknown size distribution 'zipf'"),
        ({"size_sigma": -1.0}, "size_sigma must be a non-negative number"),
        ({"classes_per_client": 2.5}, "classes_per_client must be an integer >= 1"),
    ]

    @pytest.mark.parametrize(("options", "message"), CASES)
    def test_options(self, options, message):
        with pytest.raises(OptionError, match=message):
            PartitionOptions(**options)

    def test_label_schemes_need_one_label_per_image(self):
        with pytest.raises(OptionError, match="the 'dirichlet' scheme skews labels"):
            partition(10, PartitionOptions("dirichlet"))
        with pytest.raises(OptionError, match=r"needs one label per image: got labels of shape \(10, 3\)"):
            partition(10, PartitionOptions("shards"), np.zeros((10, 3), int))
        with pytest.raises(OptionError, match="labels must be integers"):
            partition(3, PartitionOptions("dirichlet", num_clients=2), np.array([0.5, 1.0, 2.0]))

    def test_scheme_specific_limits(self):
        with pytest.raises(OptionError, match="only 2 distinct labels"):
            partition(
                10, PartitionOptions("pathological", num_clients=2, classes_per_client=3), np.arange(10) % 2
            )
        with pytest.raises(OptionError, match="cannot cover the 10 labels"):
            partition(
                100,
                PartitionOptions("pathological", num_clients=4, classes_per_client=2),
                np.arange(100) % 10,
            )
        with pytest.raises(OptionError, match="20 shards, more than the 10 images"):
            partition(10, PartitionOptions("shards", num_clients=10, shards_per_client=2), np.zeros(10, int))

    def test_duplicate_image_ids(self):
        with pytest.raises(OptionError, match="image id 'a' appears more than once"):
            partition_images(["a", "b", "a"], PartitionOptions(num_clients=1))


class TestSkewLabels:
    def test_rarest_label_ties_by_index_and_unlabeled(self):
        multi_hot = np.array([[1, 1, 0], [1, 0, 1], [0, 1, 1], [1, 0, 0], [0, 0, 0]])
        # counts: label0 3, label1 2, label2 2 -> rarest of {0,1} is 1; of {1,2} a tie -> 1
        np.testing.assert_array_equal(skew_labels(multi_hot), [1, 2, 1, 0, NO_LABEL])
        lists = [[0, 1], [2, 0], [1, 2], [0], []]
        np.testing.assert_array_equal(skew_labels(lists), skew_labels(multi_hot))

    def test_random_is_seeded_and_picks_own_labels(self):
        lists = [[0, 1, 2, 3]] * 200 + [[5]]
        a, b = skew_labels(lists, "random", seed=1), skew_labels(lists, "random", seed=1)
        np.testing.assert_array_equal(a, b)
        assert set(a[:200].tolist()) == {0, 1, 2, 3} and a[200] == 5
        assert not np.array_equal(a, skew_labels(lists, "random", seed=2))

    def test_errors(self):
        with pytest.raises(OptionError, match="unknown skew label strategy 'first'"):
            skew_labels([[0]], "first")
        with pytest.raises(OptionError, match=r"image 1 has a negative label index: \[-2\]"):
            skew_labels([[0], [-2]])
        with pytest.raises(OptionError, match="2-D multi-hot array"):
            skew_labels(np.zeros(3))


def test_repair_moves_exactly_the_deficit_from_the_largest():
    sizes = np.array([50, 10, 0, 30, 2])
    gives = donations(sizes, needed=14, floor=5)  # client 2 needs 5... lowered from the top
    assert gives.sum() == 14 and gives.tolist() == [14, 0, 0, 0, 0]
    assignment = np.repeat(np.arange(5), sizes)
    repaired = enforce_min_size(assignment, 5, 5, np.random.default_rng(0))
    assert sizes_of(repaired, 5).tolist() == [42, 10, 5, 30, 5]
    assert (repaired != assignment).sum() == 8


@st.composite
def partition_cases(draw):
    num_images = draw(st.integers(1, 400))
    num_clients = draw(st.integers(1, min(num_images, 30)))
    minimum = draw(st.integers(0, num_images // num_clients))
    num_labels = draw(st.integers(1, 6))
    labels = draw(st.lists(st.integers(0, num_labels - 1), min_size=num_images, max_size=num_images))
    scheme = draw(st.sampled_from(sorted(UNKEYED_SCHEMES)))
    extra = {
        "alpha": draw(st.sampled_from([1e-6, 0.1, 1.0, 1e4])),
        "shards_per_client": draw(st.integers(1, max(1, num_images // num_clients))),
        "classes_per_client": draw(st.integers(1, 3)),
        "size_distribution": draw(st.sampled_from(["lognormal", "powerlaw"])),
    }
    seed = draw(st.integers(0, 2**32 - 1))
    return np.asarray(labels), PartitionOptions(scheme, num_clients, minimum, seed, **extra)


@settings(max_examples=150, deadline=None)
@given(case=partition_cases(), permutation_seed=st.integers(0, 1000))
def test_partition_properties(case, permutation_seed):
    labels, options = case
    ids = [f"img{i:04d}" for i in range(len(labels))]
    try:
        clients = partition(len(labels), options, labels)
    except OptionError as error:  # only the documented, scheme-specific impossibilities
        assert any(
            text in str(error)
            for text in ("distinct labels", "cannot cover", "shards, more than", "cannot spare")
        )
        return
    sizes = sizes_of(clients, options.num_clients)
    assert sizes.sum() == len(labels) and len(sizes) == options.num_clients
    assert sizes.min() >= options.min_per_client
    np.testing.assert_array_equal(clients, partition(len(labels), options, labels))
    # the same images given in another order map to the same clients
    order = np.random.default_rng(permutation_seed).permutation(len(labels))
    shuffled = partition_images([ids[i] for i in order], options, labels[order])
    assert shuffled == dict(zip(ids, clients.tolist(), strict=True))


class TestRegrouping:
    def test_group_users_sizes_seed_and_order(self):
        users = [f"u{i}" for i in range(23)]
        groups = group_users(users, 5, seed=3)
        assert sorted(np.bincount(list(groups.values())).tolist()) == [3, 5, 5, 5, 5]
        assert group_users(list(reversed(users)) + users[:4], 5, seed=3) == groups
        assert group_users(users, 5, seed=4) != groups
        with pytest.raises(OptionError, match="group_size must be an integer >= 1"):
            group_users(users, 0)

    def test_regroup_per_image(self):
        images = ["b", "a", "b", "c"]
        clients = regroup(images, 2, seed=0)
        assert clients[0] == clients[2] and len(set(clients.tolist())) == 2


@pytest.fixture
def flair_store(flair_folder: Path, tmp_path: Path) -> Path:
    output = tmp_path / "flair.h5"
    taxonomy = fedimage.load_taxonomy(flair_folder / "label_relationship.txt")
    convert(open_source(flair_folder), output, fast_options(image=ImageOptions(size=32)), taxonomy=taxonomy)
    return output


class TestStores:
    def test_repartition_store(self, flair_store: Path):
        with fedimage.open(flair_store) as store:
            ids = {i for s in store.splits for u in store.users(s) for i in store.load_user(s, u).image_ids}
        options = PartitionOptions("dirichlet", num_clients=3, min_per_client=2, alpha=0.5, seed=1)
        mapping = repartition_store(flair_store, options, labels="fine")
        assert set(mapping) == ids
        assert np.bincount(list(mapping.values())).min() >= 2
        assert repartition_store(flair_store, options, labels="fine") == mapping
        iid = repartition_store(flair_store, PartitionOptions(num_clients=14))
        assert sorted(iid.values()) == list(range(14))

    def test_regroup_store_keeps_users_together(self, flair_store: Path):
        mapping = regroup_store(flair_store, group_size=2, seed=5)
        with fedimage.open(flair_store) as store:
            for split in store.splits:
                for user in store.users(split):
                    groups = {mapping[i] for i in store.load_user(split, user).image_ids}
                    assert len(groups) == 1
        assert sorted(set(mapping.values())) == [0, 1, 2]
