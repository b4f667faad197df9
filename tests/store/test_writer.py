"""The store writer's own guarantees: one group per user, small datasets in their headers, disk
reserved ahead without changing a file's bytes, pixels written past the page cache where aligned."""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
from pathlib import Path

import h5py
import numpy as np
import pytest

from fedimage.errors import StoreError
from fedimage.store import writer as writer_module
from fedimage.store.writer import (
    COMPACT_BYTES,
    DIRECT_ALIGNMENT,
    PixelWrites,
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


def pixel_pieces() -> tuple[mmap.mmap, list[tuple[int, memoryview]]]:
    """Page-aligned memory (as a conversion's shared slots are) cut into aligned and unaligned runs."""
    memory = mmap.mmap(-1, 6 * DIRECT_ALIGNMENT)
    memory[:] = np.random.default_rng(1).integers(0, 255, len(memory), dtype=np.uint8).tobytes()
    view = memoryview(memory)
    pieces = [
        (0, view[: 2 * DIRECT_ALIGNMENT]),  # aligned: memory, offset and length
        (3 * DIRECT_ALIGNMENT, view[2 * DIRECT_ALIGNMENT : 3 * DIRECT_ALIGNMENT + 100]),  # length not
        (5 * DIRECT_ALIGNMENT + 7, view[4 * DIRECT_ALIGNMENT : 5 * DIRECT_ALIGNMENT]),  # offset not
        (7 * DIRECT_ALIGNMENT, view[5 * DIRECT_ALIGNMENT + 1 : 6 * DIRECT_ALIGNMENT]),  # neither
    ]
    return memory, pieces


def expected_file(pieces: list[tuple[int, memoryview]]) -> bytes:
    content = bytearray(max(offset + len(data) for offset, data in pieces))
    for offset, data in pieces:
        content[offset : offset + len(data)] = data
    return bytes(content)


def direct_supported(path: Path) -> bool:
    descriptor = writer_module._open_direct(path)
    if descriptor is None:
        return False
    os.close(descriptor)
    return True


@pytest.mark.parametrize("direct", [False, True])
def test_pixel_writes_put_every_run_in_place_and_only_aligned_runs_past_the_page_cache(
    tmp_path: Path, monkeypatch, direct: bool
):
    path = tmp_path / "pixels.bin"
    path.touch()
    if direct and not direct_supported(path):
        pytest.skip(f"the file system of {tmp_path} refuses O_DIRECT")
    _memory, pieces = pixel_pieces()
    written = []
    original = os.pwrite

    def recording(descriptor, data, offset):
        written.append((_is_direct(descriptor), offset, len(data)))
        return original(descriptor, data, offset)

    monkeypatch.setattr(writer_module.os, "pwrite", recording)
    calls = []
    writes = PixelWrites(path, direct=direct)
    writes.submit(pieces, lambda: calls.append("then")).result()
    writes.close()
    assert calls == ["then"]
    assert path.read_bytes() == expected_file(pieces)
    assert [was_direct for was_direct, _, _ in written] == [direct, False, False, False]


def _is_direct(descriptor: int) -> bool:
    return bool(fcntl.fcntl(descriptor, fcntl.F_GETFL) & getattr(os, "O_DIRECT", 0))


def test_pixel_writes_fall_back_to_the_page_cache_when_direct_writes_are_refused(tmp_path: Path, monkeypatch):
    """A file system that opens with O_DIRECT but refuses the writes (EINVAL): the same bytes, buffered."""
    path = tmp_path / "pixels.bin"
    path.touch()
    if not direct_supported(path):
        pytest.skip(f"the file system of {tmp_path} refuses O_DIRECT")
    original = os.pwrite
    refused = []

    def refusing(descriptor, data, offset):
        if _is_direct(descriptor):
            refused.append(offset)
            raise OSError(errno.EINVAL, "Invalid argument")
        return original(descriptor, data, offset)

    monkeypatch.setattr(writer_module.os, "pwrite", refusing)
    memory, pieces = pixel_pieces()
    writes = PixelWrites(path, direct=True)
    writes.submit(pieces, lambda: None)
    writes.submit([(9 * DIRECT_ALIGNMENT, memoryview(memory)[:DIRECT_ALIGNMENT])], lambda: None)
    writes.close()
    assert refused == [0]  # tried once, then never again
    assert path.read_bytes() == expected_file(
        [*pieces, (9 * DIRECT_ALIGNMENT, memoryview(memory)[:DIRECT_ALIGNMENT])]
    )
