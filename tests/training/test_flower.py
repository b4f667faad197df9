"""Flower integration: partition ids and client data (``fedimage.loaders.flower``), and the Flower engine.

One test runs the real Ray-backed simulation through ``fedimage train --engine flower`` and
checks it against fedimage's rounds in one process; the rounds and the ClientApp themselves are
tested in ``tests/federation``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import descendants, fast_options, is_loopback_address, listening_addresses

from fedimage import ImageOptions, convert, open_source
from fedimage.cli import main
from fedimage.errors import OptionError
from fedimage.store.reader import FederatedStore

torch = pytest.importorskip("torch")
pytest.importorskip("flwr")
pytest.importorskip("dp_accounting")
pytest.importorskip("matplotlib")


from fedimage.loaders.flower import (  # noqa: E402
    StorePartitioner,
    load_central,
    load_client,
    partition_user_ids,
)
from fedimage.training.models import build_model  # noqa: E402

pytestmark = pytest.mark.slow  # Ray, Flower, pfl, training or a docs build: `make test-fast` skips it

TINY = ["--model", "cnn", "--image-size", "24", "--rounds", "2", "--eval-every", "1", "--batch-size", "4"]
CROP = 24


@pytest.fixture
def store_path(flair_folder: Path, tmp_path: Path) -> Path:
    """The FLAIR miniature of conftest (4 train users, 1 val, 1 test) at 28 px."""
    path = tmp_path / "store.h5"
    convert(open_source(flair_folder), path, fast_options(image=ImageOptions(size=28)))
    return path


@pytest.fixture(autouse=True)
def task_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    """The run identity Flower's runtime sets before a ServerApp creates messages (restored afterwards)."""
    from flwr.supercore.task_identity import TaskIdentity

    for name, value in (("_run_id", 1), ("_task_id", 1), ("_node_id", 1)):
        if getattr(TaskIdentity, name) is None:
            monkeypatch.setattr(TaskIdentity, name, value)


# --- partition ids ---------------------------------------------------------------------------------


class TestPartitionIds:
    def test_sorted_users_both_ways(self, store_path: Path):
        with FederatedStore(store_path) as store:
            partitioner = StorePartitioner(store, "train")
            users = sorted(store.users("train"))
            assert partitioner.num_partitions == len(users) == 4
            assert partitioner.user_ids == users == partition_user_ids(store, "train")
            assert [partitioner.user_id(i) for i in range(4)] == users
            assert [partitioner.partition_id(user) for user in users] == [0, 1, 2, 3]
            assert partitioner.user_id(np.int64(2)) == users[2]

    def test_stable_across_openings_and_pickling(self, store_path: Path):
        import pickle

        first = StorePartitioner(store_path, "train")
        again = pickle.loads(pickle.dumps(first))
        assert again.user_ids == first.user_ids and again._store is None
        images, _ = again.load_arrays(1)
        assert len(images) == FederatedStore(store_path).users("train")[first.user_id(1)]

    def test_an_encrypted_store_travels_with_its_key(self, flair_folder: Path, tmp_path: Path):
        import pickle

        pytest.importorskip("cryptography")
        key = bytes(range(32))
        path = tmp_path / "encrypted.h5"
        convert(open_source(flair_folder), path, fast_options(image=ImageOptions(size=28), encrypt_key=key))
        with FederatedStore(path, key=key) as store:
            copy = pickle.loads(pickle.dumps(StorePartitioner(store, "train")))  # what a client gets
            expected = store.load_user("train", copy.user_id(2)).images
            images, _ = copy.load_arrays(2)
            np.testing.assert_array_equal(images, expected)
            central = load_central(store, "val", batch_size=8)
            assert len(next(iter(central))[0]) == store.num_images("val")

    # (argument, message)
    @pytest.mark.parametrize(
        ("partition_id", "message"),
        [
            (4, "out of range"),
            (-1, "out of range"),
            ("0", "must be an integer"),
            (True, "must be an integer"),
        ],
    )
    def test_bad_partition_id(self, store_path: Path, partition_id: Any, message: str):
        with pytest.raises(OptionError, match=message):
            StorePartitioner(store_path).user_id(partition_id)

    def test_unknown_user_and_bad_options(self, store_path: Path):
        with pytest.raises(OptionError, match="'nobody' is not in split 'train'"):
            StorePartitioner(store_path).partition_id("nobody")
        with pytest.raises(OptionError, match="`labels` must be one of"):
            StorePartitioner(store_path, labels="medium")
        with pytest.raises(OptionError, match="max_images_per_user must be >= 1"):
            StorePartitioner(store_path, max_images_per_user=0)


# --- client and central data -----------------------------------------------------------------------


class TestClientData:
    def test_partition_equals_the_stores_user(self, store_path: Path):
        with FederatedStore(store_path) as store:
            partitioner = StorePartitioner(store, "train", labels="fine", max_images_per_user=2)
            for partition in range(partitioner.num_partitions):
                user = store.load_user("train", partitioner.user_id(partition))
                images, targets = partitioner.load_partition(partition).tensors
                assert images.dtype == torch.uint8 and targets.dtype == torch.float32
                np.testing.assert_array_equal(images.numpy(), user.images[:2])
                np.testing.assert_array_equal(targets.numpy(), user.fine_labels[:2])

    def test_load_client_shuffles_reproducibly(self, store_path: Path):
        with FederatedStore(store_path) as store:
            user = store.load_user("train", partition_user_ids(store, "train")[0])

        def batches(seed: int | None) -> list[np.ndarray]:
            loader = load_client(store_path, 0, batch_size=3, seed=seed)
            return [images.numpy() for images, _ in loader]

        assert len(user) == 4
        assert all(np.array_equal(a, b) for a, b in zip(batches(5), batches(5), strict=True))
        np.testing.assert_array_equal(np.concatenate(batches(None)), user.images)
        shuffled = np.concatenate(batches(5))
        assert sorted(map(bytes, shuffled)) == sorted(map(bytes, user.images))

    def test_central_split_in_store_order(self, store_path: Path):
        with FederatedStore(store_path) as store:
            expected = np.concatenate([data.images for data in store.iter_users("val")])
            targets = np.concatenate([data.labels for data in store.iter_users("val")])
            loader = load_central(store, "val", batch_size=1)
        images, labels = zip(*loader, strict=True)
        np.testing.assert_array_equal(torch.cat(images).numpy(), expected)
        np.testing.assert_array_equal(torch.cat(labels).numpy(), targets)


# --- fedimage train --engine flower ----------------------------------------------------------------


def run_train(store: Path, out: Path, *extra: str) -> int:
    return main(["train", str(store), "-o", str(out), *TINY, "--engine", "flower", *extra])


def test_simulation_writes_every_output(store_path: Path, tmp_path: Path, capsys, monkeypatch):
    """The real thing: Flower's Ray simulation engine, 6 SuperNodes (train, val and test clients),
    2 rounds of FedAvg with DP and SecAgg+ over Flower messages, federated validation and test.

    Its Ray instance listens on loopback only (checked right after Flower starts it), and it gives
    the model fedimage's rounds give in one process (the code path of a deployment).
    """
    from flower_helpers import LocalGrid
    from flwr.server.superlink.fleet.vce.backend.raybackend import RayBackend

    from fedimage.federation.client_app import make_client_app
    from fedimage.federation.client_data import SimulationDirectory
    from fedimage.federation.server_loop import ClientDirectory, FederatedRounds
    from fedimage.training.engines.flower import federation_settings
    from fedimage.training.options import DPOptions, SecAggOptions, TrainOptions
    from fedimage.training.privacy import calibrate

    seen: list[set[str]] = []
    original = RayBackend.init_ray

    def init_and_look(self, backend_config):
        original(self, backend_config)
        seen.append(listening_addresses(descendants(os.getpid())))

    monkeypatch.setattr(RayBackend, "init_ray", init_and_look)
    out = tmp_path / "flower"
    dp = ["--dp-epsilon", "8", "--dp-delta", "1e-3", "--clip", "0.5"]
    flags = ["--strategy", "fedavg", "--cohort-size", "3", *dp, "--secure-aggregation"]
    assert run_train(store_path, out, *flags) == 0
    assert seen and seen[0] and all(is_loopback_address(address) for address in seen[0]), seen
    assert {p.name for p in out.iterdir()} >= {"metrics.jsonl", "summary.json", "curves.png", "checkpoint.pt"}
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [record["round"] for record in records] == [1, 2]
    assert all(record["train"]["train loss"] > 0 and "macro AP" in record["val"] for record in records)
    assert all(record["val_clients"]["clients"] == 1 for record in records)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["engine"] == "flower" and summary["config"]["strategy"] == "fedavg"
    assert summary["rounds_run"] == 2 == summary["completed_rounds"] and summary["cohort_size"] == 3
    assert summary["best_round"] in (1, 2)
    assert [len(record["contributors"]) for record in summary["rounds"]] == [3, 3]
    assert all(record["secure_aggregation"]["survivors"]["unmask"] == 3 for record in summary["rounds"])
    assert summary["secure_aggregation"]["protocol"].startswith("SecAgg+")
    assert set(summary["client_evaluation"]) == {"val", "test"}
    assert 0 <= summary["test"]["macro AP"] <= 1 and summary["test_prevalence_baseline"]["images"] == 2
    privacy = summary["privacy"]
    assert privacy["population"] == 4 and privacy["sampling_probability"] == 0.75
    assert privacy["rounds_run"] == 2 and 0 < privacy["epsilon_spent"] <= 8.0
    captured = capsys.readouterr()
    assert "round     2" in captured.out and "epsilon spent" in captured.out
    assert "deprecated" not in captured.err

    # the same rounds in one process (the ServerApp/ClientApp of a deployment) give the same model
    config = TrainOptions(
        model="cnn", image_size=CROP, rounds=2, eval_every=1, local_batch_size=4, strategy="fedavg",
        cohort_size=3, dp=DPOptions(epsilon=8, delta=1e-3, clip=0.5), secure_aggregation=SecAggOptions(),
    )  # fmt: skip
    calibration = calibrate(8, 1e-3, rounds=2, cohort_size=3, population=4)
    settings = federation_settings(
        config, num_outputs=3, crop=CROP, cohort_size=3, calibration=calibration, secagg_range=0.5,
        validate=True, test=True, noise_seed=config.seed,
    )  # fmt: skip
    directory = SimulationDirectory(store_path)
    grid = LocalGrid(make_client_app(directory), directory.num_partitions)
    torch.manual_seed(config.seed)
    model = build_model("cnn", 3, CROP)
    rounds = FederatedRounds(grid, settings, model, ClientDirectory())
    result = rounds.run()
    assert [r["cohort"] for r in result.rounds] == [r["cohort"] for r in summary["rounds"]]
    assert result.best_round == summary["best_round"]
    state = torch.load(out / "checkpoint.pt", weights_only=True)["state_dict"]
    simulated = np.concatenate([t.double().numpy().ravel() for t in state.values() if t.is_floating_point()])
    step = 2 * 0.5 / (2**32 // 3)
    np.testing.assert_allclose(simulated, rounds.best_vector, rtol=1e-4, atol=step + 1e-6)


# (flags, message)
@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ["--dp-epsilon", "2", "--dp-delta", "1e-5", "--clip", "1", "--adaptive-clip", "0.5"],
            "--adaptive-clip is not available with --engine flower",
        ),
        (
            ["--secure-aggregation", "--secagg-dropout", "0.1"],
            "--secagg-dropout simulates dropouts in the pfl engine",
        ),
    ],
)
def test_refused_options_are_one_line_errors(store_path: Path, tmp_path: Path, capsys, flags, message):
    assert run_train(store_path, tmp_path / "bad", *flags) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_strategy_needs_flower_engine(store_path: Path, tmp_path: Path, capsys):
    assert main(["train", str(store_path), "-o", str(tmp_path / "x"), *TINY, "--strategy", "fedavg"]) == 2
    assert "--strategy fedavg needs --engine flower" in capsys.readouterr().err
