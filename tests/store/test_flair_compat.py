"""The store read back exactly the way FLAIR's two reference loaders read it.

The helpers below restate, with h5py calls only, what pfl-research's
``benchmarks/dataset/flair`` and ml-flair's HDF5 consumers do: no fedimage code
is used to read, so a layout change that would break them fails here.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

import fedimage
from fedimage import ConvertOptions, ImageOptions, convert, open_source


def pfl_label_mapping(path: Path, fine: bool) -> dict[str, int]:
    with h5py.File(path, "r") as h5:
        key = "/metadata/fine_grained_label_mapping" if fine else "/metadata/label_mapping"
        return json.loads(h5[key][()])


def pfl_user_num_images(path: Path, partition: str) -> dict[str, int]:
    with h5py.File(path, "r") as h5:
        return {key: h5[f"/{partition}/{key}/image_ids"].shape[0] for key in h5[f"/{partition}"]}


def pfl_user_data(path: Path, partition: str, user_id: str, fine: bool) -> tuple[np.ndarray, np.ndarray]:
    num_classes = len(pfl_label_mapping(path, fine))
    prefix = "fine_grained_labels" if fine else "labels"
    with h5py.File(path, "r") as h5:
        inputs = np.array(h5[f"/{partition}/{user_id}/images"])
        rows = np.array(h5[f"/{partition}/{user_id}/{prefix}_row"])
        cols = np.array(h5[f"/{partition}/{user_id}/{prefix}_col"])
    targets = np.zeros((len(inputs), num_classes), dtype=np.float32)
    targets[rows, cols] = 1
    return inputs, targets


def ml_flair_user(path: Path, partition: str, user_id: str) -> dict[str, list]:
    with h5py.File(path, "r") as h5:
        group = h5[f"/{partition}/{user_id}"]
        return {
            "image_ids": [value.decode() for value in group["image_ids"][()]],
            "labels": [value.decode().split("|") if value else [] for value in group["labels"][()]],
            "fine_grained_labels": [
                value.decode().split("|") if value else [] for value in group["fine_grained_labels"][()]
            ],
            "images": np.array(group["images"]),
        }


@pytest.fixture
def flair_raw_store(flair_folder: Path, tmp_path: Path) -> Path:
    output = tmp_path / "flair_raw.h5"
    options = ConvertOptions(image=ImageOptions(storage="raw"), workers=1, quiet=True)
    report = convert(
        open_source(flair_folder),
        output,
        options,
        taxonomy=fedimage.load_taxonomy(flair_folder / "label_relationship.txt"),
    )
    assert report.rejected == 0
    return output


def flair_metadata(flair_folder: Path) -> dict[str, dict]:
    rows = json.loads((flair_folder / "labels_and_metadata.json").read_text())
    return {row["image_id"]: row for row in rows}


def test_pfl_research_loader_reads_raw_store(flair_raw_store: Path, flair_folder: Path):
    metadata = flair_metadata(flair_folder)
    mapping = pfl_label_mapping(flair_raw_store, fine=False)
    assert mapping == {"animal": 0, "equipment": 1, "plant": 2}
    fine_mapping = pfl_label_mapping(flair_raw_store, fine=True)
    assert list(fine_mapping) == sorted(fine_mapping)
    total = 0
    for partition in ("train", "val", "test"):
        counts = pfl_user_num_images(flair_raw_store, partition)
        for user_id, count in counts.items():
            inputs, targets = pfl_user_data(flair_raw_store, partition, user_id, fine=False)
            _, fine_targets = pfl_user_data(flair_raw_store, partition, user_id, fine=True)
            ids = ml_flair_user(flair_raw_store, partition, user_id)["image_ids"]
            assert inputs.shape == (count, 256, 256, 3) and inputs.dtype == np.uint8
            for index, image_id in enumerate(ids):
                row = metadata[image_id]
                assert row["user_id"] == user_id and row["partition"] == partition
                source = np.asarray(Image.open(flair_folder / "small_images" / f"{image_id}.jpg"))
                np.testing.assert_array_equal(inputs[index], source)
                assert {label for label, i in mapping.items() if targets[index, i]} == set(row["labels"])
                assert {label for label, i in fine_mapping.items() if fine_targets[index, i]} == set(
                    row["fine_grained_labels"]
                )
            total += count
    assert total == len(metadata)


def test_ml_flair_layout_of_raw_store(flair_raw_store: Path, flair_folder: Path):
    metadata = flair_metadata(flair_folder)
    with h5py.File(flair_raw_store, "r") as h5:
        label_counter = json.loads(h5["/metadata/label_counter"][()])
        fine_counter = json.loads(h5["/metadata/fine_grained_label_counter"][()])
        partitions = [key for key in h5 if key != "metadata"]
        assert sorted(partitions) == ["test", "train", "val"]
        users = [(p, u) for p in partitions for u in h5[p]]
        dtypes = {
            name: h5[f"{users[0][0]}/{users[0][1]}/{name}"].dtype
            for name in h5[f"{users[0][0]}/{users[0][1]}"]
        }
    assert dtypes["labels_row"] == np.uint16 and dtypes["labels_col"] == np.uint8
    assert dtypes["fine_grained_labels_col"] == np.uint16 and dtypes["images"] == np.uint8
    expected_counter: dict[str, int] = {}
    expected_fine: dict[str, int] = {}
    for row in metadata.values():
        for label in row["labels"]:
            expected_counter[label] = expected_counter.get(label, 0) + 1
        for label in row["fine_grained_labels"]:
            expected_fine[label] = expected_fine.get(label, 0) + 1
    assert {k: v for k, v in label_counter.items() if v} == expected_counter
    assert {k: v for k, v in fine_counter.items() if v} == expected_fine
    for partition, user_id in users:
        user = ml_flair_user(flair_raw_store, partition, user_id)
        for image_id, labels, fine in zip(
            user["image_ids"], user["labels"], user["fine_grained_labels"], strict=True
        ):
            assert labels == metadata[image_id]["labels"]
            assert fine == metadata[image_id]["fine_grained_labels"]


def test_jpeg_store_keeps_flair_images_losslessly_and_drops_exif(flair_folder: Path, tmp_path: Path):
    output = tmp_path / "flair.h5"
    report = convert(open_source(flair_folder), output, ConvertOptions(workers=1, quiet=True))
    assert report.written == 14
    with fedimage.open(output) as store:
        for split in store.splits:
            for user_id in store.users(split):
                user = store.load_user(split, user_id)
                encoded = store.encoded_images(split, user_id)
                for index, image_id in enumerate(user.image_ids):
                    original = (flair_folder / "small_images" / f"{image_id}.jpg").read_bytes()
                    np.testing.assert_array_equal(
                        user.images[index],
                        np.asarray(Image.open(flair_folder / "small_images" / f"{image_id}.jpg")),
                    )
                    assert b"Exif" in original and b"Exif" not in encoded[index]
                    scan = original.index(b"\xff\xda")
                    assert encoded[index].endswith(original[scan:])
    raw_size = 14 * 256 * 256 * 3
    assert output.stat().st_size < 0.3 * raw_size


def test_flair_layout_reader_fails_loudly_on_a_jpeg_store_and_reads_a_raw_one(
    flair_raw_store: Path, flair_folder: Path, tmp_path: Path
):
    # pfl-research's FLAIR loader takes every user's `images` as uint8 pixels [N, 256, 256, 3]; a
    # jpeg store's byte blob under that name was silently read as (bytes,) images (issue 14, 11)
    jpeg_store = tmp_path / "flair_jpeg.h5"
    convert(open_source(flair_folder), jpeg_store, ConvertOptions(workers=1, quiet=True))
    for partition in ("train", "val", "test"):
        for user_id, count in pfl_user_num_images(jpeg_store, partition).items():
            with pytest.raises(KeyError, match="images"):
                pfl_user_data(jpeg_store, partition, user_id, fine=False)
            inputs, targets = pfl_user_data(flair_raw_store, partition, user_id, fine=False)
            assert inputs.shape == (count, 256, 256, 3) and inputs.dtype == np.uint8
            assert targets.shape == (count, 3)
