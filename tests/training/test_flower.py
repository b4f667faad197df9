"""Flower integration: partition ids, client data, Flower's strategies on fedimage's ClientApp, the engine.

Most tests run Flower's own ``ServerApp``/``Strategy``/``ClientApp`` code in-process through a
minimal ``Grid`` (:class:`LocalGrid`) that hands each message to the ClientApp with the node's
``partition-id``, as Flower's simulation does; one test runs the real Ray-backed simulation
through ``fedimage train --engine flower``.
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
from fedimage.errors import FedimageError, OptionError
from fedimage.store.reader import FederatedStore

torch = pytest.importorskip("torch")
pytest.importorskip("flwr")
pytest.importorskip("dp_accounting")
pytest.importorskip("matplotlib")

from flwr.app import ArrayRecord, ConfigRecord, Context, Error, Message, RecordDict  # noqa: E402
from flwr.serverapp import Grid  # noqa: E402

from fedimage.loaders.flower import (  # noqa: E402
    StorePartitioner,
    load_central,
    load_client,
    partition_user_ids,
)
from fedimage.training.engines import flower_apps  # noqa: E402
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


class LocalGrid(Grid):
    """Flower's ``Grid`` interface delivering each message to a ClientApp in this process.

    Node ``100 + i`` has ``partition-id`` i (ids deliberately not equal to partitions).
    """

    def __init__(self, client_app: Any, num_partitions: int):
        self.client_app = client_app
        self.contexts = {
            100 + i: Context(
                run_id=1,
                node_id=100 + i,
                node_config={"partition-id": i, "num-partitions": num_partitions},
                state=RecordDict(),
                run_config={},
            )
            for i in range(num_partitions)
        }
        self.sent: list[Message] = []

    def set_run(self, run: Any) -> None:
        self._run = run

    @property
    def run(self) -> Any:
        return self._run

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None) -> Message:
        return Message(content, dst_node_id=dst_node_id, message_type=message_type, group_id=group_id)

    def get_node_ids(self) -> list[int]:
        return list(self.contexts)[::-1]  # any order: fedimage must not depend on it

    def push_messages(self, messages):
        raise NotImplementedError("LocalGrid answers in send_and_receive")

    def pull_messages(self, message_ids):
        raise NotImplementedError("LocalGrid answers in send_and_receive")

    def send_and_receive(self, messages, *, timeout=None) -> list[Message]:
        messages = list(messages)
        self.sent.extend(messages)
        return [self._reply(m) for m in messages][::-1]  # replies arrive in any order

    def _reply(self, message: Message) -> Message:
        """The ClientApp's reply; an exception becomes an error reply, as in Flower's runtime."""
        try:
            return self.client_app(message, self.contexts[message.metadata.dst_node_id])
        except Exception as error:
            return Message(Error(code=0, reason=f"{type(error).__name__}: {error}"), reply_to=message)


def recipe_for(store: FederatedStore, **overrides: Any) -> flower_apps.LocalRecipe:
    settings = {
        "model": "cnn",
        "num_outputs": len(store.label_names),
        "crop": CROP,
        "local_epochs": 1,
        "batch_size": 64,  # larger than any user: one local step
        "lr": 0.05,
        "seed": 3,
    }
    return flower_apps.LocalRecipe(**{**settings, **overrides})


def run_server(
    store: FederatedStore,
    strategy_name: str,
    *,
    rounds: int,
    cohort: int,
    recipe,
    seed: int = 0,
    client_recipe=None,
    **dp: Any,
) -> tuple[list[dict[str, Any]], LocalGrid, dict[str, Any]]:
    """Flower's ServerApp + strategy + fedimage's ClientApp in-process; global states after each round."""
    partitioner = StorePartitioner(store, "train", max_images_per_user=recipe.max_images_per_user)
    torch.manual_seed(0)
    initial = build_model(recipe.model, recipe.num_outputs, recipe.crop).state_dict()
    states: list[dict[str, Any]] = []
    recorder = flower_apps.MetricsRecorder()
    strategy = flower_apps.build_strategy(strategy_name, cohort_size=cohort, train_metrics=recorder, **dp)
    server = flower_apps.make_server_app(
        strategy,
        initial,
        rounds=rounds,
        num_nodes=partitioner.num_partitions,
        cohort_size=cohort,
        seed=seed,
        on_round=lambda r, state, metrics: states.append({k: v.clone() for k, v in state.items()}),
        recorder=recorder,
    )
    client_app = flower_apps.make_client_app(partitioner, client_recipe or recipe)
    grid = LocalGrid(client_app, partitioner.num_partitions)
    with flower_apps.quiet_flower():
        server(grid, Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config={}))
    return states, grid, initial


def client_update(store: FederatedStore, recipe, initial: dict, partition: int, server_round: int) -> dict:
    """What one client sends back, computed by hand with the same model, data and seed."""
    model = build_model(recipe.model, recipe.num_outputs, recipe.crop)
    model.load_state_dict(initial)
    images, targets = StorePartitioner(store, max_images_per_user=recipe.max_images_per_user).load_arrays(
        partition
    )
    flower_apps.local_train(
        model, images, targets, recipe, flower_apps.client_seed(recipe.seed, server_round, partition)
    )
    return model.state_dict()


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


# --- Flower's strategies on fedimage's ClientApp (in-process) --------------------------------------


class TestStrategies:
    def test_fedavg_round_is_the_mean_of_the_client_models(self, store_path: Path):
        with FederatedStore(store_path) as store:
            recipe = recipe_for(store)
            states, grid, initial = run_server(store, "fedavg", rounds=1, cohort=3, recipe=recipe)
            trained = [m for m in grid.sent if m.metadata.message_type == "train"]
            partitions = sorted(
                grid.contexts[m.metadata.dst_node_id].node_config["partition-id"] for m in trained
            )
            assert len(partitions) == 3 == len(set(partitions))
            updates = [client_update(store, recipe, initial, p, 1) for p in partitions]
        for name, value in states[0].items():
            expected = sum(update[name] for update in updates) / 3
            torch.testing.assert_close(value, expected, rtol=1e-5, atol=1e-6)
            assert not torch.equal(value, initial[name]) or name.endswith("bias")

    def test_fedadam_maps_flairs_server_adam(self, store_path: Path):
        """One round: x + eta_1 * m / (sqrt(v) + tau), m = (1 - b1) d, v = (1 - b2) d^2, d = mean - x."""
        eta, tau, (b1, b2) = 0.1, 0.01, (0.9, 0.99)
        with FederatedStore(store_path) as store:
            recipe = recipe_for(store)
            states, _, initial = run_server(
                store, "fedadam", rounds=1, cohort=4, recipe=recipe, server_lr=eta, server_eps=tau
            )
            updates = [client_update(store, recipe, initial, p, 1) for p in range(4)]
        eta_1 = eta * np.sqrt(1 - b2**2) / (1 - b1**2)  # Flower's bias correction counts from t + 1
        for name, value in states[0].items():
            delta = (sum(update[name] for update in updates) / 4 - initial[name]).double()
            step = eta_1 * (1 - b1) * delta / (torch.sqrt((1 - b2) * delta**2) + tau)
            torch.testing.assert_close(value.double(), initial[name].double() + step, rtol=1e-4, atol=1e-6)

    def test_dp_wrapper_clips_each_update(self, store_path: Path):
        """Flower's server-side fixed clipping, noise multiplier 0: the mean of updates clipped to 0.05."""
        clip = 0.05
        with FederatedStore(store_path) as store:
            recipe = recipe_for(store)
            states, _, initial = run_server(
                store, "fedavg", rounds=1, cohort=4, recipe=recipe, dp_noise_multiplier=0.0, dp_clip=clip
            )
            updates = [client_update(store, recipe, initial, p, 1) for p in range(4)]
        clipped = []
        for update in updates:
            delta = {name: update[name] - initial[name] for name in initial}
            norm = torch.sqrt(sum((d.double() ** 2).sum() for d in delta.values())).item()
            assert norm > clip  # so clipping is exercised
            clipped.append({name: d * (clip / norm) for name, d in delta.items()})
        for name, value in states[0].items():
            expected = initial[name] + sum(c[name] for c in clipped) / 4
            torch.testing.assert_close(value, expected, rtol=1e-4, atol=1e-7)

    def test_same_seed_same_rounds_and_pfl_cohorts(self, store_path: Path):
        pfl_integration = pytest.importorskip("fedimage.loaders.pfl")
        with FederatedStore(store_path) as store:
            recipe = recipe_for(store, local_epochs=2, batch_size=2)
            first, grid, _ = run_server(store, "fedadam", rounds=2, cohort=2, recipe=recipe, seed=11)
            again, _, _ = run_server(store, "fedadam", rounds=2, cohort=2, recipe=recipe, seed=11)
            other, _, _ = run_server(store, "fedadam", rounds=2, cohort=2, recipe=recipe, seed=12)
            sampler = pfl_integration.CohortSampler(partition_user_ids(store, "train"), 2, seed=11)
            pfl_cohorts = [sorted(sampler() for _ in range(2)) for _ in range(2)]
        assert len(first) == 2
        assert all(torch.equal(a[k], b[k]) for a, b in zip(first, again, strict=True) for k in a)
        assert not all(torch.equal(a[k], b[k]) for a, b in zip(first, other, strict=True) for k in a)
        users = partition_user_ids(FederatedStore(store_path), "train")
        trained = [  # in send order: each round's cohort of 2 after the other
            users[grid.contexts[m.metadata.dst_node_id].node_config["partition-id"]]
            for m in grid.sent
            if m.metadata.message_type == "train"
        ]
        assert [sorted(trained[i : i + 2]) for i in (0, 2)] == pfl_cohorts

    def test_client_reports_weight_one_and_its_partition(self, store_path: Path):
        with FederatedStore(store_path) as store:
            recipe = recipe_for(store)
            app = flower_apps.make_client_app(StorePartitioner(store), recipe)
            model = build_model(recipe.model, recipe.num_outputs, recipe.crop)
            content = RecordDict(
                {"arrays": ArrayRecord(model.state_dict()), "config": ConfigRecord({"server-round": 1})}
            )
            context = Context(
                run_id=1, node_id=7, node_config={"partition-id": 2}, state=RecordDict(), run_config={}
            )
            reply = app(Message(content, dst_node_id=7, message_type="train"), context)
            metrics = reply.content["metrics"]
            assert metrics["client-weight"] == 1.0 and metrics["local steps"] == 1
            queried = app(Message(RecordDict(), dst_node_id=7, message_type="query"), context)
            assert queried.content["metrics"]["partition-id"] == 2
            assert metrics["num-examples"] == store.users("train")[partition_user_ids(store, "train")[2]]
            evaluated = app(Message(content, dst_node_id=7, message_type="evaluate"), context)
            assert evaluated.content["metrics"]["loss"] > 0
            no_partition = Context(run_id=1, node_id=7, node_config={}, state=RecordDict(), run_config={})
            with pytest.raises(OptionError, match="no 'partition-id'"):
                app(Message(content, dst_node_id=7, message_type="train"), no_partition)

    def test_a_failing_client_stops_the_run(self, store_path: Path):
        with FederatedStore(store_path) as store:
            recipe = recipe_for(store)
            with pytest.raises(
                FedimageError, match=r"(?s)client of partition \d failed: RuntimeError.*size mismatch"
            ):
                run_server(
                    store,
                    "fedavg",
                    rounds=1,
                    cohort=2,
                    recipe=recipe,
                    client_recipe=recipe_for(store, num_outputs=9),
                )

    def test_dp_needs_fedavg(self):
        with pytest.raises(OptionError, match="needs `strategy` fedavg"):
            flower_apps.build_strategy("fedadam", cohort_size=2, dp_noise_multiplier=1.0, dp_clip=0.1)
        with pytest.raises(OptionError, match="unknown Flower strategy 'fedprox'"):
            flower_apps.build_strategy("fedprox", cohort_size=2)


# --- fedimage train --engine flower ----------------------------------------------------------------


def run_train(store: Path, out: Path, *extra: str) -> int:
    return main(["train", str(store), "-o", str(out), *TINY, "--engine", "flower", *extra])


def test_simulation_writes_every_output(store_path: Path, tmp_path: Path, capsys, monkeypatch):
    """The real thing: Flower's Ray simulation engine, 4 SuperNodes, 2 rounds of FedAvg with DP.

    Its Ray instance listens on loopback only (checked right after Flower starts it).
    """
    from flwr.server.superlink.fleet.vce.backend.raybackend import RayBackend

    seen: list[set[str]] = []
    original = RayBackend.init_ray

    def init_and_look(self, backend_config):
        original(self, backend_config)
        seen.append(listening_addresses(descendants(os.getpid())))

    monkeypatch.setattr(RayBackend, "init_ray", init_and_look)
    out = tmp_path / "flower"
    dp = ["--dp-epsilon", "8", "--dp-delta", "1e-3", "--clip", "0.5"]
    assert run_train(store_path, out, "--strategy", "fedavg", "--cohort-size", "3", *dp) == 0
    assert seen and seen[0] and all(is_loopback_address(address) for address in seen[0]), seen
    assert {p.name for p in out.iterdir()} >= {"metrics.jsonl", "summary.json", "curves.png", "checkpoint.pt"}
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [record["round"] for record in records] == [1, 2]
    assert all(record["train"]["train loss"] > 0 and "macro AP" in record["val"] for record in records)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["engine"] == "flower" and summary["config"]["strategy"] == "fedavg"
    assert summary["rounds_run"] == 2 and summary["cohort_size"] == 3 and summary["best_round"] in (1, 2)
    assert 0 <= summary["test"]["macro AP"] <= 1 and summary["test_prevalence_baseline"]["images"] == 2
    privacy = summary["privacy"]
    assert privacy["population"] == 4 and privacy["sampling_probability"] == 0.75
    assert privacy["rounds_run"] == 2 and 0 < privacy["epsilon_spent"] <= 8.0
    captured = capsys.readouterr()
    assert "round     2" in captured.out and "epsilon spent" in captured.out
    assert "deprecated" not in captured.err


# (flags, message)
@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--dp-epsilon", "2", "--dp-delta", "1e-5", "--clip", "1"], "use --strategy fedavg"),
        (
            [
                "--strategy",
                "fedavg",
                "--dp-epsilon",
                "2",
                "--dp-delta",
                "1e-5",
                "--clip",
                "1",
                "--adaptive-clip",
                "0.5",
            ],
            "--adaptive-clip is not available with --engine flower",
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
