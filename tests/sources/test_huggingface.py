"""Hugging Face datasets on disk: Parquet/Arrow with an Image column, save_to_disk folders, the cache."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from helpers import fast_options, jpeg_bytes, photo

import fedimage
from fedimage import ImageOptions, ManifestColumns, PlanOptions, convert, open_source
from fedimage.conversion.plan import make_plan
from fedimage.errors import SourceError
from fedimage.sources import HuggingFaceSource, detect_source_format

IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
FLAIR_SCHEMA = pa.schema(
    [
        ("user_id", pa.string()),
        ("image_id", pa.int64()),
        ("labels", pa.list_(pa.string())),
        ("partition", pa.string()),
        ("fine_grained_labels", pa.list_(pa.string())),
        ("image", IMAGE_TYPE),
    ]
)


def flair_rows(flair_folder: Path) -> list[dict]:
    """The rows of the apple/flair schema for the miniature FLAIR folder (same images)."""
    rows = json.loads((flair_folder / "labels_and_metadata.json").read_text())
    return [
        {
            **row,
            "image_id": int(row["image_id"]),
            "image": {
                "bytes": (flair_folder / "small_images" / f"{row['image_id']}.jpg").read_bytes(),
                "path": f"{row['image_id']}.jpg",
            },
        }
        for row in rows
    ]


def write_parquet(path: Path, rows: list[dict], row_group_size: int = 4) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=FLAIR_SCHEMA), path, row_group_size=row_group_size)
    return path


def user_groups(path: Path) -> dict[str, dict[str, bytes]]:
    with h5py.File(path, "r") as handle:
        return {
            f"{split}/{user}/{name}": handle[split][user][name][()].tobytes()
            for split in handle
            if split != "metadata"
            for user in handle[split]
            for name in handle[split][user]
        }


def test_flair_parquet_gives_the_same_store_as_the_flair_folder(flair_folder: Path, tmp_path: Path):
    rows = flair_rows(flair_folder)
    data = tmp_path / "apple_flair" / "data"
    write_parquet(data / "train-00000-of-00002.parquet", rows[:7])
    write_parquet(data / "train-00001-of-00002.parquet", rows[7:])
    assert detect_source_format(tmp_path / "apple_flair") == "hf"
    taxonomy = fedimage.load_taxonomy(flair_folder / "label_relationship.txt")
    for storage in ("jpeg", "raw"):
        options = fast_options(image=ImageOptions(storage=storage))
        with open_source(tmp_path / "apple_flair") as source:
            convert(source, tmp_path / f"hf-{storage}.h5", options, taxonomy=taxonomy)
        convert(open_source(flair_folder), tmp_path / f"flair-{storage}.h5", options, taxonomy=taxonomy)
        assert user_groups(tmp_path / f"hf-{storage}.h5") == user_groups(tmp_path / f"flair-{storage}.h5")
    assert fedimage.verify_store(tmp_path / "hf-raw.h5").ok


def test_workers_read_their_own_images_and_the_store_does_not_change(
    flair_folder: Path, tmp_path: Path, monkeypatch
):
    from fedimage.conversion import shard as shard_writing
    from fedimage.conversion import workdir as shards_module

    monkeypatch.setattr(shards_module, "SHARD_IMAGES", 3)  # several shards
    path = write_parquet(tmp_path / "flair.parquet", flair_rows(flair_folder))
    sent: list[object] = []
    original = shard_writing.shard_task

    def spy(plan, source, *args):
        task = original(plan, source, *args)
        sent.append((task.payloads, task.users))
        return task

    monkeypatch.setattr(shard_writing, "shard_task", spy)
    stores = {}
    for workers in (1, 2):
        with open_source(path) as source:
            stores[workers] = tmp_path / f"w{workers}.h5"
            convert(source, stores[workers], fast_options(workers=workers))
    # neither image bytes nor rows sent: forked workers read both from the source and plan they inherit
    assert len(sent) > 4 and all(payloads is None and users is None for payloads, users in sent)
    assert stores[1].read_bytes() == stores[2].read_bytes()


def test_user_index_reads_no_image_bytes(flair_folder: Path, tmp_path: Path, monkeypatch):
    path = write_parquet(tmp_path / "flair.parquet", flair_rows(flair_folder))
    read_columns: list[list[str]] = []
    original = pq.ParquetFile.iter_batches

    def spy(self, *args, columns=None, **kwargs):
        read_columns.append(list(columns or []))
        return original(self, *args, columns=columns, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", spy)
    source = open_source(path)
    assert isinstance(source, HuggingFaceSource)
    plan = make_plan(source.metadata(), PlanOptions(), has_users=source.has_users)
    assert plan.planned_images == 14
    assert read_columns and all("image" not in columns for columns in read_columns)
    assert all(data_file.images is None for data_file in source._files)  # image column never opened
    assert sorted(plan.table.column("row").take(pa.array(plan.order)).to_pylist()) == list(range(14))


def test_parquet_images_go_through_a_temporary_file_that_is_removed(
    flair_folder: Path, tmp_path: Path, monkeypatch
):
    from fedimage.sources import huggingface

    monkeypatch.setattr(huggingface, "PARQUET_BATCH_ROWS", 3)  # several batches of cells
    path = write_parquet(tmp_path / "flair.parquet", flair_rows(flair_folder))
    source = open_source(path)
    records = [record for record in source.records()]
    payloads = source.read_images(records[::-1])
    for record, payload in zip(records[::-1], payloads, strict=True):
        assert payload == (flair_folder / "small_images" / f"{record.image_id}.jpg").read_bytes()
    temporary = Path(source._tmpdir)
    assert list(temporary.glob("*.bin"))
    source.close()
    assert not temporary.exists()


@pytest.mark.parametrize("binary", [pa.binary(), pa.large_binary()])
def test_image_blob_reads_back_every_cell(tmp_path: Path, binary: pa.DataType):
    """Whole batches are written in one piece; a null row that still holds bytes is skipped."""
    from fedimage.sources.huggingface import _ImageBlob

    cells = [b"first", b"", None, b"fourth", b"x" * 1000]
    data = pa.array(cells, binary)
    paths = pa.array(["", "b.png", "", "", ""])
    valid = pa.array([True, True, True, False, True])  # row 3 is a null image with bytes inside
    column = pa.StructArray.from_arrays([data, paths], names=["bytes", "path"], mask=pc.invert(valid))
    batches = [column.slice(0, 2), column.slice(2, 3), column.slice(5, 0)]
    blob = _ImageBlob(tmp_path / "blob.bin", iter(batches))
    try:
        payloads = [blob.payload(row, tmp_path) for row in range(5)]
    finally:
        blob.close()
    assert payloads == [b"first", str(tmp_path / "b.png"), None, None, b"x" * 1000]
    assert (tmp_path / "blob.bin").stat().st_size == len(b"first") + 1000


def test_cells_with_only_a_path_or_nothing(tmp_path: Path):
    (tmp_path / "pictures").mkdir()
    photo(40, 30).save(tmp_path / "pictures" / "a.png")
    rows = [
        {"user_id": "u", "image_id": 1, "image": {"bytes": None, "path": "pictures/a.png"}},
        {"user_id": "u", "image_id": 2, "image": None},
        {"user_id": "u", "image_id": 3, "image": {"bytes": jpeg_bytes(photo(50, 50)), "path": None}},
        {"user_id": "u", "image_id": 4, "image": {"bytes": b"garbage", "path": None}},
    ]
    path = tmp_path / "data.parquet"
    pq.write_table(
        pa.Table.from_pylist(
            rows,
            schema=pa.schema([("user_id", pa.string()), ("image_id", pa.int64()), ("image", IMAGE_TYPE)]),
        ),
        path,
    )
    options = fast_options(plan=PlanOptions(split=fedimage.SplitRatios(("train",), (1.0,))))
    with open_source(path) as source:
        report = convert(source, tmp_path / "out.h5", options)
    reasons = {reject.image_id: reject.reason for reject in report.rejects}
    assert report.written == 2
    assert reasons == {
        "2": "the row holds neither image bytes nor an image path",
        "4": "not an image file (unrecognized format)",
    }
    assert "data.parquet row 3" in [reject.origin for reject in report.rejects]


def test_a_column_that_is_not_an_image_column(tmp_path: Path):
    path = tmp_path / "data.parquet"
    pq.write_table(pa.table({"image": ["a.jpg"], "user_id": ["u"]}), path)
    assert detect_source_format(path) == "manifest"  # paths in a Parquet table: a manifest
    with pytest.raises(SourceError, match="not a datasets Image column"):
        open_source(path, "hf")


def test_hub_cache_names(flair_folder: Path, tmp_path: Path, monkeypatch):
    cache = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    with pytest.raises(SourceError, match=r"not in the local Hugging Face cache .* `allow_download`"):
        open_source("apple/flair", "hf")
    repo = cache / "datasets--apple--flair"
    write_parquet(
        repo / "snapshots" / "abc123" / "data" / "test-00000-of-00001.parquet", flair_rows(flair_folder)
    )
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    with open_source("apple/flair", "hf") as source:
        assert source.path == repo / "snapshots" / "abc123"
        assert len(list(source.records())) == 14


def as_dataset(rows: list[dict]):
    datasets = pytest.importorskip("datasets")
    features = datasets.Features(
        {
            "user_id": datasets.Value("string"),
            "image_id": datasets.Value("int64"),
            "labels": datasets.Sequence(datasets.Value("string")),
            "fine_grained_labels": datasets.Sequence(datasets.Value("string")),
            "image": datasets.Image(),
        }
    )
    columns = {name: [row[name] for row in rows] for name in features}
    return datasets.Dataset.from_dict(columns, features=features)


def test_save_to_disk_dataset_dict_splits_become_partitions(flair_folder: Path, tmp_path: Path):
    datasets = pytest.importorskip("datasets")
    rows = flair_rows(flair_folder)
    by_split = {name: [row for row in rows if row["partition"] == name] for name in ("train", "val", "test")}
    datasets.DatasetDict({name: as_dataset(part) for name, part in by_split.items()}).save_to_disk(
        str(tmp_path / "saved")
    )
    assert detect_source_format(tmp_path / "saved") == "hf"
    with open_source(tmp_path / "saved") as source:
        convert(source, tmp_path / "out.h5", fast_options(image=ImageOptions(size=256)))
    with fedimage.open(tmp_path / "out.h5") as store:
        for name, part in by_split.items():
            assert set(store.users(name)) == {row["user_id"] for row in part}
            user = next(iter(store.users(name)))
            data = store.load_user(name, user)
            expected = [row for row in part if row["user_id"] == user]
            assert data.image_ids == sorted(str(row["image_id"]) for row in expected)
            assert data.images.dtype == np.uint8


def test_save_to_disk_single_dataset_uses_the_seeded_split(flair_folder: Path, tmp_path: Path):
    as_dataset(flair_rows(flair_folder)).save_to_disk(str(tmp_path / "single"))
    with open_source(tmp_path / "single") as source:
        report = convert(source, tmp_path / "out.h5", fast_options(image=ImageOptions(size=64)))
    assert report.written == 14 and sum(info["users"] for info in report.splits.values()) == 6


@pytest.mark.parametrize("list_type", [pa.list_(pa.string()), pa.large_list(pa.string())])
def test_label_lists_are_cleaned_like_manifest_labels(list_type):
    from fedimage.sources.base import parse_label_list
    from fedimage.sources.record_table import clean_label_lists

    def _label_tuples(column, delimiter):
        return [tuple(labels) for labels in clean_label_lists(column, delimiter).to_pylist()]

    # rows: plain, duplicates and blanks, null list, null item, empty list
    values = [["cat", "dog"], [" dog ", "", "dog", "cat"], None, ["x", None], []]
    column = pa.chunked_array([pa.array(values[:2], type=list_type), pa.array(values[2:], type=list_type)])
    expected = [parse_label_list(value, "|") for value in values]
    assert _label_tuples(column, "|") == expected == [("cat", "dog"), ("dog", "cat"), (), ("x",), ()]
    joined = pa.chunked_array([pa.array(["a|b", None, " c | c "])])
    assert _label_tuples(joined, "|") == [("a", "b"), (), ("c",)]


def test_class_label_columns_become_label_names(tmp_path: Path):
    datasets = pytest.importorskip("datasets")
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "user_id": datasets.Value("string"),
            "label": datasets.ClassLabel(names=["cat", "dog"]),
            "tags": datasets.Sequence(datasets.ClassLabel(names=["indoor", "outdoor"])),
        }
    )
    image = {"bytes": jpeg_bytes(photo(32, 32)), "path": None}
    rows = {"image": [image] * 3, "user_id": ["a", "a", "b"], "label": [1, 0, -1], "tags": [[0, 1], [], [1]]}
    datasets.Dataset.from_dict(rows, features=features).to_parquet(str(tmp_path / "classes.parquet"))
    columns = ManifestColumns(labels="label", fine_labels="tags")
    source = open_source(tmp_path / "classes.parquet", columns=columns)
    table = source.metadata().table
    assert table.column("labels").to_pylist() == [["dog"], ["cat"], []]
    assert table.column("fine_labels").to_pylist() == [["indoor", "outdoor"], [], ["outdoor"]]
