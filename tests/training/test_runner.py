"""End-to-end ``fedimage train`` runs on a tiny store: outputs, DP reporting, determinism, errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from helpers import fast_options

import fedimage
from fedimage import ImageOptions, convert, open_source
from fedimage.cli import main

pytestmark = pytest.mark.slow  # Ray, Flower, pfl, training or a docs build: `make test-fast` skips it

torch = pytest.importorskip("torch")
pytest.importorskip("pfl")
pytest.importorskip("dp_accounting")
pytest.importorskip("matplotlib")

TINY = ["--model", "cnn", "--image-size", "24", "--rounds", "2", "--eval-every", "1", "--batch-size", "4"]


@pytest.fixture
def store_path(flair_folder: Path, tmp_path: Path) -> Path:
    """The FLAIR miniature (4 train users, 1 val, 1 test) at 28 px."""
    path = tmp_path / "store.h5"
    convert(open_source(flair_folder), path, fast_options(image=ImageOptions(size=28)))
    return path


def run_train(store: Path, out: Path, *extra: str) -> int:
    return main(["train", str(store), "-o", str(out), *TINY, *extra])


def finite_numbers(record: dict) -> bool:
    return all(math.isfinite(value) for value in record.values() if isinstance(value, float))


def test_federated_run_writes_every_output(store_path: Path, tmp_path: Path, capsys):
    out = tmp_path / "fl"
    assert run_train(store_path, out) == 0
    assert {p.name for p in out.iterdir()} >= {"metrics.jsonl", "summary.json", "curves.png", "checkpoint.pt"}
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [record["round"] for record in records] == [1, 2]
    assert all(finite_numbers(record["val"]) for record in records)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["engine"] == "pfl" and summary["rounds_run"] == 2 and summary["cohort_size"] == 4
    assert summary["best_round"] in (1, 2) and summary["privacy"] is None
    assert finite_numbers(summary["test"]) and 0 <= summary["test"]["macro AP"] <= 1
    assert summary["test_prevalence_baseline"]["images"] == summary["test"]["images"] == 2
    assert "cohort size 200 capped to the 4 train users" in capsys.readouterr().out


def test_same_seed_same_run(store_path: Path, tmp_path: Path):
    def val_metrics(out: Path) -> list[dict]:
        assert run_train(store_path, out, "--seed", "7", "--rounds", "1") == 0
        return [json.loads(line)["val"] for line in (out / "metrics.jsonl").read_text().splitlines()]

    assert val_metrics(tmp_path / "a") == val_metrics(tmp_path / "b")


def test_an_encrypted_store_trains_with_its_key_like_the_plain_one(
    flair_folder: Path, store_path: Path, tmp_path: Path, capsys
):
    pytest.importorskip("cryptography")
    key = tmp_path / "store.key"
    assert main(["keygen", str(key)]) == 0
    encrypted = tmp_path / "encrypted.h5"
    options = fast_options(image=ImageOptions(size=28), encrypt_key=key)
    convert(open_source(flair_folder), encrypted, options)
    assert run_train(encrypted, tmp_path / "no-key", "--rounds", "1") == 2
    assert "encrypted" in capsys.readouterr().err
    for store, extra in ((store_path, ()), (encrypted, ("--key", str(key)))):
        assert run_train(store, tmp_path / store.stem, "--seed", "3", "--rounds", "1", *extra) == 0
    plain, sealed = (
        [json.loads(line)["val"] for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        for name in ("store", "encrypted")
    )
    assert plain == sealed


def test_dp_run_reports_noise_and_epsilon(store_path: Path, tmp_path: Path, capsys):
    out = tmp_path / "dp"
    status = run_train(
        store_path, out, "--dp-epsilon", "8", "--dp-delta", "1e-3", "--clip", "0.5", "--adaptive-clip", "0.5"
    )
    assert status == 0
    printed = capsys.readouterr().out
    assert "DP: noise multiplier" in printed and "epsilon spent" in printed
    privacy = json.loads((out / "summary.json").read_text())["privacy"]
    assert (
        privacy["population"] == 4 and privacy["sampling_probability"] == 1.0 and privacy["rounds_run"] == 2
    )
    assert privacy["noise_multiplier"] > 0 and privacy["epsilon_spent"] <= 8.0
    assert f"noise multiplier {privacy['noise_multiplier']:.4f}" in printed


def test_central_baseline(store_path: Path, tmp_path: Path):
    out = tmp_path / "central"
    assert run_train(store_path, out, "--central") == 0
    summary = json.loads((out / "summary.json").read_text())
    assert (
        summary["engine"] == "central" and summary["cohort_size"] is None and finite_numbers(summary["test"])
    )


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--dp-epsilon", "2"], "missing --dp-delta, --clip"),
        (
            ["--dp-epsilon", "2", "--dp-delta", "1e-5", "--clip", "1", "--noise-cohort", "50"],
            "exceeds the store's 4",
        ),
        (["--central", "--dp-epsilon", "2", "--dp-delta", "1e-5", "--clip", "1"], "cannot take DP flags"),
        (["--rounds", "0"], "--rounds must be >= 1"),
    ],
)
def test_bad_options_are_one_line_errors(store_path: Path, tmp_path: Path, capsys, flags, message):
    assert run_train(store_path, tmp_path / "bad", *flags) == 2
    assert message in capsys.readouterr().err


def test_existing_run_needs_overwrite(store_path: Path, tmp_path: Path, capsys):
    out = tmp_path / "again"
    (out).mkdir()
    (out / "summary.json").write_text("{}")
    assert run_train(store_path, out) == 2
    assert "--overwrite" in capsys.readouterr().err


def _poison_local_training(monkeypatch, nan_for_user: str | None = None):
    """Make local training return NaN updates (for every user, or for one user of the pfl engine)."""
    from pfl.model.pytorch import PyTorchModel

    original = PyTorchModel.do_multiple_epochs_of

    def poisoned(self, user_dataset, *args, **kwargs):
        result = original(self, user_dataset, *args, **kwargs)
        if nan_for_user is None or getattr(user_dataset, "user_id", None) == nan_for_user:
            with torch.no_grad():
                for parameter in self.pytorch_model.parameters():
                    parameter.fill_(float("nan"))
        return result

    monkeypatch.setattr(PyTorchModel, "do_multiple_epochs_of", poisoned)


def test_a_diverged_run_stops_naming_the_round(store_path: Path, tmp_path: Path, capsys, monkeypatch):
    _poison_local_training(monkeypatch)
    out = tmp_path / "nan"
    assert run_train(store_path, out) == 2
    err = capsys.readouterr().err
    assert "training diverged in round 1" in err and err.count("\n") == 1
    assert not (out / "checkpoint.pt").exists()  # no NaN round is kept as the best one
    assert not (out / "summary.json").exists()


def test_a_nan_update_under_secure_aggregation_names_round_and_user(
    store_path: Path, tmp_path: Path, capsys, monkeypatch
):
    pytest.importorskip("cryptography")
    with fedimage.open(store_path) as store:
        victim = sorted(store.users("train"))[0]
    _poison_local_training(monkeypatch, nan_for_user=victim)
    out = tmp_path / "nan-secagg"
    assert run_train(store_path, out, "--secure-aggregation", "--cohort-size", "4") == 2
    err = capsys.readouterr().err
    assert "training diverged in round 1" in err and repr(victim) in err


def test_a_nan_validation_round_is_never_the_best(tmp_path: Path, monkeypatch):
    from fedimage.training import tracking

    results = iter(
        [
            {"macro AP": 0.3, "micro AP": 0.3, "loss": 1.0},
            {"macro AP": math.nan, "micro AP": 0.1, "loss": 9.0},
        ]
    )
    monkeypatch.setattr(tracking, "evaluate", lambda *args: next(results))
    tracker = tracking.ValidationTracker(tmp_path, None, "val", "coarse", 8, {}, lambda message: None)
    model = torch.nn.Linear(2, 2)
    tracker(1, model)
    tracker(2, model)
    assert tracker.best_round == 1


def test_a_store_without_val_users_is_refused_before_training(flair_folder: Path, tmp_path: Path, capsys):
    store = tmp_path / "no-val.h5"
    plan = fedimage.PlanOptions(split=fedimage.SplitRatios.parse("0.8,0,0.2"), source_splits=False)
    options = fast_options(image=ImageOptions(size=32), plan=plan)
    convert(open_source(flair_folder), store, options)
    out = tmp_path / "run"
    assert run_train(store, out) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no users in a 'val' split" in err
    assert "--split 0.8,0.1,0.1" in err and "--no-validation" in err
    assert not out.exists()  # refused before anything was written
    assert run_train(store, out, "--no-validation", "--rounds", "1") == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["validation"].startswith("none") and summary["best_round"] == 1


def test_progress_per_round_and_the_projected_time(store_path: Path, tmp_path: Path, capsys):
    assert run_train(store_path, tmp_path / "shown", "--rounds", "3") == 0
    captured = capsys.readouterr()
    assert "round 1 took" in captured.out and "3 rounds will take about" in captured.out
    assert "round/s" in captured.err or "s/round" in captured.err  # tqdm's rate on standard error
    assert run_train(store_path, tmp_path / "quiet", "--rounds", "3", "--quiet") == 0
    captured = capsys.readouterr()
    assert "s/round" not in captured.err and "round/s" not in captured.err
    assert "round 1 took" in captured.out  # the projection is a log line, printed either way


def test_training_above_the_store_size_warns_of_upsampling(store_path: Path, tmp_path: Path, capsys):
    assert run_train(store_path, tmp_path / "up", "--rounds", "1", "--image-size", "56", "--quiet") == 0
    assert "resize the store's 28 px images up to 64 px" in capsys.readouterr().out
    assert run_train(store_path, tmp_path / "native", "--rounds", "1", "--quiet") == 0
    assert "upsampling" not in capsys.readouterr().out


@pytest.mark.parametrize("engine", ["pfl", "central"])
def test_a_gray_store_trains_like_an_rgb_one(flair_folder: Path, tmp_path: Path, engine: str):
    path = tmp_path / "gray.h5"
    convert(open_source(flair_folder), path, fast_options(image=ImageOptions(size=28, color="gray")))
    out = tmp_path / engine
    assert run_train(path, out, *(["--central"] if engine == "central" else [])) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["engine"] == engine and finite_numbers(summary["test"])


def test_training_on_a_partition_overlay(store_path: Path, tmp_path: Path, capsys):
    parts = tmp_path / "iid.parquet"
    flags = ["--partition", "iid", "--num-clients", "7", "--min-per-client", "2", "--split", "0.6,0.2,0.2"]
    status = main(["repartition", str(store_path), "-o", str(parts), *flags])
    assert status == 0
    with fedimage.open(store_path, partition=parts) as overlay:
        train_clients = len(overlay.users("train"))
    out = tmp_path / "fl"
    assert run_train(store_path, out, "--partition-file", str(parts), "--rounds", "1") == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["partition"] == str(parts.resolve()) and summary["cohort_size"] == train_clients
    assert f"{train_clients} train users" in capsys.readouterr().out
