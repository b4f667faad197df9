"""`fedimage train --secure-aggregation`: SecAgg+ sums the pfl engine's user updates, same model as plain."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import fast_options

from fedimage import ImageOptions, convert, open_source
from fedimage.cli import main

torch = pytest.importorskip("torch")
pytest.importorskip("pfl")
pytest.importorskip("dp_accounting")
pytest.importorskip("matplotlib")
pytest.importorskip("cryptography")

pytestmark = pytest.mark.slow  # Ray, Flower, pfl, training or a docs build: `make test-fast` skips it

TINY = ["--model", "cnn", "--image-size", "24", "--eval-every", "1", "--batch-size", "4", "--seed", "5"]


@pytest.fixture(scope="module")
def store_path(tmp_path_factory) -> Path:
    """A FLAIR miniature with 8 train users (1 val, 1 test) at 28 px."""
    from helpers import jpeg_bytes, photo

    root = tmp_path_factory.mktemp("secagg") / "flair"
    (root / "small_images").mkdir(parents=True)
    rows = []
    for user, (partition, count) in enumerate([("train", 2)] * 8 + [("val", 2), ("test", 2)]):
        for index in range(count):
            image_id = f"{user}{index:02d}"
            (root / "small_images" / f"{image_id}.jpg").write_bytes(
                jpeg_bytes(photo(28, 28, seed=user * 7 + index))
            )
            labels = ["animal"] if (user + index) % 2 else ["plant"]
            rows.append(
                {
                    "user_id": f"u{user}",
                    "image_id": image_id,
                    "labels": labels,
                    "partition": partition,
                    "fine_grained_labels": [],
                }
            )
    (root / "labels_and_metadata.json").write_text(json.dumps(rows))
    path = root.parent / "store.h5"
    convert(open_source(root), path, fast_options(image=ImageOptions(size=28)))
    return path


def train(store: Path, out: Path, *extra: str) -> int:
    return main(["train", str(store), "-o", str(out), *TINY, *extra])


def weights(out: Path) -> dict[str, torch.Tensor]:
    return torch.load(out / "checkpoint.pt", weights_only=False)["state_dict"]


def test_secure_round_gives_the_plain_model(store_path: Path, tmp_path: Path):
    assert train(store_path, tmp_path / "plain", "--rounds", "1") == 0
    assert train(store_path, tmp_path / "secure", "--rounds", "1", "--secure-aggregation") == 0
    plain, secure = weights(tmp_path / "plain"), weights(tmp_path / "secure")
    assert plain.keys() == secure.keys()
    changed = max(
        float((plain[name] - weights_before(store_path, tmp_path)[name]).abs().max()) for name in plain
    )
    assert changed > 1e-4  # the round did move the model
    for name in plain:
        torch.testing.assert_close(secure[name], plain[name], atol=1e-5, rtol=0)
    summary = json.loads((tmp_path / "secure" / "summary.json").read_text())["secure_aggregation"]
    assert summary["rounds"] == 1 and summary["contributors"] == [8] and summary["dropped"] == [0]
    assert summary["coordinates_clipped"] == [0]  # the derived bound holds
    assert summary["graph_degree"] == [7] and summary["threshold"] == [4] and summary["modulus_bits"] == 32
    assert summary["clip_range"] == pytest.approx(0.01 * 10 * 2 * 1)  # lr x grad clip x (2 epochs x 1 batch)
    assert summary["seconds_per_round"] > 0 and summary["bytes_up_per_round"] > 0
    assert json.loads((tmp_path / "plain" / "summary.json").read_text())["secure_aggregation"] is None


def weights_before(store_path: Path, tmp_path: Path) -> dict[str, torch.Tensor]:
    """The seeded initial model of the runs (the model is built the same way from the same seed)."""
    from fedimage.training.models import build_model

    torch.manual_seed(5)
    return build_model("cnn", 2, 24).state_dict()


def test_dropouts_still_train_and_dp_noise_follows_the_sum(
    store_path: Path, tmp_path: Path, capsys, monkeypatch
):
    from fedimage.training import secure_aggregation

    seen: list[float] = []  # what the server-side aggregator is handed: placeholders only
    accumulate = secure_aggregation.WithheldAggregator.accumulate

    def spy(self, *, accumulated, user_stats):
        seen.append(max(float(tensor.abs().max()) for tensor in user_stats.values()))
        return accumulate(self, accumulated=accumulated, user_stats=user_stats)

    monkeypatch.setattr(secure_aggregation.WithheldAggregator, "accumulate", spy)
    out = tmp_path / "dropout"
    args = ["--rounds", "2", "--secure-aggregation", "--secagg-dropout", "0.3", "--secagg-threshold", "4"]
    dp = ["--dp-epsilon", "50", "--dp-delta", "1e-3", "--clip", "0.5"]  # a loose budget calibrates fast
    assert train(store_path, out, *args, *dp) == 0
    summary = json.loads((out / "summary.json").read_text())
    secure = summary["secure_aggregation"]
    assert secure["rounds"] == 2 and secure["clip_range"] == 0.5 and sum(secure["dropped"]) > 0
    assert all(4 <= count <= 8 for count in secure["contributors"])
    assert summary["privacy"]["rounds_run"] == 2 and summary["rounds_run"] == 2
    assert "(DP clipping bound" in capsys.readouterr().out
    assert len(seen) == 16 and max(seen) == 0.0


def test_too_few_survivors_abort_with_a_clear_error(store_path: Path, tmp_path: Path, capsys):
    args = ["--rounds", "1", "--secure-aggregation", "--secagg-threshold", "7", "--secagg-dropout", "0.6"]
    assert train(store_path, tmp_path / "abort", *args) == 2
    error = capsys.readouterr().err
    assert "secure aggregation aborted in round 1 (8 users)" in error and "threshold 7" in error


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--secagg-dropout", "0.1"], "--secagg-dropout needs --secure-aggregation"),
        (["--secure-aggregation", "--secagg-threshold", "3"], "more than half the 7 neighbours"),
        (["--secure-aggregation", "--secagg-dropout", "1"], "--secagg-dropout must be in [0, 1)"),
        (["--secure-aggregation", "--local-grad-clip", "0"], "give --secagg-range"),
        (["--secure-aggregation", "--central"], "nothing to aggregate securely"),
        (
            [
                "--secure-aggregation",
                "--dp-epsilon",
                "8",
                "--dp-delta",
                "1e-3",
                "--clip",
                "1",
                "--adaptive-clip",
                "0.5",
            ],
            "cannot be combined with --adaptive-clip",
        ),
    ],
)
def test_option_errors(store_path: Path, tmp_path: Path, capsys, extra: list[str], message: str):
    assert train(store_path, tmp_path / "bad", "--rounds", "1", *extra) == 2
    assert message in capsys.readouterr().err
