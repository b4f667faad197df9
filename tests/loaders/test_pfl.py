"""pfl-research's datasets over a store: the pooled central dataset holds every image of a split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import fast_options

import fedimage

pytestmark = pytest.mark.slow  # imports pfl-research and PyTorch
pytest.importorskip("pfl")
pytest.importorskip("torch")

from fedimage.loaders.pfl import central_dataset  # noqa: E402


def test_central_dataset_pools_a_split_in_store_order(user_folder: Path, tmp_path: Path):
    output = tmp_path / "store.h5"
    fedimage.convert(fedimage.open_source(user_folder, layout="user"), output, fast_options())
    with fedimage.open(output) as store:
        split = max(store.splits, key=lambda name: len(store.users(name)))
        users = [store.load_user(split, user_id) for user_id in store.users(split)]
        dataset = central_dataset(store, split)
        images, targets = dataset.raw_data
        np.testing.assert_array_equal(images.numpy(), np.concatenate([user.images for user in users]))
        np.testing.assert_array_equal(targets.numpy(), np.concatenate([user.labels for user in users]))
        with pytest.raises(fedimage.UnknownUserError, match="no-such-split"):
            central_dataset(store, "no-such-split")
