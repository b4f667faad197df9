"""fedimage's ServerApp rounds and ClientApp in one process, over a Grid that delivers messages directly
(:class:`flower_helpers.LocalGrid`, which can make nodes silent or failing: dropouts)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flower_helpers import LocalGrid
from helpers import fast_options

from fedimage import ImageOptions, convert, open_source
from fedimage.store.reader import FederatedStore

torch = pytest.importorskip("torch")
pytest.importorskip("flwr")
pytest.importorskip("cryptography")

from fedimage.federation import local, protocol  # noqa: E402
from fedimage.federation.client_app import make_client_app  # noqa: E402
from fedimage.federation.client_data import SimulationDirectory  # noqa: E402
from fedimage.federation.server_loop import (  # noqa: E402
    ClientDirectory,
    FederatedRounds,
    FederationSettings,
    RoundFailed,
    SecureAggregationSettings,
)
from fedimage.training.evaluation import evaluate  # noqa: E402
from fedimage.training.models import build_model  # noqa: E402

CROP = 24


@pytest.fixture(autouse=True)
def task_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    """The run identity Flower's runtime sets before a ServerApp creates messages (restored afterwards)."""
    from flwr.supercore.task_identity import TaskIdentity

    for name, value in (("_run_id", 1), ("_task_id", 1), ("_node_id", 1)):
        if getattr(TaskIdentity, name) is None:
            monkeypatch.setattr(TaskIdentity, name, value)


@pytest.fixture
def store_path(flair_folder: Path, tmp_path: Path) -> Path:
    """The FLAIR miniature of conftest (4 train users, 1 val, 1 test) at 28 px."""
    path = tmp_path / "store.h5"
    convert(open_source(flair_folder), path, fast_options(image=ImageOptions(size=28)))
    return path


def settings_for(store: FederatedStore, **overrides: Any) -> FederationSettings:
    recipe = protocol.Recipe(
        model="cnn",
        num_outputs=len(store.label_names),
        crop=CROP,
        local_epochs=1,
        batch_size=2,
        lr=0.05,
        seed=3,
        dp_clip=overrides.pop("dp_clip", None),
    )
    values = {
        "rounds": 1,
        "cohort_size": 3,
        "recipe": recipe,
        "seed": 3,
        "eval_every": 1,
        "strategy": "fedavg",
        "min_clients": 1,
        "round_timeout": 5.0,
        "connect_timeout": 5.0,
        **overrides,
    }
    return FederationSettings(**values)


def new_model(store: FederatedStore) -> Any:
    torch.manual_seed(0)
    return build_model("cnn", len(store.label_names), CROP)


def run_rounds(
    store_path: Path, settings: FederationSettings, prepare: Any = None
) -> tuple[Any, Any, LocalGrid]:
    store = FederatedStore(store_path)
    directory = SimulationDirectory(store_path)
    grid = LocalGrid(make_client_app(directory), directory.num_partitions)
    if prepare is not None:
        prepare(grid, directory)
    model = new_model(store)
    rounds = FederatedRounds(grid, settings, model, ClientDirectory())
    return rounds.run(), model, grid


def expected_delta(store: FederatedStore, recipe: protocol.Recipe, client: str, model: Any) -> np.ndarray:
    """What one client's update must be: the local recipe run here, from the same model and seed."""
    data = store.load_user("train", client)
    trained = build_model(recipe.model, recipe.num_outputs, recipe.crop)
    trained.load_state_dict(model.state_dict())
    before = {name: tensor.clone() for name, tensor in trained.state_dict().items()}
    seed = local.client_seed(recipe.seed, 1, client)
    local.local_train(trained, data.images, data.labels, recipe.at_round(1), seed)
    return local.flatten(local.model_update(before, trained.state_dict()))


def vector(model: Any) -> np.ndarray:
    return np.concatenate(
        [t.detach().double().numpy().ravel() for t in model.state_dict().values() if t.is_floating_point()]
    )


def test_a_fedavg_round_is_the_mean_of_the_cohorts_updates(store_path: Path):
    with FederatedStore(store_path) as store:
        settings = settings_for(store)
        result, model, _ = run_rounds(store_path, settings)
        start = new_model(store)
        cohort = result.rounds[0]["cohort"]
        assert len(cohort) == 3 and result.rounds[0]["contributors"] == cohort
        mean = np.mean([expected_delta(store, settings.recipe, client, start) for client in cohort], axis=0)
        np.testing.assert_allclose(vector(model), vector(start) + mean, atol=1e-6)


def test_cohorts_are_seeded_and_those_of_the_pfl_engine(store_path: Path):
    with FederatedStore(store_path) as store:
        settings = settings_for(store, rounds=3, cohort_size=2, eval_every=5)
        first, _, _ = run_rounds(store_path, settings)
        again, _, _ = run_rounds(store_path, settings)
        users = sorted(store.users("train"))
    cohorts = [record["cohort"] for record in first.rounds]
    assert cohorts == [record["cohort"] for record in again.rounds]
    rng = np.random.default_rng(settings.seed)
    assert cohorts == [sorted(users[i] for i in rng.choice(len(users), 2, replace=False)) for _ in range(3)]


def test_a_silent_client_is_dropped_and_the_round_goes_on(store_path: Path):
    def silence_one(grid: LocalGrid, directory: SimulationDirectory) -> None:
        grid.silent[100] = {protocol.TRAIN}  # partition 0: the first train user

    with FederatedStore(store_path) as store:
        settings = settings_for(store, cohort_size=4, min_clients=2, round_timeout=0.5)
        result, _, _ = run_rounds(store_path, settings, silence_one)
        first_user = sorted(store.users("train"))[0]
    record = result.rounds[0]
    assert record["dropped"] == {first_user: "no reply within 0.5 s"}
    assert first_user not in record["contributors"] and len(record["contributors"]) == 3


def test_a_round_with_too_few_replies_fails_naming_the_round(store_path: Path):
    def fail_all(grid: LocalGrid, directory: SimulationDirectory) -> None:
        for node in grid.contexts:
            grid.failing[node] = {protocol.TRAIN}

    with FederatedStore(store_path) as store:
        settings = settings_for(store, cohort_size=2, min_clients=2)
        with pytest.raises(
            RoundFailed, match=r"^round 1: only 0 of the 2 clients .*this node fails on purpose"
        ):
            run_rounds(store_path, settings, fail_all)


def test_secure_aggregation_gives_the_plain_sum_within_quantization(store_path: Path):
    with FederatedStore(store_path) as store:
        secure = SecureAggregationSettings(clip_range=2.0, modulus_bits=32)
        plain, plain_model, _ = run_rounds(store_path, settings_for(store, cohort_size=4))
        masked, masked_model, grid = run_rounds(
            store_path, settings_for(store, cohort_size=4, secure_aggregation=secure)
        )
    assert masked.rounds[0]["contributors"] == plain.rounds[0]["contributors"]
    step = 2 * 2.0 / (2**32 // 4)
    np.testing.assert_allclose(
        vector(masked_model), vector(plain_model), atol=step, rtol=3e-7
    )  # float32 model
    report = masked.rounds[0]["secure_aggregation"]
    assert report["clients"] == 4 and set(report["survivors"].values()) == {4}
    # the server saw no plaintext update: train replies carry public keys, not an update
    assert all(protocol.UPDATE not in m.content.array_records for m in grid.sent)


@pytest.mark.parametrize("stage", [protocol.SECAGG_SHARE, protocol.SECAGG_MASKED, protocol.SECAGG_UNMASK])
def test_secure_aggregation_survives_a_dropout_at_each_stage(store_path: Path, stage: str):
    def drop_one(grid: LocalGrid, directory: SimulationDirectory) -> None:
        grid.silent[101] = {stage}

    with FederatedStore(store_path) as store:
        secure = SecureAggregationSettings(clip_range=2.0)
        settings = settings_for(
            store, cohort_size=4, min_clients=2, round_timeout=0.3, secure_aggregation=secure
        )
        result, model, _ = run_rounds(store_path, settings, drop_one)
        start = new_model(store)
        dropped_user = sorted(store.users("train"))[1]
        record = result.rounds[0]
        if stage == protocol.SECAGG_UNMASK:  # it sent its masked input: it is in the sum
            assert dropped_user in record["contributors"] and not record["dropped"]
        else:
            assert dropped_user not in record["contributors"] and dropped_user in record["dropped"]
        contributors = record["contributors"]
        total = np.sum([expected_delta(store, settings.recipe, c, start) for c in contributors], axis=0)
        step = 2 * 2.0 / (2**32 // 4)
        np.testing.assert_allclose(
            vector(model), vector(start) + total / len(contributors), atol=step + 1e-7, rtol=3e-7
        )


def test_validation_is_pooled_from_the_val_clients_and_equals_central_evaluation(store_path: Path):
    evaluations: list[Any] = []

    class Observer:
        def round_done(self, server_round: int, model: Any, record: dict) -> None:
            pass

        def evaluated(self, server_round, model, pooled, clients, train_metrics) -> None:
            evaluations.append((pooled, clients, evaluate(model, store, "val", "coarse")))

    with FederatedStore(store_path) as store:
        directory = SimulationDirectory(store_path)
        grid = LocalGrid(make_client_app(directory), directory.num_partitions)
        rounds = FederatedRounds(grid, settings_for(store), new_model(store), ClientDirectory(), Observer())
        result = rounds.run()
    pooled, clients, central = evaluations[0]
    for key in ("loss", "macro precision", "micro recall", "images", "labels present", "predicted positives"):
        assert pooled[key] == pytest.approx(central[key], rel=1e-9, abs=1e-12), key
    assert pooled["macro AP"] == pytest.approx(central["macro AP"], abs=1e-3)
    assert clients["clients"] == 1 and set(clients["macro_ap"]) == {"mean", "p10", "p50", "p90", "worst"}
    assert result.client_evaluation["val"]["round"] == 1
    assert result.client_evaluation["test"]["clients"] == 1 and result.test is not None


def test_dp_clips_each_update_and_adds_seeded_noise(store_path: Path):
    with FederatedStore(store_path) as store:
        settings = settings_for(store, dp_clip=1e-3, dp_noise_multiplier=0.5, noise_seed=7, cohort_size=2)
        _, first_model, _ = run_rounds(store_path, settings)
        _, second_model, _ = run_rounds(store_path, settings)
        _, noiseless_model, _ = run_rounds(
            store_path,
            settings_for(store, dp_clip=1e-3, dp_noise_multiplier=1e-9, noise_seed=7, cohort_size=2),
        )
        start = new_model(store)
    np.testing.assert_array_equal(vector(first_model), vector(second_model))
    change = vector(noiseless_model) - vector(start)
    assert np.linalg.norm(change) <= 1e-3 * (1 + 1e-6)  # the mean of two updates of norm <= clip
    assert np.linalg.norm(vector(first_model) - vector(noiseless_model)) > 1e-3  # the noise is there


def test_every_message_names_only_what_a_client_needs(store_path: Path):
    with FederatedStore(store_path) as store:
        _, _, grid = run_rounds(store_path, settings_for(store))
    kinds = {message.metadata.message_type for message in grid.sent}
    assert kinds == {protocol.IDENTIFY, protocol.TRAIN, protocol.EVALUATE, protocol.FINISHED}
