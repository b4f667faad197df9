"""``parquet``: Hugging Face ``datasets`` and Flower Datasets read it; fedimage converts it back."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import QUIET, SIZE, fast_options, flair_store, jpeg_bytes, photo, save_image, write_jsonl

import fedimage
from fedimage import convert, open_source
from fedimage.cli import main
from fedimage.exports import export, parquet
from fedimage.store.reader import decode_jpeg


@pytest.fixture
def store_path(flair_folder: Path, tmp_path: Path) -> Path:
    return flair_store(flair_folder, tmp_path / "store.h5")


@pytest.fixture
def exported(store_path: Path, tmp_path: Path) -> Path:
    export(store_path, "parquet", tmp_path / "pq", QUIET)
    return tmp_path / "pq"


def label_sets(store: fedimage.FederatedStore, split: str, user_id: str) -> list[tuple[list, list]]:
    user = store.load_user(split, user_id)
    return [
        (
            [store.label_names[i] for i in np.flatnonzero(user.labels[index])],
            [store.fine_label_names[i] for i in np.flatnonzero(user.fine_labels[index])],
        )
        for index in range(len(user))
    ]


def test_schema_is_apple_flairs_with_int64_ids_and_the_taxonomy(exported: Path, flair_folder: Path):
    schema = pq.read_schema(exported / "train.parquet")
    assert schema.names == ["user_id", "image_id", "labels", "partition", "fine_grained_labels", "image"]
    assert schema.field("image_id").type == pa.int64()  # FLAIR's ids are integers, as in apple/flair
    assert schema.field("labels").type == pa.list_(pa.string())
    assert schema.field("image").type == pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    features = json.loads(schema.metadata[b"huggingface"])["info"]["features"]
    assert features["image_id"] == {"dtype": "int64", "_type": "Value"}
    taxonomy = fedimage.load_taxonomy(flair_folder / "label_relationship.txt").fine_to_coarse
    assert json.loads(schema.metadata[b"fedimage"]) == {
        "label_relationship": taxonomy,
        "image_size": SIZE,
        "color": "rgb",
    }


@pytest.mark.parametrize(
    ("ids", "integer"),
    [
        (["0", "1", "-5", "9223372036854775807", "-9223372036854775808"], True),
        (["1", "007"], False),  # int64 would drop the leading zeros
        (["1", "+2"], False),
        (["1", "9223372036854775808"], False),  # beyond int64
        (["1", "1e3"], False),
        (["1", "img/1"], False),
    ],
)
def test_image_ids_are_int64_only_when_every_id_is_a_plain_integer(tmp_path: Path, ids, integer):
    rows = []
    for index, image_id in enumerate(ids):
        save_image(tmp_path / "images" / f"{index}.png", photo(SIZE, SIZE, seed=index))
        rows.append(
            {"image": f"images/{index}.png", "user_id": "u", "image_id": image_id, "partition": "train"}
        )
    store = tmp_path / "ids.h5"
    convert(open_source(write_jsonl(tmp_path / "m.jsonl", rows)), store, fast_options())
    export(store, "parquet", tmp_path / "pq", QUIET)
    table = pq.read_table(tmp_path / "pq" / "train.parquet")
    assert table.schema.field("image_id").type == (pa.int64() if integer else pa.string())
    assert sorted(str(value) for value in table.column("image_id").to_pylist()) == sorted(ids)


def test_rows_are_the_stores_in_store_order(store_path: Path, exported: Path):
    with fedimage.open(store_path) as store:
        for split in store.splits:
            table = pq.read_table(exported / f"{split}.parquet")
            assert set(table.column("partition").to_pylist()) == {split}
            rows = table.to_pylist()
            position = 0
            for user_id in store.users(split):
                jpegs = store.encoded_images(split, user_id)
                ids = store.load_user(split, user_id).image_ids
                for jpeg, image_id, (coarse, fine) in zip(
                    jpegs, ids, label_sets(store, split, user_id), strict=True
                ):
                    row = rows[position]
                    assert (row["user_id"], row["image_id"]) == (user_id, int(image_id))
                    assert row["image"] == {"bytes": jpeg, "path": None}
                    assert (sorted(row["labels"]), sorted(row["fine_grained_labels"])) == (coarse, fine)
                    position += 1
            assert position == len(rows)


def test_row_groups_bound_memory_and_change_nothing(store_path: Path, exported: Path, tmp_path, monkeypatch):
    monkeypatch.setattr(parquet, "ROW_GROUP_BYTES", 1)
    export(store_path, "parquet", tmp_path / "small_groups", QUIET)
    small = pq.ParquetFile(tmp_path / "small_groups" / "train.parquet")
    assert small.num_row_groups == small.metadata.num_rows == 10
    assert small.read().equals(pq.read_table(exported / "train.parquet"))


def test_datasets_sees_an_image_feature(store_path: Path, exported: Path, tmp_path: Path):
    datasets = pytest.importorskip("datasets")
    loaded = datasets.load_dataset(
        "parquet",
        data_files={split: str(exported / f"{split}.parquet") for split in ("train", "val", "test")},
        cache_dir=str(tmp_path / "hf_cache"),
    )
    assert isinstance(loaded["train"].features["image"], datasets.Image)
    with fedimage.open(store_path) as store:
        for split in store.splits:
            dataset = datasets.Dataset.from_parquet(
                str(exported / f"{split}.parquet"), cache_dir=str(tmp_path / "c")
            )
            assert isinstance(dataset.features["image"], datasets.Image)
            assert len(dataset) == len(loaded[split]) == store.num_images(split)
            first_user = next(iter(store.users(split)))
            row = dataset[0]
            assert row["user_id"] == first_user
            np.testing.assert_array_equal(np.asarray(row["image"]), store.load_image(split, first_user, 0))


def test_flower_natural_id_partitioner_gives_one_partition_per_user(
    store_path: Path, exported: Path, tmp_path
):
    datasets = pytest.importorskip("datasets")
    partitioner_module = pytest.importorskip("flwr_datasets.partitioner")
    dataset = datasets.Dataset.from_parquet(str(exported / "train.parquet"), cache_dir=str(tmp_path / "c"))
    partitioner = partitioner_module.NaturalIdPartitioner(partition_by="user_id")
    partitioner.dataset = dataset
    with fedimage.open(store_path) as store:
        users = store.users("train")
        assert partitioner.num_partitions == len(users)
        for index in range(partitioner.num_partitions):
            partition = partitioner.load_partition(index)
            (user_id,) = set(partition["user_id"])
            # image ids are int64 in the export (FLAIR's are integers, as in apple/flair)
            assert [str(image_id) for image_id in partition["image_id"]] == store.load_user(
                "train", user_id
            ).image_ids
            decoded = np.stack([np.asarray(image) for image in partition["image"]])
            np.testing.assert_array_equal(decoded, store.load_user("train", user_id).images)


def test_converting_the_export_back_gives_the_same_store(
    store_path: Path, exported: Path, tmp_path: Path, capsys
):
    back = tmp_path / "back.h5"
    argv = ["convert", str(exported), "--source-format", "hf", "-o", str(back), "--size", str(SIZE)]
    assert main([*argv, "--quiet", "--workers", "1"]) == 0  # no taxonomy given: the export's is used
    capsys.readouterr()
    with fedimage.open(store_path) as original, fedimage.open(back) as converted:
        assert converted.taxonomy == original.taxonomy and len(original.taxonomy) == 5
        assert converted.splits == original.splits
        for split in original.splits:
            assert converted.users(split) == original.users(split)
            for user_id in original.users(split):
                before, after = original.load_user(split, user_id), converted.load_user(split, user_id)
                assert after.image_ids == before.image_ids
                np.testing.assert_array_equal(after.images, before.images)
                assert label_sets(converted, split, user_id) == label_sets(original, split, user_id)
                assert converted.encoded_images(split, user_id) == original.encoded_images(split, user_id)


def test_raw_stores_are_encoded(flair_folder: Path, tmp_path: Path):
    store_path = flair_store(flair_folder, tmp_path / "raw.h5", "raw")
    export(store_path, "parquet", tmp_path / "pq", QUIET)
    rows = pq.read_table(tmp_path / "pq" / "val.parquet").to_pylist()
    with fedimage.open(store_path) as store:
        user_id = next(iter(store.users("val")))
        pixels = store.load_user("val", user_id).images
    for row, expected in zip(rows, pixels, strict=True):
        assert np.abs(decode_jpeg(row["image"]["bytes"]).astype(int) - expected).mean() < 5


def test_export_concatenates_with_apple_flair(exported: Path, tmp_path: Path):
    datasets = pytest.importorskip("datasets")
    # apple/flair's features on the Hub (image_id int64)
    features = datasets.Features(
        {
            "user_id": datasets.Value("string"),
            "image_id": datasets.Value("int64"),
            "labels": datasets.Sequence(datasets.Value("string")),
            "partition": datasets.Value("string"),
            "fine_grained_labels": datasets.Sequence(datasets.Value("string")),
            "image": datasets.Image(),
        }
    )
    flair_row = {
        "user_id": ["10006426@N04"],
        "image_id": [5305488316],
        "labels": [["animal"]],
        "partition": ["train"],
        "fine_grained_labels": [["cat"]],
        "image": [{"bytes": jpeg_bytes(photo(SIZE, SIZE)), "path": None}],
    }
    apple_flair = datasets.Dataset.from_dict(flair_row, features=features)
    ours = datasets.Dataset.from_parquet(str(exported / "train.parquet"), cache_dir=str(tmp_path / "c"))
    both = datasets.concatenate_datasets([apple_flair, ours])
    assert len(both) == 1 + len(ours)
    assert both.features["image_id"] == datasets.Value("int64")
    assert (
        both[1]["image_id"]
        == ours[0]["image_id"]
        == int(pq.read_table(exported / "train.parquet")[1][0].as_py())
    )


def test_a_taxonomy_in_the_parquet_metadata_is_the_sources_default(exported: Path, tmp_path: Path):
    from fedimage.sources.huggingface import HuggingFaceSource

    source = HuggingFaceSource(exported)
    with fedimage.open(exported.parent / "store.h5") as store:
        assert source.default_taxonomy.fine_to_coarse == store.taxonomy
    plain = tmp_path / "plain"
    plain.mkdir()
    table = pq.read_table(exported / "train.parquet")
    pq.write_table(
        table.replace_schema_metadata({b"huggingface": table.schema.metadata[b"huggingface"]}),
        plain / "train.parquet",
    )
    assert HuggingFaceSource(plain).default_taxonomy is None
    pq.write_table(
        table.replace_schema_metadata({b"fedimage": b'{"label_relationship": {"cat": 1}}'}),
        plain / "train.parquet",
    )
    with pytest.raises(fedimage.errors.SourceError, match=r"not a JSON \{fine: coarse\}"):
        _ = HuggingFaceSource(plain).default_taxonomy
    other = table.replace_schema_metadata({b"fedimage": b'{"label_relationship": {"cat": "pet"}}'})
    pq.write_table(other, plain / "val.parquet")
    pq.write_table(table, plain / "train.parquet")
    with pytest.raises(fedimage.errors.SourceError, match="different taxonomies; pass `taxonomy`"):
        _ = HuggingFaceSource(plain).default_taxonomy


def test_converting_back_keeps_the_stated_image_size(exported: Path, tmp_path: Path, capsys):
    """The export states its size: converting it back needs no --size (and --size still wins)."""
    assert (
        main(["convert", str(exported), "-o", str(tmp_path / "back.h5"), "--source-format", "hf", "--quiet"])
        == 0
    )
    with fedimage.open(tmp_path / "back.h5") as back:
        assert back.image_size == SIZE
    argv = ["convert", str(exported), "-o", str(tmp_path / "big.h5"), "--source-format", "hf", "--quiet"]
    assert main([*argv, "--size", "48"]) == 0
    with fedimage.open(tmp_path / "big.h5") as big:
        assert big.image_size == 48
    report = fedimage.convert(open_source(exported, "hf"), tmp_path / "api.h5")  # no options: the same
    with fedimage.open(report.output) as api:
        assert api.image_size == SIZE
