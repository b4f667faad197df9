"""``flair-central``: read back with plain h5py calls, as ml-flair's ungrouped HDF5 is read.

``ml_flair_central`` restates with h5py alone how a consumer of ml-flair's
``prepare_dataset.py --not_group_data_by_user`` output reads it; the layout is also
compared with a reference file written with the h5py calls ml-flair's script makes.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from helpers import ODD_USERS, QUIET, flair_store, odd_store

import fedimage
from fedimage.exports import export
from fedimage.store.schema import user_id_from_key


def ml_flair_central(path: Path) -> dict[str, dict[str, dict]]:
    """{partition: {image group name: {image, labels, fine_grained_labels, user_id}}}."""
    data: dict[str, dict[str, dict]] = {}
    with h5py.File(path, "r") as h5:
        for partition in h5:
            if partition == "metadata":
                continue
            data[partition] = {
                key: {
                    "image": np.asarray(h5[f"/{partition}/{key}/image"]),
                    "labels": h5[f"/{partition}/{key}/labels"][()].decode("utf-8").split("|"),
                    "fine_grained_labels": h5[f"/{partition}/{key}/fine_grained_labels"][()]
                    .decode("utf-8")
                    .split("|"),
                    "user_id": h5[f"/{partition}/{key}/user_id"][()].decode("utf-8"),
                }
                for key in h5[partition]
            }
    return data


def names(labels: list[str]) -> list[str]:
    return [] if labels == [""] else labels


@pytest.mark.parametrize("storage", ["jpeg", "raw"])
def test_pixels_labels_and_users_match_the_store(flair_folder: Path, tmp_path: Path, storage: str):
    store_path = flair_store(flair_folder, tmp_path / "store.h5", storage)
    export(store_path, "flair-central", tmp_path / "central.h5", QUIET)
    central = ml_flair_central(tmp_path / "central.h5")
    with fedimage.open(store_path) as store:
        assert sorted(central) == sorted(store.splits)
        for split in store.splits:
            assert len(central[split]) == store.num_images(split)
            for user_id in store.users(split):
                user = store.load_user(split, user_id)
                for index, image_id in enumerate(user.image_ids):
                    entry = central[split][image_id]
                    assert entry["image"].dtype == np.uint8 and entry["image"].shape == (64, 64, 3)
                    np.testing.assert_array_equal(entry["image"], user.images[index])
                    assert entry["user_id"] == user_id
                    coarse = [store.label_names[i] for i in np.flatnonzero(user.labels[index])]
                    fine = [store.fine_label_names[i] for i in np.flatnonzero(user.fine_labels[index])]
                    assert sorted(names(entry["labels"])) == coarse
                    assert sorted(names(entry["fine_grained_labels"])) == fine


def test_metadata_is_the_stores(flair_folder: Path, tmp_path: Path):
    store_path = flair_store(flair_folder, tmp_path / "store.h5")
    export(store_path, "flair-central", tmp_path / "central.h5", QUIET)
    with h5py.File(tmp_path / "central.h5", "r") as central, h5py.File(store_path, "r") as source:
        for name in ("label_counter", "fine_grained_label_counter", "label_mapping", "label_relationship"):
            assert json.loads(central["metadata"][name][()]) == json.loads(source["metadata"][name][()])
        assert "manifest" not in central["metadata"]
        info = json.loads(central["metadata/export"][()])
        assert info["format"] == "flair-central" and info["store"] == "store.h5"
    with pytest.raises(fedimage.StoreError, match="not a fedimage store"):
        fedimage.open(tmp_path / "central.h5")


def test_layout_matches_ml_flairs_h5py_calls(flair_folder: Path, tmp_path: Path):
    """Each dataset has the dtype, shape and string type that ml-flair's script produces."""
    store_path = flair_store(flair_folder, tmp_path / "store.h5")
    export(store_path, "flair-central", tmp_path / "central.h5", QUIET)
    reference = tmp_path / "reference.h5"
    with h5py.File(reference, "w") as h5:  # what prepare_dataset.py's central branch does for one image
        h5.create_dataset("/train/1000/image", data=np.zeros((64, 64, 3), dtype=np.uint8))
        h5["/train/1000/labels"] = "animal|plant"
        h5["/train/1000/fine_grained_labels"] = "cat|tree"
        h5["/train/1000/user_id"] = "59769174@N00"
        h5["/metadata/label_counter"] = json.dumps({"animal": 1})

    def describe(dataset: h5py.Dataset) -> tuple:
        kind = dataset.id.get_type()
        string = (
            (kind.is_variable_str(), kind.get_cset()) if isinstance(kind, h5py.h5t.TypeStringID) else None
        )
        return dataset.dtype, dataset.shape, string, dataset.id.get_create_plist().get_layout()

    with h5py.File(reference, "r") as expected, h5py.File(tmp_path / "central.h5", "r") as central:
        group = central["train"][next(iter(central["train"]))]
        assert sorted(group) == sorted(expected["/train/1000"])
        for name in group:
            assert describe(group[name]) == describe(expected[f"/train/1000/{name}"])
        assert describe(central["metadata/label_counter"]) == describe(expected["metadata/label_counter"])


def test_awkward_image_ids_are_encoded_and_recovered(tmp_path: Path):
    store_path = odd_store(tmp_path)
    export(store_path, "flair-central", tmp_path / "central.h5", QUIET)
    central = ml_flair_central(tmp_path / "central.h5")
    found = {
        user_id_from_key(key): entry["user_id"] for split in central.values() for key, entry in split.items()
    }
    assert found == {image_id: user for user, ids in ODD_USERS.items() for image_id in ids}
    assert "img%2F1" in central["train"]
