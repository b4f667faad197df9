"""``tfrecords``: ml-flair's TFRecords, read back with independent readers.

Framing and CRCs are checked here with struct and google-crc32c; the records are
parsed with the ``tfrecord`` package (its own Example proto) and, where TensorFlow
is installed, with ``tf.data.TFRecordDataset`` and ml-flair's exact feature spec.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest
from helpers import ODD_USERS, QUIET, flair_store, odd_store

import fedimage
from fedimage.exports import ExportOptions, export
from fedimage.store.reader import decode_jpeg

DESCRIPTION = {"image/encoded_jpeg": "byte", "labels": "int", "fine_grained_labels": "int"}


def masked(crc: int) -> int:
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def read_framed(path: Path) -> list[bytes]:
    """The records of a TFRecord file, checking both CRCs of every record."""
    crc32c = pytest.importorskip("google_crc32c").value
    data = path.read_bytes()
    records, position = [], 0
    while position < len(data):
        header = data[position : position + 8]
        (length,) = struct.unpack("<Q", header)
        (length_crc,) = struct.unpack("<I", data[position + 8 : position + 12])
        assert length_crc == masked(crc32c(header)), f"{path}: bad length CRC at {position}"
        record = data[position + 12 : position + 12 + length]
        (data_crc,) = struct.unpack("<I", data[position + 12 + length : position + 16 + length])
        assert data_crc == masked(crc32c(record)), f"{path}: bad data CRC at {position}"
        records.append(record)
        position += 16 + length
    assert position == len(data)
    return records


def ml_flair_client_files(tfrecords_dir: Path, partition: str) -> dict[str, Path]:
    """Client ids as ml-flair's ``get_client_ids_to_files`` derives them."""
    folder = tfrecords_dir / partition
    return {name.split(".tfrecords")[0]: folder / name for name in os.listdir(folder)}


def tfrecord_package_records(path: Path) -> list[dict]:
    reader = pytest.importorskip("tfrecord.reader")
    return list(reader.tfrecord_loader(str(path), None, DESCRIPTION))


@pytest.fixture
def jpeg_store(flair_folder: Path, tmp_path: Path) -> Path:
    return flair_store(flair_folder, tmp_path / "store.h5")


def test_framing_and_crcs(jpeg_store: Path, tmp_path: Path):
    export(jpeg_store, "tfrecords", tmp_path / "tfr", QUIET)
    with fedimage.open(jpeg_store) as store:
        for split in store.splits:
            for user_id, count in store.users(split).items():
                assert len(read_framed(tmp_path / "tfr" / split / f"{user_id}.tfrecords")) == count


@pytest.mark.parametrize("storage", ["jpeg", "raw"])
def test_records_hold_the_stores_images_and_label_indices(flair_folder: Path, tmp_path: Path, storage: str):
    store_path = flair_store(flair_folder, tmp_path / "store.h5", storage)
    export(store_path, "tfrecords", tmp_path / "tfr", QUIET)
    with fedimage.open(store_path) as store:
        for split in store.splits:
            clients = ml_flair_client_files(tmp_path / "tfr", split)
            assert sorted(clients) == sorted(store.users(split))
            for user_id, path in clients.items():
                user = store.load_user(split, user_id)
                records = tfrecord_package_records(path)
                assert len(records) == len(user)
                for index, record in enumerate(records):
                    jpeg = record["image/encoded_jpeg"]
                    if storage == "jpeg":
                        assert jpeg == store.encoded_images(split, user_id)[index]
                    else:  # encoded at quality 95 (4:2:0, as Pillow's default)
                        error = (decode_jpeg(jpeg).astype(float) - user.images[index]) ** 2
                        assert 10 * np.log10(255**2 / error.mean()) > 30  # PSNR in dB
                    assert sorted(record["labels"].tolist()) == np.flatnonzero(user.labels[index]).tolist()
                    fine = np.flatnonzero(user.fine_labels[index]).tolist()
                    assert sorted(record["fine_grained_labels"].tolist()) == fine


def test_label_to_index_as_ml_flair_writes_it(jpeg_store: Path, tmp_path: Path):
    export(jpeg_store, "tfrecords", tmp_path / "tfr", QUIET)
    mapping = json.loads((tmp_path / "tfr" / "label_to_index.json").read_text())
    assert sorted(mapping) == ["fine_grained_labels", "labels"]
    assert mapping["labels"] == {"animal": 0, "equipment": 1, "plant": 2}
    assert mapping["fine_grained_labels"] == {"car": 0, "cat": 1, "dog": 2, "flower": 3, "tree": 4}
    assert not (tmp_path / "tfr" / "user_ids.json").exists()  # FLAIR's ids are file names as they are


def test_quality_applies_to_raw_stores(flair_folder: Path, tmp_path: Path):
    store_path = flair_store(flair_folder, tmp_path / "store.h5", "raw")
    sizes = {}
    for quality in (30, 95):
        export(store_path, "tfrecords", tmp_path / f"q{quality}", ExportOptions(quiet=True, quality=quality))
        sizes[quality] = sum(path.stat().st_size for path in (tmp_path / f"q{quality}").rglob("*.tfrecords"))
    assert sizes[30] < sizes[95] * 0.7


def test_awkward_user_ids_are_mapped(tmp_path: Path):
    store_path = odd_store(tmp_path)
    export(store_path, "tfrecords", tmp_path / "tfr", QUIET)
    renamed = json.loads((tmp_path / "tfr" / "user_ids.json").read_text())
    recovered = {}
    for split in ("train", "val", "test"):
        for client in ml_flair_client_files(tmp_path / "tfr", split):
            recovered[renamed.get(split, {}).get(client, client)] = split
    assert sorted(recovered) == sorted(ODD_USERS)
    assert renamed["train"]["x%2Etfrecords"] == "x.tfrecords"
    assert renamed["train"]["%2E%2E"] == ".."
    assert sorted(renamed["val"].values()) == ["usera"]  # UserA keeps its name; usera differs in case only


def test_tensorflow_reads_them_with_ml_flairs_feature_spec(jpeg_store: Path, tmp_path: Path):
    tf = pytest.importorskip("tensorflow")
    export(jpeg_store, "tfrecords", tmp_path / "tfr", QUIET)
    num_labels = 3

    def parse(example_proto):  # ml-flair's benchmark/flair_data.py load_tfrecords
        spec = {
            "image/encoded_jpeg": tf.io.FixedLenFeature([], tf.string),
            "labels": tf.io.VarLenFeature(tf.int64),
        }
        example = tf.io.parse_single_example(example_proto, spec)
        image = tf.io.decode_jpeg(example["image/encoded_jpeg"])
        labels = tf.reduce_sum(tf.one_hot(example["labels"].values, depth=num_labels, dtype=tf.int32), axis=0)
        return tf.reshape(image, (64, 64, 3)), labels, example["image/encoded_jpeg"]

    with fedimage.open(jpeg_store) as store:
        for split in store.splits:
            for user_id, path in ml_flair_client_files(tmp_path / "tfr", split).items():
                user = store.load_user(split, user_id)
                dataset = tf.data.TFRecordDataset([str(path)]).map(parse)
                parsed = [tuple(tensor.numpy() for tensor in item) for item in dataset]
                assert len(parsed) == len(user)
                jpegs = store.encoded_images(split, user_id)
                for index, (image, labels, jpeg) in enumerate(parsed):
                    assert jpeg == jpegs[index]
                    # TensorFlow's default (fast integer) IDCT differs from libjpeg-turbo's by a few levels
                    assert np.abs(image.astype(int) - user.images[index]).max() <= 8
                    np.testing.assert_array_equal(labels, user.labels[index].astype(np.int32))
