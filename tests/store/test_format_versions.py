"""Store format versions: version 2 names a jpeg store's bytes ``jpeg``/``jpeg_offsets``; version 3
digests each dataset's bytes with BLAKE3 in its group's checksum. Version 1 stores (bytes in
``images``/``image_offsets``, FLAIR's pixel names) and version 2 stores (SHA-256 digests) are still
read and verified.

An older store is written by this fedimage with ``schema.FORMAT_VERSION`` set to its version: the
writer, the manifest and the sealed header then use that version's names, digests and number, as
fedimage did before.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import blake3
import h5py
import numpy as np
import pytest
from helpers import QUIET, fast_options, files_of

import fedimage
from fedimage import ImageOptions, StoreError, convert, open_source
from fedimage.store import schema

KEY = bytes(range(32))


def convert_store(source: Path, output: Path, storage: str = "jpeg", key: bytes | None = None) -> Path:
    options = fast_options(image=ImageOptions(size=32, storage=storage), encrypt_key=key)
    convert(open_source(source, layout="user"), output, options)
    return output


def version_1_store(
    source: Path, output: Path, monkeypatch, storage: str = "jpeg", key: bytes | None = None
) -> Path:
    return older_store(1, source, output, monkeypatch, storage, key)


def older_store(
    version: int, source: Path, output: Path, monkeypatch, storage: str = "jpeg", key: bytes | None = None
) -> Path:
    with monkeypatch.context() as patch:
        patch.setattr(schema, "FORMAT_VERSION", version)
        return convert_store(source, output, storage, key)


def recomputed_checksums(path: Path, digest) -> dict[tuple[str, str], str]:
    """Every user group's checksum, recomputed by hand: SHA-256 over sorted lines
    ``name:dtype:shape:digest`` (``digest``: a hashlib-like constructor)."""
    sums = {}
    with h5py.File(path, "r") as h5:
        for split in (name for name in h5 if name != schema.METADATA):
            for key, group in h5[split].items():
                lines = []
                for name, dataset in group.items():
                    array = np.ascontiguousarray(dataset[()])
                    dims = "x".join(str(size) for size in array.shape)
                    lines.append(f"{name}:{array.dtype.str}:{dims}:{digest(array.tobytes()).hexdigest()}\n")
                sums[(split, key)] = hashlib.sha256("".join(sorted(lines)).encode("utf-8")).hexdigest()
    return sums


def manifest_checksums(path: Path) -> dict[tuple[str, str], str]:
    with fedimage.open(path) as store:
        users = store.manifest["users"]
        return {
            (split, schema.user_key(user)): users[split][user]["sha256"]
            for split in users
            for user in users[split]
        }


def user_groups(path: Path) -> list[h5py.Group]:
    with h5py.File(path, "r") as h5:
        return [sorted(h5[split][user]) for split in h5 if split != schema.METADATA for user in h5[split]]


def manifest_version(path: Path) -> int:
    with fedimage.open(path) as store:
        return store.manifest["format_version"]


class TestLayout:
    def test_jpeg_store_uses_no_flair_name_for_its_bytes(self, user_folder: Path, tmp_path: Path):
        path = convert_store(user_folder, tmp_path / "jpeg.h5")
        assert manifest_version(path) == schema.FORMAT_VERSION == 3
        for names in user_groups(path):
            assert {"jpeg", "jpeg_offsets"} <= set(names)
            assert "images" not in names and "image_offsets" not in names

    def test_raw_store_keeps_flair_images(self, user_folder: Path, tmp_path: Path):
        path = convert_store(user_folder, tmp_path / "raw.h5", storage="raw")
        with h5py.File(path, "r") as h5:
            for split in (name for name in h5 if name != schema.METADATA):
                for user in h5[split].values():
                    assert "jpeg" not in user and "jpeg_offsets" not in user
                    assert user["images"].dtype == np.uint8 and user["images"].shape[1:] == (32, 32, 3)

    def test_unknown_version_is_refused(self, user_folder: Path, tmp_path: Path, monkeypatch):
        with monkeypatch.context() as patch:
            patch.setattr(schema, "FORMAT_VERSION", 4)
            path = convert_store(user_folder, tmp_path / "future.h5")
        with pytest.raises(StoreError, match="format version 4; this fedimage reads versions 1, 2, 3"):
            fedimage.open(path)
        assert not fedimage.verify_store(path).ok


class TestDatasetDigests:
    @pytest.mark.parametrize("storage", ["jpeg", "raw"])
    def test_version_3_digests_datasets_with_blake3(self, user_folder: Path, tmp_path: Path, storage: str):
        path = convert_store(user_folder, tmp_path / "v3.h5", storage=storage)
        recorded = manifest_checksums(path)
        assert len(recorded) > 1
        assert recomputed_checksums(path, blake3.blake3) == recorded
        assert recomputed_checksums(path, hashlib.sha256).keys() == recorded.keys()
        assert not set(recomputed_checksums(path, hashlib.sha256).values()) & set(recorded.values())
        assert fedimage.verify_store(path).ok

    @pytest.mark.parametrize("storage", ["jpeg", "raw"])
    def test_version_2_store_keeps_sha256_and_verifies(
        self, user_folder: Path, tmp_path: Path, monkeypatch, storage: str
    ):
        path = older_store(2, user_folder, tmp_path / "v2.h5", monkeypatch, storage)
        assert manifest_version(path) == 2
        assert recomputed_checksums(path, hashlib.sha256) == manifest_checksums(path)
        report = fedimage.verify_store(path, decode=True)
        assert report.ok and report.images_checked == 15, report.problems

    def test_damage_is_found_in_either_version(self, user_folder: Path, tmp_path: Path, monkeypatch):
        for version in (2, 3):
            path = older_store(version, user_folder, tmp_path / f"v{version}.h5", monkeypatch, "raw")
            with h5py.File(path, "r+") as h5:
                user = next(iter(h5["train"].values()))
                user["images"][0, 0, 0, 0] ^= 1
            problems = fedimage.verify_store(path).problems
            assert len(problems) == 1 and "checksum mismatch" in problems[0], (version, problems)


class TestVersion1:
    def test_is_read_verified_and_exported_like_version_2(
        self, user_folder: Path, tmp_path: Path, monkeypatch
    ):
        old = version_1_store(user_folder, tmp_path / "v1.h5", monkeypatch)
        new = convert_store(user_folder, tmp_path / "v2.h5")
        assert manifest_version(old) == 1
        for names in user_groups(old):  # version 1's layout
            assert {"images", "image_offsets"} <= set(names) and "jpeg" not in names
        report = fedimage.verify_store(old, decode=True)
        assert report.ok and report.images_checked == 15, report.problems
        with fedimage.open(old) as a, fedimage.open(new) as b:
            assert a.image_datasets == ("images", "image_offsets")
            assert b.image_datasets == ("jpeg", "jpeg_offsets")
            for split in b.splits:
                for user_id in b.users(split):
                    first, second = a.load_user(split, user_id), b.load_user(split, user_id)
                    np.testing.assert_array_equal(first.images, second.images)
                    np.testing.assert_array_equal(first.labels, second.labels)
                    assert a.encoded_images(split, user_id) == b.encoded_images(split, user_id)
                    np.testing.assert_array_equal(a.load_image(split, user_id, -1), second.images[-1])
        for to in ("parquet", "tfrecords"):
            fedimage.export(old, to, tmp_path / f"v1-{to}", QUIET)
            fedimage.export(new, to, tmp_path / f"v2-{to}", QUIET)
            assert files_of(tmp_path / f"v1-{to}") == files_of(tmp_path / f"v2-{to}"), to
        assert fedimage.export(old, "flair-central", tmp_path / "v1-central.h5", QUIET).images == 15

    def test_raw_store_is_read(self, user_folder: Path, tmp_path: Path, monkeypatch):
        old = version_1_store(user_folder, tmp_path / "v1.h5", monkeypatch, storage="raw")
        assert fedimage.verify_store(old, decode=True).ok
        with fedimage.open(old) as store:
            user = next(store.iter_users("train"))
            assert user.images.shape[1:] == (32, 32, 3)

    def test_encrypted_store_is_read_and_verified(self, user_folder: Path, tmp_path: Path, monkeypatch):
        pytest.importorskip("cryptography")
        old = version_1_store(user_folder, tmp_path / "v1.h5", monkeypatch, key=KEY)
        new = convert_store(user_folder, tmp_path / "v2.h5", key=KEY)
        with h5py.File(old, "r") as h5:
            assert '"format_version": 1' in h5["metadata/manifest"].asstr()[()]
        for path in (old, new):
            report = fedimage.verify_store(path, decode=True, key=KEY)
            assert report.ok and report.images_checked == 15, report.problems
        with fedimage.open(old, key=KEY) as a, fedimage.open(new, key=KEY) as b:
            assert set(a.group("train", next(iter(a.users("train"))))) >= {"images", "image_offsets"}
            assert set(b.group("train", next(iter(b.users("train"))))) >= {"jpeg", "jpeg_offsets"}
            for split in b.splits:
                for user_id in b.users(split):
                    np.testing.assert_array_equal(
                        a.load_user(split, user_id).images, b.load_user(split, user_id).images
                    )
