"""The store writer's own guarantees: one group per user, small datasets in their headers, disk
reserved ahead without changing a file's bytes."""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import pytest

from fedimage.errors import StoreError
from fedimage.store.writer import (
    COMPACT_BYTES,
    StoreWriter,
    release_unused_space,
    reserve_space,
    write_dataset,
)


def new_writer(path: Path, **options) -> StoreWriter:
    return StoreWriter(path, storage="jpeg", image_size=8, coarse_labels=["a"], fine_labels=["b"], **options)


def test_a_user_written_twice_is_refused(tmp_path: Path):
    with new_writer(tmp_path / "s.h5") as writer:
        for _ in range(2):
            group = writer.user("train", "u1")
            group.add(b"\xff\xd8jpeg", "img", ("a",), ("b",))
            if _ == 0:
                group.close()
        with pytest.raises(StoreError, match="user 'u1' written twice to split 'train'"):
            group.close()


def test_small_datasets_are_compact_and_read_back_the_same(tmp_path: Path):
    small = np.arange(COMPACT_BYTES // 8, dtype=np.int64)
    large = np.arange(COMPACT_BYTES // 8 + 1, dtype=np.int64)
    with h5py.File(tmp_path / "f.h5", "w") as file:
        write_dataset(file, "small", small)
        write_dataset(file, "large", large)
        write_dataset(file, "empty", np.zeros(0, dtype=np.uint8))
    with h5py.File(tmp_path / "f.h5", "r") as file:
        assert file["small"].id.get_create_plist().get_layout() == h5py.h5d.COMPACT
        assert file["large"].id.get_create_plist().get_layout() == h5py.h5d.CONTIGUOUS
        np.testing.assert_array_equal(file["small"][()], small)
        np.testing.assert_array_equal(file["large"][()], large)
        assert file["empty"].shape == (0,)


def test_reserving_space_changes_no_byte(tmp_path: Path):
    data = np.random.default_rng(0).integers(0, 255, 3 << 20, dtype=np.uint8)
    files = {}
    for reserve in (False, True):
        path = tmp_path / f"reserved-{reserve}.h5"
        with h5py.File(path, "w") as file:
            if reserve:
                reserved = reserve_space(path, 64 << 20)
            write_dataset(file, "pixels", data)
        if reserve and reserved:
            assert os.stat(path).st_blocks * 512 >= 64 << 20  # allocated past the end...
            release_unused_space(path)
            assert os.stat(path).st_blocks * 512 < 8 << 20  # ...and given back
        files[reserve] = path.read_bytes()
    assert files[False] == files[True]
