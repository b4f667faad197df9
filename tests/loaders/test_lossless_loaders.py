"""Readers of lossless stores: PyTorch datasets, the Flower and pfl loaders, the model's transform and
a federated client's local work, on 8-bit PNG stores and 16-bit ones (uint16 scaled by 65535)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from lossless_helpers import SIZE, lossless_store

import fedimage

torch = pytest.importorskip("torch")
from fedimage.loaders.flower import StorePartitioner, load_central, load_client  # noqa: E402
from fedimage.loaders.torch_datasets import SplitDataset, UserDataset, to_tensor  # noqa: E402
from fedimage.training.transforms import ImageTransform, model_images  # noqa: E402


@pytest.fixture(scope="module")
def store16(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    return lossless_store(tmp_path_factory.mktemp("store16"), bit_depth=16)


@pytest.fixture(scope="module")
def store8(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    return lossless_store(tmp_path_factory.mktemp("store8"))


def values_of(tensor: torch.Tensor, bits: int) -> np.ndarray:
    """A float tensor in [0, 1] back to the integer values it scaled (exact: float32 has room)."""
    scale = 65535.0 if bits == 16 else 255.0
    return np.rint(tensor.double().numpy() * scale).astype(np.uint16 if bits == 16 else np.uint8)


@pytest.mark.parametrize("bits", [8, 16])
def test_torch_datasets_scale_by_the_dtype_max_and_keep_the_values(store8, store16, bits):
    path, pixels = store16 if bits == 16 else store8
    with fedimage.open(path) as store:
        user_id = next(iter(store.users("train")))
        expected = store.load_user("train", user_id)
    dataset = UserDataset(path, "train", user_id)
    channels = 1 if bits == 16 else 3
    for index, image_id in enumerate(expected.image_ids):
        image, target = dataset[index]
        assert image.dtype == torch.float32 and image.shape == (channels, SIZE, SIZE)
        assert 0 <= image.min() <= image.max() <= 1
        np.testing.assert_array_equal(values_of(image, bits).transpose(1, 2, 0), pixels[image_id])
        np.testing.assert_array_equal(target.numpy(), expected.labels[index])
    raw = UserDataset(path, "train", user_id, transform=lambda image: image)
    assert raw[0][0].dtype == (np.uint16 if bits == 16 else np.uint8)
    np.testing.assert_array_equal(raw[0][0], pixels[expected.image_ids[0]])
    split = SplitDataset(path, "train")
    for index in range(len(split)):
        user, within = split.user_of(index)
        image, _ = split[index]
        with fedimage.open(path) as store:
            image_id = store.load_user("train", user).image_ids[within]
        np.testing.assert_array_equal(values_of(image, bits).transpose(1, 2, 0), pixels[image_id])


def test_to_tensor_takes_uint8_and_uint16_only():
    assert to_tensor(np.full((2, 2, 1), 65535, np.uint16)).max() == 1.0
    assert to_tensor(np.full((2, 2, 3), 255, np.uint8)).max() == 1.0
    with pytest.raises(ValueError, match="uint8 or uint16"):
        to_tensor(np.zeros((2, 2, 1), np.float64))


def test_flower_partitions_of_a_16_bit_store(store16):
    path, pixels = store16
    partitioner = StorePartitioner(path, "train")
    for partition_id in range(partitioner.num_partitions):
        images, _ = partitioner.load_arrays(partition_id)
        assert images.dtype == np.uint16  # the values themselves
        tensors = partitioner.load_partition(partition_id).tensors[0]
        assert tensors.dtype == torch.float32 and tensors.shape == (len(images), SIZE, SIZE, 1)
        np.testing.assert_array_equal(values_of(tensors, 16), images)
    with fedimage.open(path) as store:
        first = store.load_user("train", partitioner.user_ids[0])
    np.testing.assert_array_equal(
        partitioner.load_arrays(0)[0], np.stack([pixels[i] for i in first.image_ids])
    )
    batch, targets = next(iter(load_client(partitioner, 0, batch_size=2)))
    assert batch.dtype == torch.float32 and batch.shape[1:] == (SIZE, SIZE, 1) and targets.shape[0] == 2
    central = list(load_central(path, "train", batch_size=4))
    images = torch.cat([batch for batch, _ in central])
    assert images.dtype == torch.float32 and len(images) == 7
    assert values_of(images, 16).max() == 65535 and values_of(images, 16).min() == 0


def test_flower_partitions_of_an_8_bit_lossless_store_stay_uint8(store8):
    path, pixels = store8
    partitioner = StorePartitioner(path, "train")
    tensors = partitioner.load_partition(0).tensors[0]
    assert tensors.dtype == torch.uint8
    with fedimage.open(path) as store:
        ids = store.load_user("train", partitioner.user_ids[0]).image_ids
    np.testing.assert_array_equal(tensors.numpy(), np.stack([pixels[i] for i in ids]))
    batch, _ = next(iter(load_central(path, "val", batch_size=8)))
    assert batch.dtype == torch.uint8


def test_model_images_and_the_transform_scale_16_bits_as_8():
    rng = np.random.default_rng(0)
    eight = rng.integers(0, 256, (2, SIZE, SIZE, 1), dtype=np.uint8)
    sixteen = eight.astype(np.uint16) * 257  # the same levels at 16 bits
    assert model_images(eight).dtype == torch.uint8
    floats = model_images(sixteen)
    assert floats.dtype == torch.float32 and float(floats.max()) <= 1.0
    transform = ImageTransform(28).eval()
    expected = transform(torch.from_numpy(eight))
    torch.testing.assert_close(transform(floats), expected, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(transform(torch.from_numpy(sixteen)), expected, rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="uint8, uint16 or float32"):
        model_images(np.zeros((1, 4, 4, 1), np.int32))
    with pytest.raises(ValueError, match="uint8, uint16 or float"):
        transform(torch.zeros((1, 4, 4, 1), dtype=torch.int32))


@pytest.mark.parametrize("bits", [8, 16])
def test_a_federated_clients_local_work_on_a_lossless_store(store8, store16, bits):
    from fedimage.federation import local
    from fedimage.federation.client_data import SimulationDirectory
    from fedimage.federation.protocol import Recipe
    from fedimage.training.models import build_model

    path, _ = store16 if bits == 16 else store8
    directory = SimulationDirectory(path)
    data = directory.client_data(0)
    images, targets = data.arrays("coarse")
    assert images.dtype == (np.uint16 if bits == 16 else np.uint8)
    torch.manual_seed(0)
    model = build_model("cnn", targets.shape[1], 24)
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    recipe = Recipe(model="cnn", num_outputs=targets.shape[1], crop=24, local_epochs=1, batch_size=2)
    loss, steps = local.local_train(model, images, targets, recipe, seed=1)
    assert np.isfinite(loss) and steps == -(-len(images) // 2)
    update = local.model_update(before, model.state_dict())
    assert all(np.isfinite(part).all() for part in update.values())
    logits = local.predict_logits(model, images, batch_size=2)
    assert logits.shape == targets.shape and np.isfinite(logits).all()


@pytest.mark.slow  # imports pfl-research
def test_pfl_datasets_of_a_16_bit_store(store16):
    pytest.importorskip("pfl")
    from fedimage.loaders.pfl import StoreFederatedDataset, central_dataset

    path, pixels = store16
    with fedimage.open(path) as store:
        train = StoreFederatedDataset(store, "train", cohort_size=2, seed=0)
        user = train.load_user("u0")
        images, _ = user.raw_data
        assert images.dtype == torch.float32 and images.shape == (3, SIZE, SIZE, 1)
        expected = np.stack([pixels[f"u0-{index}"] for index in range(3)])
        assert sorted(map(bytes, values_of(images, 16))) == sorted(map(bytes, expected))  # shuffled
        pooled, targets = central_dataset(store, "val").raw_data
        assert pooled.dtype == torch.float32 and len(pooled) == len(targets) == 2
        np.testing.assert_array_equal(values_of(pooled, 16), store.load_user("val", "v0").images)
