"""The ray executor on a local Ray instance: shard files linked from one top-level store."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from helpers import fast_options

import fedimage
from fedimage import convert, open_source
from fedimage.conversion import workdir as shards

ray = pytest.importorskip("ray")


pytestmark = pytest.mark.slow  # Ray, Flower, pfl, training or a docs build: `make test-fast` skips it


def assert_same_users(local: Path, linked: Path) -> None:
    """The linked store holds the local store's users, image for image, and verifies."""
    with fedimage.open(local) as a, fedimage.open(linked) as b:
        assert a.read_metadata("manifest")["users"] == b.read_metadata("manifest")["users"]
        for split in a.splits:
            for user in a.users(split):
                expected = a.load_user(split, user).images
                np.testing.assert_array_equal(expected, b.load_user(split, user).images)
    assert fedimage.verify_store(linked).ok


def test_ray_engine_links_shards_and_reads_like_a_local_store(user_folder: Path, tmp_path: Path, monkeypatch):
    monkeypatch.setattr(shards, "SHARD_IMAGES", 4)
    local = convert(open_source(user_folder, layout="user"), tmp_path / "local.h5", fast_options())
    output = tmp_path / "ray.h5"
    report = convert(open_source(user_folder, layout="user"), output, fast_options(executor="ray", workers=2))
    assert report.written == local.written == 15 and report.splits == local.splits
    shard_files = sorted((tmp_path / "ray.h5.shards").glob("shard-*.h5"))
    assert len(shard_files) > 1
    assert not (tmp_path / "ray.h5.work").exists()

    with h5py.File(output, "r") as file:
        split = next(iter(file[key] for key in file if key != "metadata"))
        link = split.get(next(iter(split)), getlink=True)
        assert isinstance(link, h5py.ExternalLink) and link.filename.startswith("ray.h5.shards/")

    assert_same_users(tmp_path / "local.h5", output)

    # The store and its shard folder move together: links are relative to the top-level file.
    moved = tmp_path / "moved"
    moved.mkdir()
    output.rename(moved / output.name)
    (tmp_path / "ray.h5.shards").rename(moved / "ray.h5.shards")
    assert fedimage.verify_store(moved / output.name).ok


def test_ray_engine_spreads_large_users_in_batches(user_folder: Path, tmp_path: Path, monkeypatch):
    from fedimage.conversion import shard as shard_writing

    local = tmp_path / "local.h5"
    convert(open_source(user_folder, layout="user"), local, fast_options())
    monkeypatch.setattr(shard_writing, "LARGE_USER_IMAGES", 3)
    monkeypatch.setattr(shard_writing, "BATCH_SIZE", 2)
    batched = []
    original = shard_writing.image_batches
    spy = lambda *args: batched.append(args[2]) or original(*args)  # noqa: E731
    monkeypatch.setattr(shard_writing, "image_batches", spy)
    output = tmp_path / "ray.h5"
    convert(open_source(user_folder, layout="user"), output, fast_options(executor="ray", workers=2))
    assert batched  # the large users' shards went out as batches, written by the driver
    assert_same_users(local, output)
