"""Encryption at rest: sealed user groups and metadata, keys and passphrases, tampering, determinism."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import pytest
from helpers import fast_options, photo, save_image
from hypothesis import given, settings
from hypothesis import strategies as st

import fedimage
from fedimage import ImageOptions, Passphrase, convert, open_source
from fedimage.analysis.heterogeneity import heterogeneity_from_store
from fedimage.analysis.summary import summarize
from fedimage.cli import main
from fedimage.conversion.workdir import WorkDir
from fedimage.errors import FedimageError, OptionError, StoreError
from fedimage.privacy import keys as encryption_keys
from fedimage.privacy.encryption_container import pack_arrays, unpack_arrays
from fedimage.privacy.keys import ScryptParams
from fedimage.privacy.pseudonyms import generate_key_file
from fedimage.store.verify import verify_store

pytest.importorskip("cryptography")
from fedimage.privacy.encryption import SEALED, StoreCipher

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
FAST_SCRYPT = ScryptParams(n=2**4, r=8, p=1)


@pytest.fixture(autouse=True)
def fast_scrypt() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(encryption_keys, "NEW_STORE_SCRYPT", FAST_SCRYPT)
        yield


def make_source(root: Path, users: int = 4, seed: int = 0) -> Path:
    """root/<user>/<label>/<image>: users with 1..users JPEGs and a label each."""
    for user in range(users):
        for index in range(user + 1):
            label = ("cat", "dog")[index % 2]
            save_image(
                root / f"user{user}" / label / f"img{index}.jpg", photo(40, 30, seed=seed + 10 * user + index)
            )
    return root


def convert_to(source: Path, output: Path, key=None, storage: str = "jpeg", **options) -> Path:
    image = ImageOptions(size=16, storage=storage, quality=90)
    convert(
        open_source(source, layout="user/class"),
        output,
        fast_options(image=image, encrypt_key=key, **options),
    )
    return output


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return make_source(tmp_path / "src")


@pytest.fixture
def sealed(source: Path, tmp_path: Path) -> Path:
    return convert_to(source, tmp_path / "sealed.h5", KEY)


def all_users(store: fedimage.FederatedStore) -> Iterator[tuple[str, str]]:
    for split in store.splits:
        for user_id in store.users(split):
            yield split, user_id


def snapshot(path: Path, key=None) -> dict:
    """Everything the reader returns for a store."""
    with fedimage.open(path, key=key) as store:
        data = {"labels": store.label_names, "fine": store.fine_label_names, "taxonomy": store.taxonomy}
        for split, user_id in all_users(store):
            user = store.load_user(split, user_id)
            data[split, user_id] = (user.images.tobytes(), user.labels.tobytes(), tuple(user.image_ids))
        return data


arrays_strategy = st.dictionaries(
    st.text(min_size=1, max_size=12),
    st.one_of(
        st.lists(st.integers(0, 255), max_size=40).map(lambda v: np.asarray(v, dtype=np.uint8)),
        st.lists(st.integers(-(2**40), 2**40), max_size=10).map(lambda v: np.asarray(v, dtype=np.int64)),
        st.lists(st.binary(min_size=1, max_size=8), min_size=1, max_size=6).map(
            lambda v: np.asarray(v, dtype="S")
        ),
        st.integers(0, 3).map(lambda n: np.arange(n * 6, dtype=np.uint16).reshape(n, 2, 3)),
    ),
    max_size=5,
)


class TestContainerAndCipher:
    @given(arrays=arrays_strategy)
    @settings(max_examples=150, deadline=None)
    def test_container_round_trip_is_exact_and_deterministic(self, arrays):
        packed = pack_arrays(arrays)
        assert packed == pack_arrays(arrays)
        unpacked = unpack_arrays(packed)
        assert list(unpacked) == list(arrays)
        for name, array in arrays.items():
            assert unpacked[name].dtype == array.dtype and unpacked[name].shape == array.shape
            np.testing.assert_array_equal(unpacked[name], array)
            assert not unpacked[name].flags.writeable

    def test_container_refuses_objects_and_garbage(self):
        with pytest.raises(StoreError, match="integers, floats and bytes only"):
            pack_arrays({"x": np.asarray(["text"], dtype=object)})
        floats = np.asarray([1.5, np.nan])  # per-image metadata: float columns
        np.testing.assert_array_equal(unpack_arrays(pack_arrays({"x": floats}))["x"], floats)
        with pytest.raises(StoreError, match="not a fedimage array container"):
            unpack_arrays(b"\x93NUMPY pickle")
        packed = bytearray(pack_arrays({"x": np.arange(4, dtype=np.uint8)}))
        with pytest.raises(StoreError, match="does not fit"):
            unpack_arrays(bytes(packed[:-8]))

    @given(
        arrays=arrays_strategy,
        split=st.text(min_size=1, max_size=8),
        user=st.text(max_size=20),
        other=st.text(max_size=20),
    )
    @settings(max_examples=100, deadline=None)
    def test_seal_open_round_trip_bound_to_user_split_and_store(self, arrays, split, user, other):
        cipher = StoreCipher.for_new_store(KEY, b"store one")
        sealed = cipher.seal_user(split, user, arrays)
        blob = sealed.data.tobytes()
        opened = cipher.open_user(split, user, blob, sealed.nonce)
        for name, array in arrays.items():
            np.testing.assert_array_equal(opened[name], array)
        assert cipher.seal_user(split, user, arrays).data.tobytes() == blob  # deterministic
        if other != user:
            with pytest.raises(StoreError, match="authentication failed"):
                cipher.open_user(split, other, blob)
        with pytest.raises(StoreError, match="authentication failed"):
            cipher.open_user(split + "x", user, blob)
        another_store = StoreCipher.for_new_store(KEY, b"store two")
        with pytest.raises(StoreError, match="authentication failed"):
            another_store.open_user(split, user, blob)

    def test_every_single_byte_flip_of_a_sealed_blob_is_rejected(self):
        cipher = StoreCipher.for_new_store(KEY, b"fingerprint")
        arrays = {
            "images": np.arange(300, dtype=np.uint16).astype(np.uint8),
            "ids": np.asarray([b"a", b"bc"]),
        }
        blob = bytearray(cipher.seal_user("train", "u1", arrays).data.tobytes())
        for position in range(len(blob)):
            for bit in (0x01, 0x80):
                blob[position] ^= bit
                with pytest.raises(StoreError):
                    cipher.open_user("train", "u1", bytes(blob))
                blob[position] ^= bit
        for cut in (0, 11, 27, len(blob) - 1):
            with pytest.raises(StoreError):
                cipher.open_user("train", "u1", bytes(blob[:cut]))

    def test_distinct_plaintexts_get_distinct_nonces(self):
        cipher = StoreCipher.for_new_store(KEY, b"fingerprint")
        nonces = {
            cipher.seal_user("train", "u", {"x": np.asarray([i], dtype=np.int64)}).nonce for i in range(500)
        }
        assert len(nonces) == 500

    def test_repr_hides_the_key(self):
        cipher = StoreCipher.for_new_store(KEY, b"f")
        assert KEY.hex() not in repr(cipher) and "hidden" in repr(cipher)
        assert "secret" not in repr(Passphrase("secret"))


class TestEncryptedStore:
    @pytest.mark.parametrize("storage", ["jpeg", "raw"])
    def test_every_reader_entry_point_matches_the_plain_store(self, source, tmp_path, storage):
        plain = convert_to(source, tmp_path / "plain.h5", storage=storage)
        sealed = convert_to(source, tmp_path / "sealed.h5", KEY, storage=storage)
        assert snapshot(plain) == snapshot(sealed, KEY)
        with fedimage.open(plain) as a, fedimage.open(sealed, key=KEY) as b:
            assert b.encrypted and not a.encrypted and "encrypted" in repr(b)
            assert a.read_metadata("label_counter") == b.read_metadata("label_counter")
            for split, user_id in all_users(a):
                assert a.users(split) == b.users(split)
                np.testing.assert_array_equal(
                    a.load_targets(split, user_id, "fine"), b.load_targets(split, user_id, "fine")
                )
                np.testing.assert_array_equal(
                    a.load_image(split, user_id, -1), b.load_image(split, user_id, -1)
                )
                if storage == "jpeg":
                    assert a.encoded_images(split, user_id) == b.encoded_images(split, user_id)
                else:
                    b.load_user(split, user_id).images[0, 0, 0] = 1  # a copy, not the decrypted buffer
                assert [u.image_ids for u in a.iter_users(split)] == [
                    u.image_ids for u in b.iter_users(split)
                ]
            summary_a, summary_b = summarize(a), summarize(b)
        assert summary_b["encryption"]["key"] == "key-file" and summary_a["encryption"] is None
        for name in ("splits", "labels_per_image", "top_labels", "top_fine_labels"):
            assert summary_a[name] == summary_b[name]

    def test_nothing_but_the_public_header_is_readable_without_the_key(self, sealed, source):
        data = sealed.read_bytes()
        for secret in (b"img0", b"cat", b"dog", b"label_counter", b"sha256", b"user/class", b"\xff\xd8\xff"):
            assert secret not in data, secret
        with h5py.File(sealed, "r") as file:
            assert sorted(file["metadata"]) == ["manifest", SEALED]
            manifest = json.loads(file["metadata/manifest"][()])
            assert set(manifest) == {"format", "format_version", "encryption"}
            for split in ("train", "val", "test"):
                for group in file[split].values():
                    assert list(group) == [SEALED]  # user ids stay visible as group names

    def test_missing_wrong_and_mismatched_keys_are_clear_errors(self, sealed, source, tmp_path):
        with pytest.raises(StoreError, match=r"is encrypted .*key="):
            fedimage.open(sealed)
        with pytest.raises(StoreError, match="wrong key"):
            fedimage.open(sealed, key=OTHER_KEY)
        with pytest.raises(StoreError, match="under a key file"):
            fedimage.open(sealed, key=Passphrase("guess"))
        plain = convert_to(source, tmp_path / "plain.h5")
        with pytest.raises(OptionError, match="not encrypted"):
            fedimage.open(plain, key=KEY)
        with pytest.raises(OptionError, match="32 bytes"):
            fedimage.open(sealed, key=b"short")
        with pytest.raises(StoreError, match="is encrypted"):
            heterogeneity_from_store(sealed)
        report = verify_store(sealed)
        assert not report.ok and "is encrypted" in report.problems[0]

    def test_key_file_path_and_verify(self, source, tmp_path):
        key_file = generate_key_file(tmp_path / "store.key")
        path = convert_to(source, tmp_path / "k.h5", key_file)
        report = verify_store(path, key=key_file, decode=True)
        assert report.ok, report.problems
        assert report.users_checked == 4 and report.images_checked == 10

    def test_swapped_blobs_are_detected_naming_the_user(self, sealed):
        with fedimage.open(sealed, key=KEY) as store:
            (split_a, user_a), (split_b, user_b) = list(all_users(store))[:2]
        with h5py.File(sealed, "r+") as file:
            a, b = file[f"{split_a}/{user_a}/{SEALED}"][()], file[f"{split_b}/{user_b}/{SEALED}"][()]
            for (split, user), data in (((split_a, user_a), b), ((split_b, user_b), a)):
                del file[f"{split}/{user}/{SEALED}"]
                file[f"{split}/{user}"][SEALED] = data
        with fedimage.open(sealed, key=KEY) as store:
            for split, user in ((split_a, user_a), (split_b, user_b)):
                with pytest.raises(StoreError, match=f"user {user!r} of split {split!r}"):
                    store.load_user(split, user)
        report = verify_store(sealed, key=KEY)
        assert len(report.problems) == 2 and all(
            "not the one this store's manifest records" in p for p in report.problems
        )

    def test_blob_moved_from_another_store_is_detected(self, source, tmp_path):
        first = convert_to(source, tmp_path / "first.h5", KEY)
        other_source = make_source(tmp_path / "other", seed=100)
        second = convert_to(other_source, tmp_path / "second.h5", KEY, plan=fedimage.PlanOptions(seed=5))
        with fedimage.open(first, key=KEY) as store:
            split, user = next(all_users(store))
            nonce = store.manifest["users"][split][user]["nonce"]
        with fedimage.open(second, key=KEY) as store:
            target_split = next(s for s in store.splits if user in store.users(s))
        with h5py.File(second, "r+") as target, h5py.File(first, "r") as origin:
            del target[f"{target_split}/{user}/{SEALED}"]
            target[f"{target_split}/{user}"][SEALED] = origin[f"{split}/{user}/{SEALED}"][()]
        with fedimage.open(second, key=KEY) as store:
            with pytest.raises(StoreError, match=f"user {user!r}"):
                store.load_user(target_split, user)
            cipher = store._cipher
        with h5py.File(second, "r") as file:  # even without the manifest's pin, the tag refuses it
            blob = file[f"{target_split}/{user}/{SEALED}"][()].tobytes()
        assert blob[:12].hex() == nonce
        with pytest.raises(StoreError, match="authentication failed"):
            cipher.open_user(target_split, user, blob)

    def test_single_byte_flips_anywhere_give_an_error_or_the_original_data(self, sealed, tmp_path):
        original = snapshot(sealed, KEY)
        data = sealed.read_bytes()
        with h5py.File(sealed, "r") as file:  # every sealed blob's extent in the file
            regions = [
                (dataset.id.get_offset(), dataset.id.get_offset() + dataset.nbytes)
                for dataset in (file[name] for name in _sealed_datasets(file))
            ]
        rng = np.random.default_rng(0)
        positions = set(rng.choice(len(data), size=min(len(data), 400), replace=False).tolist())
        for start, stop in regions:  # the sealed bytes themselves: a sample of each, both ends included
            positions.update(range(start, min(stop, start + 16)))  # nonce and container header
            positions.update(range(max(start, stop - 16), stop))  # tag
            positions.update(rng.integers(start, stop, size=24).tolist())
        tampered = tmp_path / "tampered.h5"
        outcomes = {"error": 0, "unchanged": 0}
        for position in sorted(positions):
            flipped = bytearray(data)
            flipped[position] ^= 1 << int(rng.integers(8))
            tampered.write_bytes(flipped)
            try:
                result = snapshot(tampered, KEY)
            except FedimageError:
                outcomes["error"] += 1
                continue
            assert result == original, f"byte {position} changed the data without an error"
            outcomes["unchanged"] += 1
            assert not any(start <= position < stop for start, stop in regions)
        assert outcomes["error"] >= len(regions) * 40

    def test_determinism_same_key_same_bytes_other_key_other_store(self, source, tmp_path):
        one = convert_to(source, tmp_path / "one.h5", KEY).read_bytes()
        two = convert_to(source, tmp_path / "two.h5", KEY, workers=2).read_bytes()
        assert one == two
        other = tmp_path / "other.h5"
        convert_to(source, other, OTHER_KEY)
        with fedimage.open(tmp_path / "one.h5", key=KEY) as a, fedimage.open(other, key=OTHER_KEY) as b:
            assert a.encryption["store_id"] != b.encryption["store_id"]
            assert snapshot(a.path, KEY) == snapshot(b.path, OTHER_KEY)

    def test_passphrase_store(self, source, tmp_path, monkeypatch):
        monkeypatch.setenv("FEDIMAGE_TEST_PASS", "correct horse battery staple")
        path = convert_to(source, tmp_path / "p.h5", Passphrase.from_env("FEDIMAGE_TEST_PASS"))
        again = convert_to(source, tmp_path / "p2.h5", Passphrase("correct horse battery staple"))
        assert path.read_bytes() == again.read_bytes()
        with fedimage.open(path, key=Passphrase.from_env("FEDIMAGE_TEST_PASS")) as store:
            kdf = store.encryption["kdf"]
            assert (kdf["name"], kdf["n"], kdf["r"], kdf["p"], len(kdf["salt"])) == ("scrypt", 16, 8, 1, 32)
        assert snapshot(path, Passphrase("correct horse battery staple")) == snapshot(
            convert_to(source, tmp_path / "plain.h5")
        )
        with pytest.raises(StoreError, match="wrong key"):
            fedimage.open(path, key=Passphrase("Correct horse battery staple"))
        with pytest.raises(StoreError, match="under a passphrase"):
            fedimage.open(path, key=KEY)
        monkeypatch.delenv("FEDIMAGE_TEST_PASS")
        with pytest.raises(OptionError, match="FEDIMAGE_TEST_PASS"):
            Passphrase.from_env("FEDIMAGE_TEST_PASS")

    def test_malformed_header_is_refused_before_any_key_derivation(self, sealed):
        with h5py.File(sealed, "r+") as file:
            manifest = json.loads(file["metadata/manifest"][()])
            manifest["encryption"]["extra"] = 1
            del file["metadata/manifest"]
            file["metadata/manifest"] = json.dumps(manifest)
        with pytest.raises(StoreError, match="malformed encryption header"):
            fedimage.open(sealed, key=KEY)


def _sealed_datasets(file: h5py.File) -> list[str]:
    names: list[str] = []
    file.visititems(lambda name, obj: names.append(name) if name.endswith(SEALED) else None)
    return names


class TestCommandLine:
    def test_keygen_convert_inspect_verify_and_tamper(self, source, tmp_path, capsys):
        key = tmp_path / "store.key"
        output = tmp_path / "cli.h5"
        assert main(["keygen", str(key)]) == 0
        common = ["--layout", "user/class", "--size", "16", "--workers", "1", "--quiet"]
        assert main(["convert", str(source), "-o", str(output), *common, "--encrypt-key", str(key)]) == 0
        capsys.readouterr()
        assert main(["inspect", str(output), "--key", str(key)]) == 0
        out = capsys.readouterr().out
        assert "sealed   fedimage-aes256gcm" in out and "train" in out
        assert main(["verify", str(output), "--key", str(key), "--decode"]) == 0
        assert capsys.readouterr().out.startswith("OK")
        assert main(["inspect", str(output)]) == 2
        assert "is encrypted" in capsys.readouterr().err
        with h5py.File(output, "r") as file:
            offset = file["train/user0/sealed"].id.get_offset() if "train/user0" in file else None
            name = "train/user0"
            if offset is None:
                name = next(f"{s}/{u}" for s in ("train", "val", "test") for u in file[s])
                offset = file[f"{name}/sealed"].id.get_offset()
        data = bytearray(output.read_bytes())
        data[offset + 20] ^= 0x04
        output.write_bytes(data)
        assert main(["verify", str(output), "--key", str(key)]) == 1
        out = capsys.readouterr().out
        assert f"BAD {name}: user {name.split('/')[1]!r}" in out and "authentication failed" in out

    def test_passphrase_options(self, source, tmp_path, capsys, monkeypatch):
        monkeypatch.setenv("STORE_PASS", "hunter2")
        output = tmp_path / "pass.h5"
        common = ["--layout", "user/class", "--size", "16", "--workers", "1", "--quiet"]
        assert (
            main(
                ["convert", str(source), "-o", str(output), *common, "--encrypt-passphrase-env", "STORE_PASS"]
            )
            == 0
        )
        assert main(["verify", str(output), "--passphrase-env", "STORE_PASS"]) == 0
        monkeypatch.setenv("STORE_PASS", "hunter3")
        capsys.readouterr()
        assert main(["verify", str(output), "--passphrase-env", "STORE_PASS"]) == 1
        assert "wrong key" in capsys.readouterr().out
        key = generate_key_file(tmp_path / "k.key")
        both = ["--encrypt-key", str(key), "--encrypt-passphrase-env", "STORE_PASS", "--overwrite"]
        assert main(["convert", str(source), "-o", str(output), *common, *both]) == 2
        assert "not both" in capsys.readouterr().err

    def test_export_of_an_encrypted_store_needs_its_key(self, sealed, source, tmp_path, capsys):
        key = tmp_path / "k.key"
        key.write_bytes(KEY)
        key.chmod(0o600)
        assert main(["export", str(sealed), "--to", "dirs", str(tmp_path / "no-key"), "--quiet"]) == 2
        assert "is encrypted" in capsys.readouterr().err
        assert (
            main(
                ["export", str(sealed), "--to", "dirs", str(tmp_path / "dirs"), "--quiet", "--key", str(key)]
            )
            == 0
        )
        plain = convert_to(source, tmp_path / "plain.h5")
        assert main(["export", str(plain), "--to", "dirs", str(tmp_path / "plain-dirs"), "--quiet"]) == 0
        for file in (tmp_path / "plain-dirs").rglob("*"):
            if file.is_file() and file.name != "index.json":  # index.json names the store
                assert (
                    file.read_bytes()
                    == (tmp_path / "dirs" / file.relative_to(tmp_path / "plain-dirs")).read_bytes()
                )


def test_resume_needs_the_same_key_and_gives_the_same_bytes(source, tmp_path, monkeypatch):
    output = tmp_path / "resume.h5"
    expected = convert_to(source, tmp_path / "whole.h5", KEY).read_bytes()
    monkeypatch.setattr(WorkDir, "remove", lambda self: None)  # keep the shards, as an interruption would
    convert_to(source, output, KEY)
    output.unlink()
    monkeypatch.undo()
    with pytest.raises(StoreError, match="other encryption"):
        convert_to(source, output, OTHER_KEY, resume=True, overwrite=False)
    convert_to(source, output, KEY, resume=True, overwrite=False)
    assert output.read_bytes() == expected
