"""``fedimage train`` on lossless stores: 8-bit PNGs and 16-bit gray values (scaled by 65535), with
pfl-research's FedAvg and the central baseline. (The Flower engine's client work on such stores is
tested in ``tests/loaders/test_lossless_loaders.py``.)"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
from lossless_helpers import lossless_store

pytestmark = pytest.mark.slow  # training: `make test-fast` skips it

pytest.importorskip("torch")
pytest.importorskip("pfl")
pytest.importorskip("dp_accounting")
pytest.importorskip("matplotlib")

from fedimage.training import TrainOptions  # noqa: E402
from fedimage.training.runner import train  # noqa: E402

TINY = TrainOptions(
    model="cnn", image_size=24, rounds=2, eval_every=1, local_batch_size=4, cohort_size=2, eval_batch_size=8
)


@pytest.mark.parametrize("bits", [8, 16])
@pytest.mark.parametrize("central", [False, True], ids=["fedavg", "central"])
def test_a_tiny_run_completes_on_a_lossless_store(tmp_path: Path, bits: int, central: bool):
    store, _ = lossless_store(tmp_path / "src", bit_depth=bits)
    summary = train(store, replace(TINY, central=central), tmp_path / "out", log=lambda _: None)
    assert summary["engine"] == ("central" if central else "pfl") and summary["rounds_run"] == 2
    test = summary["test"]
    assert test["images"] == 2 and all(math.isfinite(v) for v in test.values() if isinstance(v, float))
    records = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert [record["round"] for record in records] == [1, 2]
    assert all(math.isfinite(record["val"]["loss"]) for record in records)
