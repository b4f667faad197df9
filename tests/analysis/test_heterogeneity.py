"""Heterogeneity measures: checked against scipy, extreme cases, stores read without pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import fast_options

import fedimage
from fedimage import ImageOptions, convert, open_source
from fedimage.analysis.heterogeneity import describe, heterogeneity_from_arrays, heterogeneity_from_store
from fedimage.partitioning import PartitionOptions, partition


def random_federation(seed: int = 0, images: int = 400, labels: int = 6, clients: int = 12):
    rng = np.random.default_rng(seed)
    multi_hot = (rng.random((images, labels)) < rng.uniform(0.05, 0.6, labels)).astype(np.float32)
    return rng.integers(0, clients, images), multi_hot


def dense_distributions(clients: np.ndarray, multi_hot: np.ndarray, num_clients: int):
    counts = np.zeros((num_clients, multi_hot.shape[1]))
    np.add.at(counts, clients, multi_hot)
    return counts / counts.sum(axis=1, keepdims=True), counts.sum(axis=0) / counts.sum()


class TestMeasures:
    def test_against_scipy(self):
        distance = pytest.importorskip("scipy.spatial.distance")
        optimize = pytest.importorskip("scipy.optimize")
        clients, multi_hot = random_federation()
        stats = heterogeneity_from_arrays(clients, multi_hot)
        measures = stats.levels["coarse"].measures
        p, q = dense_distributions(clients, multi_hot, 12)
        labels = len(q)
        cost = 1.0 - np.eye(labels)  # 0-1 ground metric
        for k in range(12):
            assert measures["jensen_shannon"][k] == pytest.approx(distance.jensenshannon(p[k], q, base=2))
            bhattacharyya = np.sqrt(p[k] * q).sum()
            assert measures["hellinger"][k] == pytest.approx(np.sqrt(1 - bhattacharyya))
            # earth mover's distance as the transport linear program
            equalities = np.vstack(
                [np.kron(np.eye(labels), np.ones(labels)), np.kron(np.ones(labels), np.eye(labels))]
            )
            emd = optimize.linprog(cost.ravel(), A_eq=equalities, b_eq=np.r_[p[k], q], bounds=(0, None)).fun
            assert measures["emd"][k] == pytest.approx(emd, abs=1e-7)
            present = p[k] > 0
            entropy = -(p[k][present] * np.log(p[k][present])).sum()
            assert measures["effective_labels"][k] == pytest.approx(np.exp(entropy))
            assert measures["labels_present"][k] == present.sum()

    def test_identical_and_disjoint_clients(self):
        # clients 0 and 1 both see labels 0 and 1 equally: identical to the global distribution
        labels = [[0], [1], [0], [1]]
        stats = heterogeneity_from_arrays(np.array([0, 0, 1, 1]), labels)
        measures = stats.levels["coarse"].measures
        for name in ("hellinger", "jensen_shannon", "emd"):
            np.testing.assert_allclose(measures[name], 0, atol=1e-12)
        np.testing.assert_allclose(measures["effective_labels"], 2)
        # one label per client, four clients: every client is far from the uniform global mix
        stats = heterogeneity_from_arrays(np.arange(4), [[0], [1], [2], [3]])
        measures = stats.levels["coarse"].measures
        np.testing.assert_allclose(measures["emd"], 0.75)
        np.testing.assert_allclose(measures["effective_labels"], 1)

    def test_unlabeled_client_is_nan_and_left_out_of_summaries(self):
        stats = heterogeneity_from_arrays(
            np.array([0, 1, 1, 2]), [[0], [], [], [1]], client_ids=["a", "b", "c"]
        )
        assert np.isnan(stats.levels["coarse"].measures["hellinger"][1])
        summary = stats.summary()
        assert summary["coarse"]["hellinger"]["count"] == 2
        assert summary["images_per_client"]["max"] == 2
        assert stats.per_client()["coarse_hellinger"][1] is None
        assert describe(np.array([np.nan])) == {"count": 0}

    def test_skew_orders_schemes(self):
        labels = np.random.default_rng(3).integers(0, 10, 4000)
        multi_hot = np.eye(10)[labels]

        def mean_js(**options) -> float:
            clients = partition(4000, PartitionOptions(num_clients=40, **options), labels)
            return heterogeneity_from_arrays(clients, multi_hot).summary()["coarse"]["jensen_shannon"]["mean"]

        assert (
            mean_js(scheme="iid")
            < 0.15
            < mean_js(scheme="dirichlet", alpha=1.0)
            < mean_js(scheme="pathological", classes_per_client=1)
        )

    def test_frequencies_and_largest(self):
        clients, multi_hot = random_federation(seed=2)
        stats = heterogeneity_from_arrays(clients, multi_hot, fine_labels=multi_hot)
        largest = stats.largest(3)
        assert list(stats.sizes[largest]) == sorted(stats.sizes, reverse=True)[:3]
        expected = np.stack([multi_hot[clients == c].mean(axis=0) for c in largest])
        np.testing.assert_allclose(stats.frequencies("coarse", largest), expected)
        assert set(stats.summary()) == {"clients", "images", "images_per_client", "coarse", "fine"}

    def test_mismatched_lengths(self):
        with pytest.raises(ValueError, match="coarse labels have 2 rows for 3 client indices"):
            heterogeneity_from_arrays(np.array([0, 1, 2]), [[0], [1]])


def test_store_matches_arrays_and_reads_no_pixels(flair_folder: Path, tmp_path: Path, monkeypatch):
    output = tmp_path / "flair.h5"
    taxonomy = fedimage.load_taxonomy(flair_folder / "label_relationship.txt")
    convert(open_source(flair_folder), output, fast_options(image=ImageOptions(size=32)), taxonomy=taxonomy)
    with fedimage.open(output) as store:
        users = [(split, user) for split in store.splits for user in store.users(split)]
        loaded = [store.load_user(split, user) for split, user in users]
        monkeypatch.setattr(type(store), "_read_images", lambda *_: pytest.fail("read pixels"))
        from_store = heterogeneity_from_store(store)
    clients = np.concatenate([np.full(len(user), index) for index, user in enumerate(loaded)])
    from_arrays = heterogeneity_from_arrays(
        clients,
        np.concatenate([user.labels for user in loaded]),
        np.concatenate([user.fine_labels for user in loaded]),
        client_ids=[user for _, user in users],
    )
    assert from_store.client_ids == from_arrays.client_ids
    np.testing.assert_array_equal(from_store.sizes, from_arrays.sizes)
    for level in ("coarse", "fine"):
        for name, values in from_store.levels[level].measures.items():
            np.testing.assert_allclose(values, from_arrays.levels[level].measures[name], err_msg=name)
    assert from_store.summary()["fine"]["num_labels"] == 5
    only_train = heterogeneity_from_store(output, splits=["train"])
    assert only_train.num_clients == 4
