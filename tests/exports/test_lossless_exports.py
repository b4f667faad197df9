"""Exports of lossless stores: PNG files as stored in ``parquet`` and ``dirs`` (16 bits too), bundles
carried as stored, ``tfrecords`` and ``flair-central`` transcoded at 8 bits and refused at 16."""

from __future__ import annotations

import io
import json
from pathlib import Path

import h5py
import numpy as np
import pyarrow.parquet as pq
import pytest
from helpers import QUIET, fast_options
from lossless_helpers import SIZE, lossless_store
from PIL import Image

import fedimage
from fedimage.cli import main
from fedimage.conversion.pipeline import stated_image_options
from fedimage.errors import FedimageError
from fedimage.exports import export
from fedimage.exports.parquet import parquet_schema
from fedimage.imaging.standardize import encode_pixels
from fedimage.sources.huggingface import HuggingFaceSource
from fedimage.store.reader import decode_jpeg


@pytest.fixture(scope="module")
def store16(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    return lossless_store(tmp_path_factory.mktemp("store16"), bit_depth=16)


@pytest.fixture(scope="module", params=["rgb", "gray"])
def store8(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    return lossless_store(tmp_path_factory.mktemp(f"store8-{request.param}"), color=request.param)


def png_pixels(data: bytes) -> np.ndarray:
    """A PNG file's values as Pillow reads them, [H, W, C] (C = 1 for gray), uint8 or uint16."""
    assert data.startswith(b"\x89PNG")
    with Image.open(io.BytesIO(data)) as image:
        array = np.asarray(image)
    return array[:, :, None] if array.ndim == 2 else array


def store_files(path: Path) -> dict[str, bytes]:
    """{image id: stored PNG file} over a store."""
    with fedimage.open(path) as store:
        return {
            image_id: data
            for split in store.splits
            for user in store.users(split)
            for image_id, data in zip(
                store.load_user(split, user).image_ids, store.encoded_images(split, user), strict=True
            )
        }


def parquet_rows(folder: Path) -> dict[str, dict]:
    """{image id: row} over every split file of a parquet export, read with pyarrow alone."""
    return {
        str(row["image_id"]): row
        for file in sorted(folder.glob("*.parquet"))
        for row in pq.read_table(file).to_pylist()
    }


def test_8_bit_lossless_store_keeps_the_source_pixels_exactly(store8):
    path, pixels = store8
    with fedimage.open(path) as store:
        assert (store.storage, store.bit_depth, store.dtype) == ("lossless", 8, np.uint8)
        for split in store.splits:
            for user in store.users(split):
                data = store.load_user(split, user)
                for index, image_id in enumerate(data.image_ids):
                    np.testing.assert_array_equal(data.images[index], pixels[image_id])


def test_16_bit_values_exact_through_load_user(store16):
    path, pixels = store16
    with fedimage.open(path) as store:
        assert (store.bit_depth, store.dtype, store.channels) == (16, np.uint16, 1)
        for split in store.splits:
            for user in store.users(split):
                data = store.load_user(split, user)
                assert data.images.dtype == np.uint16 and data.images.shape[1:] == (SIZE, SIZE, 1)
                for index, image_id in enumerate(data.image_ids):
                    np.testing.assert_array_equal(data.images[index], pixels[image_id])


@pytest.mark.parametrize("bits", [8, 16])
def test_parquet_holds_the_stored_pngs_and_states_storage_and_bit_depth(store8, store16, tmp_path, bits):
    path, pixels = store16 if bits == 16 else store8
    export(path, "parquet", tmp_path / "pq", QUIET)
    rows = parquet_rows(tmp_path / "pq")
    stored = store_files(path)
    assert rows.keys() == pixels.keys()
    for image_id, row in rows.items():
        assert row["image"] == {"bytes": stored[image_id], "path": None}  # the PNG file as stored
        decoded = png_pixels(row["image"]["bytes"])
        assert decoded.dtype == (np.uint16 if bits == 16 else np.uint8)
        np.testing.assert_array_equal(decoded, pixels[image_id])
    stated = json.loads(pq.read_schema(tmp_path / "pq" / "train.parquet").metadata[b"fedimage"])
    with fedimage.open(path) as store:
        assert (stated["storage"], stated["bit_depth"], stated["color"]) == ("lossless", bits, store.color)
    if bits == 16:  # a 16-bit store's DICOM columns are typed columns (None: the sources are PNGs)
        assert [entry["name"] for entry in stated["image_metadata"]][:2] == [
            "rescale_slope",
            "rescale_intercept",
        ]


def test_datasets_reads_16_bit_pngs_as_I16_images_with_the_values(store16, tmp_path):
    datasets = pytest.importorskip("datasets")
    path, pixels = store16
    export(path, "parquet", tmp_path / "pq", QUIET)
    dataset = datasets.Dataset.from_parquet(str(tmp_path / "pq" / "train.parquet"))
    assert isinstance(dataset.features["image"], datasets.Image)
    for row in dataset:
        image = row["image"]
        assert image.mode == "I;16"
        np.testing.assert_array_equal(np.asarray(image)[:, :, None], pixels[str(row["image_id"])])


def test_datasets_reads_8_bit_pngs_in_the_stores_mode(store8, tmp_path):
    datasets = pytest.importorskip("datasets")
    path, pixels = store8
    export(path, "parquet", tmp_path / "pq", QUIET)
    row = datasets.Dataset.from_parquet(str(tmp_path / "pq" / "train.parquet"))[0]
    with fedimage.open(path) as store:
        assert row["image"].mode == ("RGB" if store.color == "rgb" else "L")
    array = np.asarray(row["image"])
    np.testing.assert_array_equal(array.reshape(pixels[row["image_id"]].shape), pixels[row["image_id"]])


def test_converting_an_8_bit_parquet_export_back_gives_the_same_lossless_store(store8, tmp_path, capsys):
    path, pixels = store8
    export(path, "parquet", tmp_path / "pq", QUIET)
    report = fedimage.convert(tmp_path / "pq", tmp_path / "back.h5")  # no options: what the export states
    assert report.rejected == 0
    with fedimage.open(path) as store, fedimage.open(tmp_path / "back.h5") as back:
        assert (back.storage, back.bit_depth, back.color, back.image_size) == (
            "lossless",
            8,
            store.color,
            SIZE,
        )
        for split in store.splits:
            assert back.users(split) == store.users(split)
            for user in store.users(split):
                data = back.load_user(split, user)
                for index, image_id in enumerate(data.image_ids):
                    np.testing.assert_array_equal(data.images[index], pixels[image_id])
    argv = ["convert", str(tmp_path / "pq"), "-o", str(tmp_path / "cli.h5"), "--quiet", "--workers", "1"]
    assert main(argv) == 0
    with fedimage.open(tmp_path / "cli.h5") as cli:
        assert (cli.storage, cli.bit_depth) == ("lossless", 8)
    assert main([*argv[:3], str(tmp_path / "jpeg.h5"), *argv[4:], "--storage", "jpeg"]) == 0
    with fedimage.open(tmp_path / "jpeg.h5") as jpeg:  # a flag still wins over the stated storage
        assert jpeg.storage == "jpeg"


def test_a_16_bit_parquet_export_states_options_that_make_a_16_bit_store_again(store16, tmp_path):
    path, pixels = store16
    export(path, "parquet", tmp_path / "pq", QUIET)
    source = HuggingFaceSource(tmp_path / "pq")
    assert (source.stated_storage, source.stated_bit_depth, source.stated_color) == ("lossless", 16, "gray")
    image = stated_image_options(source)
    assert (image.storage, image.bit_depth, image.color, image.size) == ("lossless", 16, "gray", SIZE)
    # a storage or colour that cannot hold 16 bits drops the stated bit depth
    assert stated_image_options(source, storage="jpeg").bit_depth == 8
    assert stated_image_options(source, color="rgb").bit_depth == 8
    report = fedimage.convert(source, tmp_path / "back.h5", fast_options(image=image))
    assert report.rejected == 0
    with fedimage.open(tmp_path / "back.h5") as back:
        assert (back.storage, back.bit_depth) == ("lossless", 16)
        for split in back.splits:
            for user in back.users(split):
                data = back.load_user(split, user)
                for index, image_id in enumerate(data.image_ids):
                    np.testing.assert_array_equal(data.images[index], pixels[image_id])


def test_parquet_exports_of_other_stores_state_no_storage():
    """Their images are JPEGs, whatever the store kept: a conversion of them takes its own defaults."""
    stated = json.loads(parquet_schema(False, {}, SIZE, "gray", storage="raw").metadata[b"fedimage"])
    assert set(stated) == {"label_relationship", "image_size", "color"}


@pytest.mark.parametrize("bits", [8, 16])
def test_dirs_writes_png_files(store8, store16, tmp_path, bits):
    path, pixels = store16 if bits == 16 else store8
    export(path, "dirs", tmp_path / "dirs", QUIET)
    index = json.loads((tmp_path / "dirs" / "index.json").read_text())
    assert (index["image_format"], index["bit_depth"]) == ("png", bits)
    stored = store_files(path)
    seen = set()
    for users in index["users"].values():
        for info in users.values():
            folder = tmp_path / "dirs" / info["folder"]
            assert not list(folder.glob("*.jpg"))
            for image in json.loads((folder / "metadata.json").read_text())["images"]:
                assert image["file"].endswith(".png")
                data = (folder / image["file"]).read_bytes()
                assert data == stored[image["image_id"]]
                np.testing.assert_array_equal(png_pixels(data), pixels[image["image_id"]])
                seen.add(image["image_id"])
    assert seen == pixels.keys()


def test_client_bundles_carry_lossless_stores_as_stored(store16, tmp_path):
    pytest.importorskip("cryptography")
    path, _ = store16
    export(path, "client-bundles", tmp_path / "bundles", QUIET)
    clients = json.loads((tmp_path / "bundles" / "index.json").read_text())["clients"]
    with fedimage.open(path) as store:
        assert len(clients) == sum(len(store.users(split)) for split in store.splits)
        for client in clients:
            bundle_path = tmp_path / "bundles" / client["bundle"]
            key = tmp_path / "bundles" / client["key"]
            with fedimage.open(bundle_path, key=key) as bundle:
                assert (bundle.storage, bundle.bit_depth, bundle.dtype, bundle.color) == (
                    "lossless",
                    16,
                    np.uint16,
                    "gray",
                )
                split, user = client["split"], client["user"]
                assert bundle.encoded_images(split, user) == store.encoded_images(split, user)
                mine, theirs = bundle.load_user(split, user), store.load_user(split, user)
                np.testing.assert_array_equal(mine.images, theirs.images)
                assert mine.metadata == theirs.metadata
            assert fedimage.verify_store(bundle_path, decode=True, key=key).ok


def test_8_bit_lossless_client_bundles_keep_the_png_bytes(store8, tmp_path):
    pytest.importorskip("cryptography")
    path, _ = store8
    export(path, "client-bundles", tmp_path / "bundles", QUIET)
    client = json.loads((tmp_path / "bundles" / "index.json").read_text())["clients"][0]
    with (
        fedimage.open(path) as store,
        fedimage.open(tmp_path / "bundles" / client["bundle"], key=tmp_path / "bundles" / client["key"]) as b,
    ):
        assert (b.storage, b.bit_depth) == ("lossless", 8)
        assert b.encoded_images(client["split"], client["user"]) == store.encoded_images(
            client["split"], client["user"]
        )


def test_tfrecords_of_an_8_bit_lossless_store_hold_rgb_jpegs(store8, tmp_path):
    reader = pytest.importorskip("tfrecord.reader")
    path, pixels = store8
    export(path, "tfrecords", tmp_path / "tfr", QUIET)
    with fedimage.open(path) as store:
        for split in store.splits:
            for user in store.users(split):
                data = store.load_user(split, user)
                records = list(
                    reader.tfrecord_loader(
                        str(tmp_path / "tfr" / split / f"{user}.tfrecords"),
                        None,
                        {"image/encoded_jpeg": "byte"},
                    )
                )
                assert len(records) == len(data)
                for record, image_id in zip(records, data.image_ids, strict=True):
                    jpeg = bytes(record["image/encoded_jpeg"])
                    assert jpeg.startswith(b"\xff\xd8")
                    rgb = np.repeat(pixels[image_id], 3, -1) if store.color == "gray" else pixels[image_id]
                    assert jpeg == encode_pixels(rgb, 95)  # the PNG's pixels as RGB, at the export's quality
                    assert decode_jpeg(jpeg).shape == (SIZE, SIZE, 3)


def test_flair_central_of_an_8_bit_lossless_store_holds_its_pixels(store8, tmp_path):
    path, pixels = store8
    export(path, "flair-central", tmp_path / "central.h5", QUIET)
    with h5py.File(tmp_path / "central.h5", "r") as h5:
        for split in ("train", "val", "test"):
            for image_id in h5[split]:
                image = h5[f"{split}/{image_id}/image"][()]
                assert image.dtype == np.uint8 and image.shape == (SIZE, SIZE, 3)
                expected = pixels[image_id]
                np.testing.assert_array_equal(
                    image, np.repeat(expected, 3, axis=-1) if expected.shape[-1] == 1 else expected
                )


@pytest.mark.parametrize("to", ["tfrecords", "flair-central"])
def test_8_bit_formats_refuse_a_16_bit_store_in_one_line(store16, tmp_path, capsys, to):
    path, _ = store16
    destination = tmp_path / "out"
    with pytest.raises(FedimageError) as caught:
        export(path, to, destination, QUIET)
    message = str(caught.value)
    assert "\n" not in message
    assert "cannot hold 16-bit values" in message and f"the {to} export" in message
    assert "parquet, dirs or client-bundles" in message
    assert not destination.exists() and not destination.with_name("out.partial").exists()
    capsys.readouterr()
    assert main(["export", str(path), "--to", to, str(destination), "--quiet"]) != 0
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.strip().splitlines()) == 1
    assert "cannot hold 16-bit values" in captured.err


def test_a_dicom_ct_store_exports_its_values_and_rescale_columns_to_parquet(tmp_path):
    pytest.importorskip("pydicom")
    from dicom_helpers import ct_dicom, write

    root = tmp_path / "dicom"
    for serial in (1, 2):
        write(root / f"p{serial}" / f"ct{serial}.dcm", ct_dicom(serial=serial))
    image = fedimage.ImageOptions(size=64, storage="lossless", color="gray", bit_depth=16)
    plan = fedimage.PlanOptions(split=fedimage.SplitRatios.parse("1,0,0"))
    fedimage.convert(
        root,
        tmp_path / "ct.h5",
        fast_options(image=image, plan=plan, pseudonyms=fedimage.Pseudonymizer(bytes(32))),
    )
    export(tmp_path / "ct.h5", "parquet", tmp_path / "pq", QUIET)
    rows = parquet_rows(tmp_path / "pq")
    with fedimage.open(tmp_path / "ct.h5") as store:
        for user in store.users("train"):
            data = store.load_user("train", user)
            for index, image_id in enumerate(data.image_ids):
                row = rows[image_id]
                np.testing.assert_array_equal(png_pixels(row["image"]["bytes"]), data.images[index])
                for column in ("rescale_slope", "rescale_intercept", "window_center", "window_width"):
                    assert row[column] == data.metadata[column][index] is not None
