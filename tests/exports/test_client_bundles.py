"""``export --to client-bundles``: one encrypted one-user store per client, each with its own key."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from helpers import fast_options, photo, save_image

import fedimage
from fedimage import ImageOptions, convert, open_source
from fedimage.cli import main
from fedimage.errors import StoreError
from fedimage.exports import ExportOptions, export
from fedimage.store.verify import verify_store

pytest.importorskip("cryptography")

SOURCE_KEY = bytes(range(32))


@pytest.fixture
def source(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    for user in range(4):
        for index in range(user + 1):
            label = ("cat", "dog", "bird")[index % 3]
            save_image(
                root / f"site {user}" / label / f"img{user}-{index}.jpg", photo(40, 30, seed=7 * user + index)
            )
    return root


def make_store(source: Path, path: Path, storage: str = "jpeg", key: bytes | None = None) -> Path:
    options = fast_options(image=ImageOptions(size=16, storage=storage), encrypt_key=key)
    convert(open_source(source, layout="user/class"), path, options)
    return path


def clients(destination: Path) -> Iterator[dict]:
    yield from json.loads((destination / "index.json").read_text())["clients"]


@pytest.mark.parametrize(("storage", "encrypted"), [("jpeg", False), ("raw", False), ("jpeg", True)])
def test_each_bundle_holds_exactly_its_clients_data(source, tmp_path, storage, encrypted):
    key = SOURCE_KEY if encrypted else None
    store_path = make_store(source, tmp_path / "store.h5", storage, key)
    destination = tmp_path / "bundles"
    with fedimage.open(store_path, key=key) as store:
        report = export(store, "client-bundles", destination, ExportOptions(quiet=True))
        expected = {
            (split, user): store.load_user(split, user)
            for split in store.splits
            for user in store.users(split)
        }
        label_names = store.label_names
    assert report.users == 4 and report.images == 10
    listed = list(clients(destination))
    assert {(c["split"], c["user"]) for c in listed} == set(expected)
    assert stat.S_IMODE((destination / "keys").stat().st_mode) == 0o700
    for client in listed:
        bundle, key_file = destination / client["bundle"], destination / client["key"]
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        with fedimage.open(bundle, key=key_file) as opened:
            assert opened.encrypted and opened.storage == storage and opened.label_names == label_names
            assert {split: opened.users(split) for split in opened.splits} == {
                client["split"]: {client["user"]: client["images"]}
            }
            mine = opened.load_user(client["split"], client["user"])
        theirs = expected[client["split"], client["user"]]
        np.testing.assert_array_equal(mine.images, theirs.images)
        np.testing.assert_array_equal(mine.labels, theirs.labels)
        np.testing.assert_array_equal(mine.fine_labels, theirs.fine_labels)
        assert mine.image_ids == theirs.image_ids
        assert verify_store(bundle, key=key_file, decode=True).ok
        data = bundle.read_bytes()
        for other in listed:  # no other client's id, and not even this client's image ids, in the clear
            if other is not client:
                assert other["user"].encode() not in data
        assert all(image_id.encode() not in data for image_id in theirs.image_ids)


def test_a_bundle_does_not_open_with_another_clients_key(source, tmp_path):
    destination = tmp_path / "bundles"
    export(
        make_store(source, tmp_path / "store.h5"), "client-bundles", destination, ExportOptions(quiet=True)
    )
    first, second = list(clients(destination))[:2]
    assert (destination / first["key"]).read_bytes() != (destination / second["key"]).read_bytes()
    with pytest.raises(StoreError, match="wrong key"):
        fedimage.open(destination / first["bundle"], key=destination / second["key"])
    with pytest.raises(StoreError, match="is encrypted"):
        fedimage.open(destination / first["bundle"])


def test_command_line_needs_the_source_key_of_an_encrypted_store(source, tmp_path, capsys):
    store_key = tmp_path / "store.key"
    assert main(["keygen", str(store_key)]) == 0
    store_path = make_store(source, tmp_path / "store.h5", key=store_key)
    destination = tmp_path / "out"
    assert main(["export", str(store_path), "--to", "client-bundles", str(destination), "--quiet"]) == 2
    assert "is encrypted" in capsys.readouterr().err and not destination.exists()
    argv = [
        "export",
        str(store_path),
        "--to",
        "client-bundles",
        str(destination),
        "--quiet",
        "--key",
        str(store_key),
    ]
    assert main(argv) == 0
    assert "4 users, 10 images" in capsys.readouterr().out
    assert (
        len(list((destination / "bundles").rglob("*.h5")))
        == len(list((destination / "keys").rglob("*.key")))
        == 4
    )


def test_exports_differ_only_by_their_fresh_keys_and_need_overwrite(source, tmp_path):
    """Fresh random keys make two exports differ in bytes (hence not in the common same-bytes test)."""
    store_path = make_store(source, tmp_path / "store.h5")
    first, second = tmp_path / "first", tmp_path / "second"
    export(store_path, "client-bundles", first, ExportOptions(quiet=True))
    export(store_path, "client-bundles", second, ExportOptions(quiet=True))
    with pytest.raises(StoreError, match="already exists; pass `overwrite`"):
        export(store_path, "client-bundles", first, ExportOptions(quiet=True))
    for one, two in zip(clients(first), clients(second), strict=True):
        assert one == two
        assert (first / one["key"]).read_bytes() != (second / two["key"]).read_bytes()
        assert (first / one["bundle"]).read_bytes() != (second / two["bundle"]).read_bytes()
        with (
            fedimage.open(first / one["bundle"], key=first / one["key"]) as a,
            fedimage.open(second / two["bundle"], key=second / two["key"]) as b,
        ):
            x, y = a.load_user(one["split"], one["user"]), b.load_user(two["split"], two["user"])
            np.testing.assert_array_equal(x.images, y.images)
            assert x.image_ids == y.image_ids
