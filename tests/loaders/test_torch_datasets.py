"""PyTorch datasets over a store (skipped when torch is not installed)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from helpers import fast_options

import fedimage
from fedimage import ImageOptions, convert, open_source

torch = pytest.importorskip("torch")
from fedimage.loaders.torch_datasets import SplitDataset, UserDataset  # noqa: E402


@pytest.fixture
def store_path(flair_folder: Path, tmp_path: Path) -> Path:
    path = tmp_path / "store.h5"
    convert(open_source(flair_folder), path, fast_options(image=ImageOptions(size=32)))
    return path


def test_user_dataset_items(store_path: Path):
    with fedimage.open(store_path) as store:
        user_id, count = next(iter(store.users("train").items()))
        expected = store.load_user("train", user_id)
    dataset = UserDataset(store_path, "train", user_id)
    assert len(dataset) == count
    image, target = dataset[0]
    assert (
        image.shape == (3, 32, 32) and image.dtype == torch.float32 and 0 <= image.min() <= image.max() <= 1
    )
    np.testing.assert_allclose(image.numpy().transpose(1, 2, 0) * 255, expected.images[0], atol=1e-3)
    np.testing.assert_array_equal(target.numpy(), expected.labels[0])
    fine = UserDataset(store_path, "train", user_id, labels="fine")
    assert fine[0][1].shape == (len(fine.label_names),)


def as_uint8_tensor(image: np.ndarray):
    return torch.from_numpy(image.copy())


def test_split_dataset_covers_every_image_and_works_in_a_dataloader(store_path: Path):
    dataset = SplitDataset(store_path, "train", transform=as_uint8_tensor)
    with fedimage.open(store_path) as store:
        assert len(dataset) == store.num_images("train")
        last_user = list(store.users("train"))[-1]
        assert dataset.user_of(len(dataset) - 1) == (last_user, store.users("train")[last_user] - 1)
        np.testing.assert_array_equal(
            dataset[len(dataset) - 1][0].numpy(), store.load_image("train", last_user, -1)
        )
    restored = pickle.loads(pickle.dumps(dataset))  # what DataLoader workers receive
    assert restored._store is None and len(restored) == len(dataset)
    loader = torch.utils.data.DataLoader(dataset, batch_size=4, num_workers=2)
    images, targets = next(iter(loader))
    assert images.shape == (4, 32, 32, 3) and targets.shape == (4, len(dataset.label_names))
    with pytest.raises(IndexError):
        dataset.user_of(len(dataset))


def test_unknown_user_and_label_kind(store_path: Path):
    with pytest.raises(fedimage.UnknownUserError):
        UserDataset(store_path, "train", "nobody")
    with pytest.raises(ValueError, match="`labels` must be one of coarse, fine"):
        SplitDataset(store_path, "train", labels="both")
