"""``dirs``: a folder per client with its JPEG files, metadata.json and a top-level index.json."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from helpers import ODD_USERS, QUIET, SIZE, flair_store, odd_store

import fedimage
from fedimage.errors import FedimageError
from fedimage.exports import export
from fedimage.exports.dirs import check_counts
from fedimage.exports.names import SAFE_CHARACTERS
from fedimage.store.reader import decode_jpeg


@pytest.mark.parametrize("storage", ["jpeg", "raw"])
def test_folders_hold_the_stores_images_and_labels(flair_folder: Path, tmp_path: Path, storage: str):
    store_path = flair_store(flair_folder, tmp_path / "store.h5", storage)
    export(store_path, "dirs", tmp_path / "dirs", QUIET)
    index = json.loads((tmp_path / "dirs" / "index.json").read_text())
    with fedimage.open(store_path) as store:
        assert index["label_mapping"] == store.label_mapping
        assert index["label_relationship"] == store.taxonomy and len(store.taxonomy) == 5
        assert index["image_size"] == SIZE
        for split in store.splits:
            assert index["splits"][split] == {
                "users": len(store.users(split)),
                "images": store.num_images(split),
            }
            assert {user: info["images"] for user, info in index["users"][split].items()} == store.users(
                split
            )
            for user_id, info in index["users"][split].items():
                folder = tmp_path / "dirs" / info["folder"]
                metadata = json.loads((folder / "metadata.json").read_text())
                assert (metadata["split"], metadata["user_id"]) == (split, user_id)
                user = store.load_user(split, user_id)
                assert [image["image_id"] for image in metadata["images"]] == user.image_ids
                for position, image in enumerate(metadata["images"]):
                    data = (folder / image["file"]).read_bytes()
                    assert hashlib.sha256(data).hexdigest() == image["sha256"]
                    if storage == "jpeg":
                        assert data == store.encoded_images(split, user_id)[position]
                    else:
                        assert np.abs(decode_jpeg(data).astype(int) - user.images[position]).mean() < 5
                    coarse = [store.label_names[i] for i in np.flatnonzero(user.labels[position])]
                    assert sorted(image["labels"]) == coarse
                    fine = [store.fine_label_names[i] for i in np.flatnonzero(user.fine_labels[position])]
                    assert sorted(image["fine_grained_labels"]) == fine


def test_awkward_ids_get_portable_distinct_names(tmp_path: Path):
    export(odd_store(tmp_path), "dirs", tmp_path / "dirs", QUIET)
    index = json.loads((tmp_path / "dirs" / "index.json").read_text())
    users = {user: info for split in index["users"].values() for user, info in split.items()}
    assert sorted(users) == sorted(ODD_USERS)
    portable = set(SAFE_CHARACTERS) | {"%", "~"}
    for user_id, info in users.items():
        folder = tmp_path / "dirs" / info["folder"]
        metadata = json.loads((folder / "metadata.json").read_text())
        assert metadata["user_id"] == user_id
        assert sorted(image["image_id"] for image in metadata["images"]) == sorted(ODD_USERS[user_id])
        files = [image["file"] for image in metadata["images"]]
        assert len({name.casefold() for name in files}) == len(files)
        for name in [folder.name, *files]:
            assert set(name) <= portable and not name.startswith(".") and len(name) <= 204
    assert users["UserA"]["folder"] != users["usera"]["folder"]
    assert users[".."]["folder"] == "train/%2E%2E"


def test_the_count_check_names_an_incomplete_user(flair_folder: Path, tmp_path: Path):
    export(flair_store(flair_folder, tmp_path / "store.h5"), "dirs", tmp_path / "dirs", QUIET)
    index = json.loads((tmp_path / "dirs" / "index.json").read_text())
    check_counts(tmp_path / "dirs", index["users"])
    user_id, info = next(iter(index["users"]["train"].items()))
    next((tmp_path / "dirs" / info["folder"]).glob("*.jpg")).unlink()
    (tmp_path / "dirs" / "val" / "stray").mkdir()
    with pytest.raises(FedimageError, match=f"user '{user_id}'.*images of") as error:
        check_counts(tmp_path / "dirs", index["users"])
    assert "val/stray: unexpected folder" in str(error.value)
