"""The reader API and ``verify``: users, decoding in both storage modes, tampering detection."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from helpers import fast_options, photo, save_image, write_jsonl

import fedimage
from fedimage import ImageOptions, PlanOptions, SplitRatios, convert, open_source
from fedimage.errors import StoreError
from fedimage.sources.sample import sample_manifest
from fedimage.store.schema import user_id_from_key, user_key


@pytest.fixture
def stores(user_folder: Path, tmp_path: Path) -> dict[str, Path]:
    source = open_source(user_folder, layout="user")
    paths = {}
    for storage in ("jpeg", "raw"):
        paths[storage] = tmp_path / f"{storage}.h5"
        convert(
            source, paths[storage], fast_options(image=ImageOptions(size=48, storage=storage, quality=95))
        )
    return paths


class TestReader:
    def test_structure_and_users(self, stores):
        with fedimage.open(stores["jpeg"]) as store:
            assert store.splits == ["train", "val", "test"]
            users = {user: count for split in store.splits for user, count in store.users(split).items()}
            assert users == {f"user{i}": i + 1 for i in range(5)}
            assert store.num_images() == 15
            assert store.storage == "jpeg" and store.image_size == 48
            assert repr(store).startswith('<fedimage store "') and "(open)" in repr(store)
        assert "(closed)" in repr(store)

    def test_both_storage_modes_decode_to_nearly_the_same_pixels(self, stores):
        with fedimage.open(stores["jpeg"]) as jpeg, fedimage.open(stores["raw"]) as raw:
            for split in raw.splits:
                for user_id in raw.users(split):
                    a, b = jpeg.load_user(split, user_id), raw.load_user(split, user_id)
                    assert a.images.shape == b.images.shape == (len(b), 48, 48, 3)
                    assert a.images.dtype == np.uint8
                    assert np.abs(a.images.astype(int) - b.images).mean() < 6  # q95 with 4:2:0 chroma
                    assert a.image_ids == b.image_ids
                    np.testing.assert_array_equal(a.labels, b.labels)
                    np.testing.assert_array_equal(jpeg.load_image(split, user_id, 0), a.images[0])
                    np.testing.assert_array_equal(raw.load_image(split, user_id, len(b) - 1), b.images[-1])

    def test_iter_users_and_targets(self, stores):
        with fedimage.open(stores["raw"]) as store:
            loaded = list(store.iter_users("train"))
            assert [user.user_id for user in loaded] == list(store.users("train"))
            assert all(user.labels.shape == (len(user), 0) for user in loaded)  # this source has no labels

    def test_unknown_user_and_split_errors_are_clear(self, stores):
        with fedimage.open(stores["jpeg"]) as store:
            with pytest.raises(fedimage.UnknownUserError, match=r"user 'nobody' is not in split 'train'"):
                store.load_user("train", "nobody")
            with pytest.raises(KeyError):
                store.load_user("train", "nobody")
            with pytest.raises(fedimage.UnknownUserError, match="its splits are: train, val, test"):
                store.users("validation")

    def test_opening_non_stores(self, tmp_path: Path):
        with pytest.raises(StoreError, match="store not found"):
            fedimage.open(tmp_path / "missing.h5")
        (tmp_path / "text.h5").write_text("hello")
        with pytest.raises(StoreError, match="not a readable HDF5 file"):
            fedimage.open(tmp_path / "text.h5")
        with h5py.File(tmp_path / "plain.h5", "w") as handle:
            handle["x"] = 1
        with pytest.raises(StoreError, match="not a fedimage store"):
            fedimage.open(tmp_path / "plain.h5")


@pytest.mark.parametrize("user_id", ["plain", "59769174@N00", "a/b", "100%", ".", "..", "ünï cødé"])
def test_user_keys_round_trip(user_id):
    key = user_key(user_id)
    assert "/" not in key and key not in (".", "..")
    assert user_id_from_key(key) == user_id


def test_awkward_user_ids_are_stored_and_read(tmp_path: Path):
    rows = []
    for index, user in enumerate(["a/b", "..", "x%y", "ünï"]):
        save_image(tmp_path / f"{index}.png", photo(20, 20, seed=index))
        rows.append({"image": f"{index}.png", "user_id": user})
    manifest = write_jsonl(tmp_path / "m.jsonl", rows)
    options = fast_options(plan=PlanOptions(split=SplitRatios(("train",), (1.0,))))
    convert(open_source(manifest), tmp_path / "out.h5", options)
    with fedimage.open(tmp_path / "out.h5") as store:
        assert sorted(store.users("train")) == sorted(["a/b", "..", "x%y", "ünï"])
        assert len(store.load_user("train", "a/b")) == 1
    assert fedimage.verify_store(tmp_path / "out.h5").ok


class TestVerify:
    def test_clean_store_passes(self, stores):
        for path in stores.values():
            report = fedimage.verify_store(path, decode=True)
            assert report.ok, report.problems
            assert report.users_checked == 5 and report.images_checked == 15

    def test_flipped_byte_is_named(self, stores):
        path = stores["jpeg"]
        with fedimage.open(path) as store:
            split, user = "train", next(iter(store.users("train")))
        with h5py.File(path, "r+") as handle:
            images = handle[f"{split}/{user}/jpeg"]
            images[100] = images[100] ^ 0xFF
        report = fedimage.verify_store(path)
        assert not report.ok
        assert report.problems == [
            f"{split}/{user}: checksum mismatch (content changed since it was written)"
        ]

    def test_structural_problems_are_named(self, stores):
        path = stores["raw"]
        with fedimage.open(path) as store:
            users = [(split, user) for split in store.splits for user in store.users(split)]
        (s1, u1), (s2, u2), (s3, _u3) = users[:3]
        with h5py.File(path, "r+") as handle:
            del handle[f"{s1}/{u1}"]
            del handle[f"{s2}/{u2}/labels_row"]
            handle.create_group(f"{s3}/intruder")
        problems = fedimage.verify_store(path).problems
        assert f"{s1}/{u1}: group missing" in problems
        assert f"{s2}/{u2}: missing datasets: labels_row" in problems
        assert f"{s3}/intruder: group not listed in the manifest" in problems

    def test_unreadable_store(self, tmp_path: Path):
        (tmp_path / "bad.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
        report = fedimage.verify_store(tmp_path / "bad.h5")
        assert not report.ok and report.problems[0].startswith("cannot open store")


def test_a_fresh_interpreter_opens_an_encrypted_store_with_only_import_fedimage(tmp_path: Path):
    """``import fedimage`` imports nothing eagerly: opening a sealed store must load its scheme."""
    import subprocess
    import sys

    from fedimage.privacy.keys import SCHEME
    from fedimage.privacy.pseudonyms import generate_key_file
    from fedimage.store.sealing import SCHEME_PROVIDERS

    assert SCHEME in SCHEME_PROVIDERS
    key = tmp_path / "store.key"
    generate_key_file(key)
    store = tmp_path / "sealed.h5"
    convert_sample_sealed = (
        "import fedimage\n"
        f"report = fedimage.convert(fedimage.open_source({str(sample_manifest())!r}), {str(store)!r},"
        f" fedimage.ConvertOptions(image=fedimage.ImageOptions(size=16), workers=1, quiet=True,"
        f" encrypt_key=__import__('fedimage.privacy', fromlist=['load_key']).load_key({str(key)!r})))\n"
    )
    subprocess.run([sys.executable, "-c", convert_sample_sealed], check=True, timeout=120)
    reading = (
        f"import fedimage\nwith fedimage.open({str(store)!r}, key={str(key)!r}) as s: print(s.num_images())\n"
    )
    result = subprocess.run([sys.executable, "-c", reading], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "300"
