"""Per-image metadata in every export: Parquet columns, ``dirs``' ``metadata.json``, TFRecord
features, client bundles; ``flair-central`` has no place for it. An encrypted store exports the same."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import QUIET, fast_options, flair_store, photo, save_image, write_jsonl

import fedimage
from fedimage.conversion.metadata import MetadataOptions
from fedimage.errors import FedimageError
from fedimage.exports import export
from fedimage.exports.example_proto import example_class
from fedimage.store.metadata import MetadataColumn
from fedimage.store.verify import verify_store

COLUMNS = "site,year:int,score:float,taken:timestamp"
TYPES = [
    {"name": "site", "type": "string"},
    {"name": "year", "type": "int"},
    {"name": "score", "type": "float"},
    {"name": "taken", "type": "timestamp"},
]
SITES = ["Hôpital Nord", "東京 clinic", "Lab East 🧪"]
BIG = 2**53 + 1  # an integer a float (or a JSON reader using doubles) cannot hold
KEY = bytes(range(32))


def metadata_rows(root: Path) -> list[dict[str, Any]]:
    """12 images of 3 users, every type of value, and a missing value of each column somewhere."""
    rows = []
    for index in range(12):
        name = f"img{index:02d}.png"
        save_image(root / name, photo(40, 32, seed=index))
        rows.append(
            {
                "image": name,
                "image_id": f"i{index:02d}",
                "user_id": f"user{index % 3}",
                "labels": ["cat" if index % 2 else "dog"],
                "site": SITES[index % 3] if index != 4 else None,
                "year": (BIG if index == 7 else -1 if index == 8 else 2000 + index) if index != 5 else None,
                "score": (index / 4 if index != 9 else 0.1) if index != 6 else None,
                "taken": f"2020-03-{1 + index:02d}T08:00:00.{index:06d}+02:00" if index != 10 else None,
            }
        )
    return rows


def expected_values(row: dict[str, Any]) -> dict[str, Any]:
    """The values a store keeps for a row: a time in naive UTC."""
    taken = row["taken"]
    if taken is not None:
        taken = dt.datetime.fromisoformat(taken).astimezone(dt.UTC).replace(tzinfo=None)
    return {"site": row["site"], "year": row["year"], "score": row["score"], "taken": taken}


def make_store(tmp_path: Path, key: bytes | None = None) -> tuple[Path, dict[str, dict[str, Any]]]:
    """A store with the four metadata columns, and the values it should hold by image id."""
    rows = metadata_rows(tmp_path / "src")
    manifest = write_jsonl(tmp_path / "src" / "manifest.jsonl", rows)
    path = tmp_path / ("sealed.h5" if key else "store.h5")
    options = fast_options(metadata=MetadataOptions(keep_columns=COLUMNS), encrypt_key=key)
    fedimage.convert(manifest, path, options)
    return path, {row["image_id"]: expected_values(row) for row in rows}


def store_values(path: Path, key: bytes | None = None) -> dict[str, dict[str, Any]]:
    """``{image_id: {column: value}}`` as the store's readers give them."""
    found = {}
    with fedimage.open(path, key=key) as store:
        for split in store.splits:
            for user_id in store.users(split):
                data = store.load_user(split, user_id)
                for index, image_id in enumerate(data.image_ids):
                    found[image_id] = {name: values[index] for name, values in data.metadata.items()}
    return found


def exactly_equal(found: dict[str, dict[str, Any]], expected: dict[str, dict[str, Any]]) -> None:
    """Same image ids, same values of the same Python types (``1 == 1.0`` is not enough)."""
    assert found.keys() == expected.keys()
    for image_id, values in expected.items():
        assert list(found[image_id]) == list(values), image_id
        for name, value in values.items():
            got = found[image_id][name]
            assert got == value and type(got) is type(value), (image_id, name, got, value)


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict[str, Any]]]:
    path, expected = make_store(tmp_path_factory.mktemp("metadata"))
    exactly_equal(store_values(path), expected)  # the store holds what the rows say
    return path, expected


@pytest.fixture(scope="module")
def store_path(made) -> Path:
    return made[0]


@pytest.fixture(scope="module")
def expected(made) -> dict[str, dict[str, Any]]:
    return made[1]


def test_the_store_has_each_kind_of_value(expected):
    values = [value for row in expected.values() for value in row.values()]
    assert {type(value) for value in values} == {str, int, float, dt.datetime, type(None)}
    assert {name for row in expected.values() for name, value in row.items() if value is None} == {
        "site",
        "year",
        "score",
        "taken",
    }
    assert any(value == BIG for value in values) and any(
        isinstance(v, str) and not v.isascii() for v in values
    )


# -- parquet ---------------------------------------------------------------------------------------


def parquet_values(folder: Path) -> dict[str, dict[str, Any]]:
    found = {}
    for path in sorted(folder.glob("*.parquet")):
        for row in pq.read_table(path).to_pylist():
            found[row["image_id"]] = {name: row[name] for name in ("site", "year", "score", "taken")}
    return found


def test_parquet_has_a_typed_column_per_metadata_column(store_path, expected, tmp_path):
    export(store_path, "parquet", tmp_path / "pq", QUIET)
    exactly_equal(parquet_values(tmp_path / "pq"), expected)
    for path in (tmp_path / "pq").glob("*.parquet"):
        schema = pq.read_schema(path)
        assert schema.names == [
            "user_id",
            "image_id",
            "labels",
            "partition",
            "fine_grained_labels",
            "image",
            "site",
            "year",
            "score",
            "taken",
        ]
        assert [schema.field(name).type for name in ("site", "year", "score", "taken")] == [
            pa.string(),
            pa.int64(),
            pa.float64(),
            pa.timestamp("us"),
        ]
        entries = json.loads(schema.metadata[b"fedimage"])
        assert entries["image_metadata"] == TYPES
        assert entries["image_size"] == 64 and entries["color"] == "rgb"


def test_datasets_reads_the_metadata_columns(store_path, expected, tmp_path):
    datasets = pytest.importorskip("datasets")
    export(store_path, "parquet", tmp_path / "pq", QUIET)
    found = {}
    for path in sorted((tmp_path / "pq").glob("*.parquet")):
        dataset = datasets.Dataset.from_parquet(str(path), cache_dir=str(tmp_path / "hf"))
        assert isinstance(dataset.features["image"], datasets.Image)
        assert {name: dataset.features[name].dtype for name in ("site", "year", "score", "taken")} == {
            "site": "string",
            "year": "int64",
            "score": "float64",
            "taken": "timestamp[us]",
        }
        for row in dataset.remove_columns("image"):
            found[row["image_id"]] = {name: row[name] for name in ("site", "year", "score", "taken")}
    exactly_equal(found, expected)


def test_a_parquet_export_converts_back_with_its_metadata(store_path, expected, tmp_path):
    export(store_path, "parquet", tmp_path / "pq", QUIET)
    fedimage.convert(fedimage.open_source(tmp_path / "pq", "hf"), tmp_path / "back.h5")
    with fedimage.open(tmp_path / "back.h5") as back:
        assert [{"name": c.name, "type": c.type} for c in back.metadata_columns] == TYPES
    exactly_equal(store_values(tmp_path / "back.h5"), expected)


def test_a_column_named_as_an_export_column_is_refused(monkeypatch, store_path, tmp_path):
    with fedimage.open(store_path) as store:
        monkeypatch.setattr(store, "metadata_columns", [MetadataColumn("labels", "string")])
        with pytest.raises(FedimageError, match=r"metadata column 'labels' has the name of a parquet export"):
            export(store, "parquet", tmp_path / "pq", QUIET)
    assert not (tmp_path / "pq").exists()


# -- dirs -------------------------------------------------------------------------------------------


def test_dirs_metadata_json_holds_each_images_values(store_path, expected, tmp_path):
    export(store_path, "dirs", tmp_path / "dirs", QUIET)
    index = json.loads((tmp_path / "dirs" / "index.json").read_text(encoding="utf-8"))
    assert index["image_metadata"] == TYPES
    found = {}
    for users in index["users"].values():
        for info in users.values():
            metadata = json.loads((tmp_path / "dirs" / info["folder"] / "metadata.json").read_text("utf-8"))
            for image in metadata["images"]:
                values = dict(image["metadata"])
                if values["taken"] is not None:  # ISO 8601 text in the file
                    values["taken"] = dt.datetime.fromisoformat(values["taken"])
                found[image["image_id"]] = values
    exactly_equal(found, expected)
    texts = "".join(path.read_text("utf-8") for path in (tmp_path / "dirs").rglob("metadata.json"))
    assert '"taken": "2020-03-01T06:00:00"' in texts and '"site": null' in texts  # text as written
    assert "Hôpital Nord" in texts and f'"year": {BIG}' in texts


def test_a_store_without_metadata_exports_as_before(flair_folder, tmp_path):
    plain = flair_store(flair_folder, tmp_path / "plain.h5")
    export(plain, "dirs", tmp_path / "dirs", QUIET)
    export(plain, "parquet", tmp_path / "pq", QUIET)
    export(plain, "tfrecords", tmp_path / "tfr", QUIET)
    assert "image_metadata" not in json.loads((tmp_path / "dirs" / "index.json").read_text())
    for path in (tmp_path / "dirs").rglob("metadata.json"):
        assert all("metadata" not in image for image in json.loads(path.read_text())["images"])
    assert "image_metadata" not in json.loads(
        pq.read_schema(tmp_path / "pq" / "train.parquet").metadata[b"fedimage"]
    )
    assert not (tmp_path / "tfr" / "image_metadata.json").exists()
    for path in (tmp_path / "tfr").rglob("*.tfrecords"):
        for example in examples(path):
            assert sorted(example.features.feature) == ["fine_grained_labels", "image/encoded_jpeg", "labels"]


# -- tfrecords -------------------------------------------------------------------------------------


def examples(path: Path) -> Iterator[Any]:
    """The ``tf.train.Example`` messages of a TFRecord file (framing checked by test_tfrecords)."""
    reader = pytest.importorskip("tfrecord.reader")
    for record in reader.tfrecord_iterator(str(path)):
        example = example_class()()
        example.ParseFromString(bytes(record))
        yield example


def feature_values(example: Any) -> dict[str, Any]:
    """The metadata features of an example as Python values (None for an empty list)."""
    feature = example.features.feature
    kinds = {
        name: feature[f"metadata/{name}"].WhichOneof("kind") for name in ("site", "year", "score", "taken")
    }
    assert kinds == {"site": "bytes_list", "year": "int64_list", "score": "float_list", "taken": "int64_list"}
    values = {name: list(getattr(feature[f"metadata/{name}"], kind).value) for name, kind in kinds.items()}
    assert all(len(found) <= 1 for found in values.values())
    single = {name: found[0] if found else None for name, found in values.items()}
    if single["site"] is not None:
        single["site"] = single["site"].decode("utf-8")
    if single["taken"] is not None:
        single["taken"] = dt.datetime(1970, 1, 1) + dt.timedelta(microseconds=single["taken"])
    return single


def test_tfrecords_carry_metadata_features(store_path, expected, tmp_path):
    export(store_path, "tfrecords", tmp_path / "tfr", QUIET)
    assert json.loads((tmp_path / "tfr" / "image_metadata.json").read_text()) == TYPES
    found = {}
    with fedimage.open(store_path) as store:
        for split in store.splits:
            for user_id in store.users(split):
                image_ids = store.load_user(split, user_id).image_ids
                records = list(examples(tmp_path / "tfr" / split / f"{user_id}.tfrecords"))
                assert len(records) == len(image_ids)
                for image_id, example in zip(image_ids, records, strict=True):
                    found[image_id] = feature_values(example)
    # a float_list holds 32-bit floats: each value is the store's rounded to float32
    float32 = {
        image_id: {**values, "score": None if values["score"] is None else float(np.float32(values["score"]))}
        for image_id, values in expected.items()
    }
    exactly_equal(found, float32)
    assert found["i09"]["score"] != 0.1 and found["i08"]["score"] == 2.0 and found["i07"]["year"] == BIG


def test_ml_flairs_features_read_as_before(store_path, tmp_path):
    """ml-flair's readers parse their features by name: the metadata features change nothing for them."""
    reader = pytest.importorskip("tfrecord.reader")
    export(store_path, "tfrecords", tmp_path / "tfr", QUIET)
    description = {"image/encoded_jpeg": "byte", "labels": "int", "fine_grained_labels": "int"}
    with fedimage.open(store_path) as store:
        for split in store.splits:
            for user_id in store.users(split):
                user = store.load_user(split, user_id)
                path = tmp_path / "tfr" / split / f"{user_id}.tfrecords"
                records = list(reader.tfrecord_loader(str(path), None, description))
                assert sorted(records[0]) == sorted(description)
                for index, record in enumerate(records):
                    assert bytes(record["image/encoded_jpeg"]) == store.encoded_images(split, user_id)[index]
                    assert sorted(record["labels"].tolist()) == np.flatnonzero(user.labels[index]).tolist()


# -- client bundles and flair-central -------------------------------------------------------------


def test_a_bundle_opened_as_a_store_gives_the_same_metadata(store_path, tmp_path):
    pytest.importorskip("cryptography")
    export(store_path, "client-bundles", tmp_path / "bundles", QUIET)
    index = json.loads((tmp_path / "bundles" / "index.json").read_text())
    with fedimage.open(store_path) as store:
        columns = store.metadata_columns
        for client in index["clients"]:
            bundle, key = tmp_path / "bundles" / client["bundle"], tmp_path / "bundles" / client["key"]
            with fedimage.open(bundle, key=key) as opened:
                assert opened.metadata_columns == columns
                mine = opened.load_user(client["split"], client["user"])
                assert opened.load_metadata(client["split"], client["user"]) == mine.metadata
            theirs = store.load_user(client["split"], client["user"])
            assert mine.image_ids == theirs.image_ids
            assert mine.metadata == theirs.metadata and list(mine.metadata) == [c.name for c in columns]
            assert verify_store(bundle, key=key, decode=True).ok
            assert "Hôpital".encode() not in bundle.read_bytes()  # sealed with the group


def test_flair_central_leaves_metadata_out(store_path, tmp_path):
    export(store_path, "flair-central", tmp_path / "central.h5", QUIET)
    with h5py.File(tmp_path / "central.h5") as h5:
        image = next(iter(h5["train"].values()))
        assert sorted(image) == ["fine_grained_labels", "image", "labels", "user_id"]


# -- an encrypted store --------------------------------------------------------------------------


def test_an_encrypted_store_exports_the_same_metadata_to_parquet(store_path, expected, tmp_path):
    pytest.importorskip("cryptography")
    sealed, sealed_expected = make_store(tmp_path, key=KEY)
    assert sealed_expected == expected
    assert "Hôpital".encode() not in sealed.read_bytes()
    export(sealed, "parquet", tmp_path / "sealed-pq", QUIET, key=KEY)
    export(store_path, "parquet", tmp_path / "plain-pq", QUIET)
    exactly_equal(parquet_values(tmp_path / "sealed-pq"), expected)
    for path in (tmp_path / "plain-pq").glob("*.parquet"):
        other = tmp_path / "sealed-pq" / path.name
        assert pq.read_table(other).drop_columns("image").equals(pq.read_table(path).drop_columns("image"))
        assert pq.read_schema(other).metadata == pq.read_schema(path).metadata
