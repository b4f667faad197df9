"""Per-image metadata (``keep_columns``, ``exif_columns``, ``pseudonymize_columns``) and partitions
by metadata (``column``, ``continuous``): through the convert pipeline, the store and its readers."""

from __future__ import annotations

import csv
import datetime as dt
import itertools
import json
import os
from pathlib import Path

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import fast_options, photo, save_image, write_jsonl
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import fedimage
from fedimage import PartitionOptions, PlanOptions, SplitRatios, convert
from fedimage.cli import main
from fedimage.conversion.metadata import MetadataOptions
from fedimage.errors import OptionError, SourceError
from fedimage.privacy.pseudonyms import Pseudonymizer
from fedimage.records import read_rejects
from fedimage.sources.metadata import KeepColumn, parse_keep_columns, typed_column
from fedimage.store.metadata import MetadataColumn, decode_user_values, encode_user_values

SITES = ["Hôpital Nord", "Clinic South", "Lab East"]
KEY = bytes(range(32))


def metadata_rows(root: Path, count: int = 36, exif: bool = False) -> list[dict]:
    """``count`` images of 6 users at 3 sites, with a year, a score, a time and a missing value or two."""
    rows = []
    for index in range(count):
        name = f"img{index:03d}.jpg"
        options = {}
        if exif and index % 4:
            header = Image.Exif()
            header[0x010F] = "Canon"
            header[0x0110] = f"EOS {index % 3}D"
            header[0x0132] = f"2021:05:{1 + index % 28:02d} 12:30:00"
            options["exif"] = header.tobytes()
        save_image(root / name, photo(48 + index % 5, 40, seed=index), **options)
        rows.append(
            {
                "image": name,
                "user_id": f"user{index % 6}",
                "labels": ["cat" if index % 3 else "dog"],
                "site": SITES[index % 3],
                "year": 2000 + index if index != 5 else None,
                "score": index / 4,
                "taken": f"2020-03-{1 + index % 28:02d}T08:00:00+02:00",
            }
        )
    return rows


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "src" / "manifest.jsonl", metadata_rows(tmp_path / "src"))


def convert_with(source: Path, output: Path, **metadata) -> fedimage.ConvertReport:
    plan = metadata.pop("plan", PlanOptions(split=SplitRatios(), seed=0))
    extra = {key: metadata.pop(key) for key in ("pseudonyms", "encrypt_key", "workers") if key in metadata}
    return convert(source, output, fast_options(plan=plan, metadata=MetadataOptions(**metadata), **extra))


def values_by_image(path: Path, key=None, partition=None) -> dict[str, dict]:
    """{image_id: {column: value}} over every user of a store."""
    found = {}
    with fedimage.open(path, key=key, partition=partition) as store:
        for split in store.splits:
            for user in store.users(split):
                data = store.load_user(split, user)
                assert store.load_metadata(split, user) == data.metadata
                for index, image_id in enumerate(data.image_ids):
                    found[image_id] = {name: values[index] for name, values in data.metadata.items()}
    return found


class TestKeepColumns:
    def test_values_typed_aligned_with_image_ids_and_listed_in_the_manifest(self, manifest, tmp_path):
        report = convert_with(manifest, tmp_path / "out.h5", keep_columns="site,year,score,taken")
        assert report.rejected == 0 and report.written == 36
        with fedimage.open(tmp_path / "out.h5") as store:
            assert [(column.name, column.type) for column in store.metadata_columns] == [
                ("site", "string"),
                ("year", "int"),
                ("score", "float"),
                ("taken", "timestamp"),
            ]
            assert store.manifest["image_metadata"][0] == {
                "name": "site",
                "type": "string",
                "origin": "column",
                "pseudonymized": False,
            }
        values = values_by_image(tmp_path / "out.h5")
        assert values["img004.jpg"] == {
            "site": "Clinic South",
            "year": 2004,
            "score": 1.0,
            "taken": dt.datetime(2020, 3, 5, 6, 0),  # +02:00 in the source: stored in UTC
        }
        assert values["img005.jpg"]["year"] is None  # a missing value stays missing
        assert values["img000.jpg"]["site"] == "Hôpital Nord"
        assert fedimage.verify_store(tmp_path / "out.h5", decode=True).ok

    def test_a_store_without_kept_columns_has_none(self, manifest, tmp_path):
        convert_with(manifest, tmp_path / "plain.h5")
        with fedimage.open(tmp_path / "plain.h5") as store:
            assert store.metadata_columns == []
            user = next(iter(store.users("train")))
            assert store.load_user("train", user).metadata == {}
            assert not [name for name in store.group("train", user) if name.startswith("meta")]

    def test_csv_text_is_typed_and_a_cell_that_does_not_fit_its_declared_type_rejects_its_row(self, tmp_path):
        root = tmp_path / "src"
        rows = metadata_rows(root, 12)
        with open(root / "m.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, ["image", "user_id", "site", "year", "score", "taken"])
            writer.writeheader()
            for index, row in enumerate(rows):
                year = "secret-7" if index == 3 else ("" if row["year"] is None else row["year"])
                writer.writerow(
                    {**{k: row[k] for k in ("image", "user_id", "site", "score", "taken")}, "year": year}
                )
        report = convert_with(root / "m.csv", tmp_path / "out.h5", keep_columns="site,year:int,score,taken")
        assert report.inputs == report.written + report.rejected == 12
        (reject,) = read_rejects(report.rejects_path)
        assert reject["reason"] == "column 'year' holds text that is not an integer"
        assert "secret-7" not in json.dumps(reject)  # a value is never quoted
        values = values_by_image(tmp_path / "out.h5")
        assert values["img004.jpg"]["year"] == 2004 and values["img005.jpg"]["year"] is None
        assert isinstance(values["img004.jpg"]["score"], float)
        with fedimage.open(tmp_path / "out.h5") as store:
            assert {column.name: column.type for column in store.metadata_columns}["taken"] == "timestamp"

    def test_a_list_cell_rejects_its_row_naming_the_column(self, tmp_path):
        root = tmp_path / "src"
        rows = metadata_rows(root, 6)
        rows[2]["site"] = ["a", "b"]
        report = convert_with(write_jsonl(root / "m.jsonl", rows), tmp_path / "o.h5", keep_columns="site")
        (reject,) = read_rejects(report.rejects_path)
        assert reject["reason"] == "column 'site' holds a list" and reject["origin"] == "m.jsonl line 3"
        assert report.written == 5

    def test_unknown_columns_and_column_less_sources_are_one_line_errors(self, manifest, tmp_path):
        with pytest.raises(
            SourceError, match=r"`keep_columns` column 'nope' is not a column of .*its columns are: image"
        ):
            convert_with(manifest, tmp_path / "o.h5", keep_columns="nope")
        folder = tmp_path / "folder"
        save_image(folder / "alice" / "a.jpg", photo(40, 40))
        with pytest.raises(SourceError, match="a folder source has no columns"):
            convert_with(fedimage.open_source(folder, layout="user"), tmp_path / "o.h5", keep_columns="site")

    def test_option_errors(self):
        assert parse_keep_columns("a, b:int ,c:weird,d:e:float") == (
            KeepColumn("a"),
            KeepColumn("b", "int"),
            KeepColumn("c:weird"),
            KeepColumn("d:e", "float"),
        )
        assert parse_keep_columns("") == ()
        with pytest.raises(OptionError, match="names column 'a' twice"):
            parse_keep_columns("a,a:int")
        with pytest.raises(OptionError, match="`exif_columns` field 'gps' is not one of"):
            MetadataOptions(exif_columns="gps")
        with pytest.raises(OptionError, match="both name 'width'"):
            MetadataOptions(keep_columns="width", exif_columns="width")
        with pytest.raises(OptionError, match="`pseudonymize_columns` needs a pseudonym key"):
            fast_options(metadata=MetadataOptions(keep_columns="site", pseudonymize_columns="site"))

    def test_parquet_native_types_zoned_times_and_booleans(self, tmp_path):
        root = tmp_path / "src"
        rows = metadata_rows(root, 8)
        zone = dt.timezone(dt.timedelta(hours=-5))
        table = pa.table(
            {
                "image": [row["image"] for row in rows],
                "user_id": [row["user_id"] for row in rows],
                "flag": [index % 2 == 0 for index in range(8)],
                "when": pa.array(
                    [dt.datetime(2022, 1, 1, 12, tzinfo=zone)] * 8, pa.timestamp("ms", tz="-05:00")
                ),
                "day": pa.array([dt.date(2022, 1, 2)] * 8, pa.date32()),
            }
        )
        pq.write_table(table, root / "m.parquet")
        convert_with(root / "m.parquet", tmp_path / "o.h5", keep_columns="flag,when,day")
        values = values_by_image(tmp_path / "o.h5")
        assert values["img002.jpg"] == {
            "flag": 1,
            "when": dt.datetime(2022, 1, 1, 17, 0),
            "day": dt.datetime(2022, 1, 2),
        }

    def test_flair_items_and_hugging_face_columns(self, flair_folder, tmp_path):
        path = flair_folder / "labels_and_metadata.json"
        items = json.loads(path.read_text())
        for index, item in enumerate(items):
            item["license"] = f"CC-BY-{index % 2}"
        path.write_text(json.dumps(items))
        convert_with(flair_folder, tmp_path / "flair.h5", keep_columns="license")
        values = values_by_image(tmp_path / "flair.h5")
        assert {entry["license"] for entry in values.values()} == {"CC-BY-0", "CC-BY-1"}
        with pytest.raises(SourceError, match=r"'nope' is not a field of labels_and_metadata\.json"):
            convert_with(flair_folder, tmp_path / "x.h5", keep_columns="nope")

        data = tmp_path / "hf"
        images = [photo(40, 40, seed=index) for index in range(6)]
        encoded = []
        for image in images:
            buffer = __import__("io").BytesIO()
            image.save(buffer, format="PNG")
            encoded.append({"bytes": buffer.getvalue(), "path": None})
        data.mkdir()
        pq.write_table(
            pa.table(
                {"image": encoded, "user_id": ["a", "b"] * 3, "camera": ["x", "y", "z"] * 2, "iso": [100] * 6}
            ),
            data / "train.parquet",
        )
        convert_with(data, tmp_path / "hf.h5", keep_columns="camera,iso")
        values = values_by_image(tmp_path / "hf.h5")
        assert sorted(entry["camera"] for entry in values.values()) == ["x", "x", "y", "y", "z", "z"]
        assert {entry["iso"] for entry in values.values()} == {100}


class TestExifColumns:
    def test_fields_read_before_the_header_is_stripped(self, tmp_path):
        root = tmp_path / "src"
        rows = metadata_rows(root, 12, exif=True)
        manifest = write_jsonl(root / "m.jsonl", rows)
        convert_with(
            manifest, tmp_path / "o.h5", exif_columns="camera_make,camera_model,datetime,width,height,iso"
        )
        values = values_by_image(tmp_path / "o.h5")
        assert values["img001.jpg"] == {
            "camera_make": "Canon",
            "camera_model": "EOS 1D",
            "datetime": dt.datetime(2021, 5, 2, 12, 30),
            "width": 49,
            "height": 40,
            "iso": None,
        }
        assert values["img004.jpg"]["camera_make"] is None  # no EXIF: missing, sizes still read
        assert values["img004.jpg"]["width"] == 52
        with fedimage.open(tmp_path / "o.h5") as store:
            assert {column.origin for column in store.metadata_columns} == {"exif"}
            user = next(iter(store.users("train")))
            assert b"Canon" not in store.encoded_images("train", user)[0]  # the stored JPEG has no EXIF

    def test_large_users_and_two_workers_write_the_same_bytes(self, tmp_path):
        root = tmp_path / "src"
        rows = metadata_rows(root, 40, exif=True)
        for row in rows[:30]:
            row["user_id"] = "big"
        manifest = write_jsonl(root / "m.jsonl", rows)
        from fedimage.conversion import shard

        original = shard.LARGE_USER_IMAGES
        shard.LARGE_USER_IMAGES = 8  # the big user goes out in batches
        try:
            for workers in (1, 2):
                convert_with(
                    manifest,
                    tmp_path / f"w{workers}.h5",
                    keep_columns="site",
                    exif_columns="camera_model",
                    workers=workers,
                )
        finally:
            shard.LARGE_USER_IMAGES = original
        assert (tmp_path / "w1.h5").read_bytes() == (tmp_path / "w2.h5").read_bytes()
        assert values_by_image(tmp_path / "w1.h5")["img001.jpg"]["camera_model"] == "EOS 1D"


class TestPrivacy:
    def test_pseudonymized_columns_hold_no_original_value(self, manifest, tmp_path):
        report = convert_with(
            manifest,
            tmp_path / "p.h5",
            keep_columns="site,year",
            pseudonymize_columns="site",
            pseudonyms=Pseudonymizer(KEY),
        )
        assert report.rejected == 0
        data = (tmp_path / "p.h5").read_bytes()
        for site in SITES:
            assert site.encode() not in data
        values = values_by_image(tmp_path / "p.h5")
        expected = {site: Pseudonymizer(KEY).array(pa.array([site]), "value")[0].as_py() for site in SITES}
        assert {entry["site"] for entry in values.values()} == set(expected.values())
        with fedimage.open(tmp_path / "p.h5") as store:
            assert [(c.name, c.type, c.pseudonymized) for c in store.metadata_columns] == [
                ("site", "string", True),
                ("year", "int", False),
            ]

    def test_an_encrypted_store_seals_its_metadata(self, manifest, tmp_path):
        convert_with(manifest, tmp_path / "plain.h5", keep_columns="site,year,score,taken")
        convert_with(manifest, tmp_path / "sealed.h5", keep_columns="site,year,score,taken", encrypt_key=KEY)
        data = (tmp_path / "sealed.h5").read_bytes()
        assert b"Clinic South" not in data and b"meta:" not in data
        assert values_by_image(tmp_path / "sealed.h5", key=KEY) == values_by_image(tmp_path / "plain.h5")


class TestDeterminismAndOverlays:
    def test_same_inputs_same_bytes(self, manifest, tmp_path):
        for name in ("a.h5", "b.h5"):
            convert_with(manifest, tmp_path / name, keep_columns="site,year,score,taken")
        assert (tmp_path / "a.h5").read_bytes() == (tmp_path / "b.h5").read_bytes()

    def test_an_overlay_carries_each_image_s_metadata(self, manifest, tmp_path):
        store = tmp_path / "s.h5"
        convert_with(manifest, store, keep_columns="site,year,score,taken")
        overlay = tmp_path / "iid.parquet"
        fedimage.repartition(store, overlay, PartitionOptions("iid", num_clients=4, seed=2))
        assert values_by_image(store, partition=overlay) == values_by_image(store)


class TestPartitionByMetadata:
    def test_column_partition_makes_one_client_per_value_named_by_it(self, manifest, tmp_path):
        plan = PlanOptions(
            split=SplitRatios(), partition=PartitionOptions("column", key="site"), split_level="image"
        )
        report = convert_with(manifest, tmp_path / "c.h5", plan=plan)
        assert report.rejected == 0
        with fedimage.open(tmp_path / "c.h5") as store:
            assert sorted(store.users("train")) == sorted(SITES)
            assert store.metadata_columns == []  # the key is read to make clients, kept only when asked
        values = values_by_image(tmp_path / "c.h5")
        assert len(values) == 36

    def test_a_pseudonymized_key_gives_pseudonymous_clients_and_empty_keys_are_rejected(self, tmp_path):
        root = tmp_path / "src"
        rows = metadata_rows(root, 12)
        rows[4]["site"] = ""
        manifest = write_jsonl(root / "m.jsonl", rows)
        plan = PlanOptions(partition=PartitionOptions("column", key="site"), split_level="image")
        report = convert_with(
            manifest, tmp_path / "c.h5", plan=plan, pseudonymize_columns="site", pseudonyms=Pseudonymizer(KEY)
        )
        (reject,) = read_rejects(report.rejects_path)
        assert "column 'site' has no value" in reject["reason"]
        with fedimage.open(tmp_path / "c.h5") as store:
            users = set(store.users("train"))
        assert len(users) == 3 and all(len(user) == 32 for user in users)
        assert not any(site.encode() in (tmp_path / "c.h5").read_bytes() for site in SITES)

    def test_continuous_partition_follows_the_value(self, manifest, tmp_path):
        partition = PartitionOptions("continuous", num_clients=4, key="score", strictness=1.0)
        plan = PlanOptions(split=SplitRatios.parse("1,0,0"), partition=partition)
        convert_with(manifest, tmp_path / "t.h5", keep_columns="score", plan=plan)
        with fedimage.open(tmp_path / "t.h5") as store:
            ranges = {
                user: sorted(store.load_metadata("train", user)["score"])
                for user in sorted(store.users("train"))
            }
        bounds = [(values[0], values[-1]) for values in ranges.values()]
        assert all(high < low for (_, high), (low, _) in itertools.pairwise(bounds))
        with pytest.raises(OptionError, match="holds text; the continuous partition ranks numbers or times"):
            convert_with(
                manifest,
                tmp_path / "x.h5",
                plan=PlanOptions(partition=PartitionOptions("continuous", key="site")),
            )
        with pytest.raises(OptionError, match="name it with `partition_key`"):
            PartitionOptions("column")

    def test_repartition_by_a_kept_column(self, manifest, tmp_path):
        store = tmp_path / "s.h5"
        convert_with(manifest, store, keep_columns="site,taken")
        overlay = tmp_path / "sites.parquet"
        fedimage.repartition(
            store, overlay, PartitionOptions("column", key="site"), SplitRatios.parse("1,0,0")
        )
        with fedimage.open(store, partition=overlay) as opened:
            assert sorted(opened.users("train")) == sorted(SITES)
            for site in SITES:
                assert set(opened.load_metadata("train", site)["site"]) == {site}
        fedimage.repartition(store, tmp_path / "t.parquet", PartitionOptions("continuous", 3, key="taken"))
        with pytest.raises(OptionError, match=r"'year' is not a per-image metadata column of s\.h5"):
            fedimage.repartition(store, tmp_path / "y.parquet", PartitionOptions("column", key="year"))

    def test_cli(self, manifest, tmp_path, capsys):
        output = tmp_path / "cli.h5"
        status = main(
            [
                "convert",
                str(manifest),
                "-o",
                str(output),
                "--keep-columns",
                "site,year:int",
                "--exif-columns",
                "width",
                "--partition",
                "column",
                "--partition-key",
                "site",
                "--split-level",
                "image",
                "--quiet",
                "--workers",
                "1",
            ]
        )
        assert status == 0, capsys.readouterr().err
        with fedimage.open(output) as store:
            assert sorted(store.users("train")) == sorted(SITES)
            assert [column.name for column in store.metadata_columns] == ["site", "year", "width"]
        assert main(["inspect", str(output)]) == 0
        assert "site (string), year (int), width (int)" in capsys.readouterr().out
        status = main(["convert", str(manifest), "-o", str(tmp_path / "bad.h5"), "--partition", "column"])
        assert status != 0
        assert "--partition-key" in capsys.readouterr().err


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from(["int", "float", "string", "timestamp"]),
    st.lists(st.one_of(st.none(), st.integers(-(2**40), 2**40)), min_size=1, max_size=20),
    st.text(max_size=8),
)
def test_user_values_round_trip_through_their_datasets(kind, numbers, text):
    if kind == "string":
        values = [None if number is None else f"{text}{number}" for number in numbers]
    elif kind == "float":
        values = [None if number is None else number / 7 for number in numbers]
    elif kind == "timestamp":
        values = [
            None if number is None else dt.datetime(1970, 1, 1) + dt.timedelta(microseconds=number)
            for number in numbers
        ]
    else:
        values = numbers
    column = MetadataColumn("a/b%c", kind)
    arrays = encode_user_values(column, values)
    assert decode_user_values(column, arrays, len(values)) == values
    assert all("/" not in name for name in arrays)


def test_typed_column_inference():
    assert typed_column(pa.array(["1", " 2", ""]), None, "c")[1] == "int"
    assert typed_column(pa.array(["1", "2.5"]), None, "c")[1] == "float"
    assert typed_column(pa.array(["2020-01-01", "2021:05:04 10:00:00"]), None, "c")[1] == "timestamp"
    assert typed_column(pa.array(["1", "x"]), None, "c")[1] == "string"
    assert typed_column(pa.array([None, None], pa.null()), None, "c")[1] == "string"
    values, kind, problems = typed_column(pa.array([1.0, 2.5]), "int", "c")
    assert kind == "int" and problems == {1: "holds a number that is not an integer"}
    assert values.to_pylist() == [1, None]
    with pytest.raises(OptionError, match="holds list<item: int64> values"):
        typed_column(pa.array([[1]]), None, "c")


def test_h5_layout_is_readable_without_fedimage(manifest, tmp_path):
    convert_with(manifest, tmp_path / "o.h5", keep_columns="site,year")
    with h5py.File(tmp_path / "o.h5") as file, fedimage.open(tmp_path / "o.h5") as store:
        user = next(iter(store.users("train")))
        group = file["train"][user]
        sites = [raw.decode() for raw in group["meta:site"][()]]
        assert sites == store.load_metadata("train", user)["site"]
        assert group["meta:year"].dtype == np.int64
        assert os.path.getsize(tmp_path / "o.h5") > 0


def test_a_column_overlay_names_each_client_by_the_value_it_holds(tmp_path):
    # numbers: client order is numeric (9 before 10), and so are the names
    root = tmp_path / "src"
    rows = metadata_rows(root, 24)
    for index, row in enumerate(rows):
        row["ward"] = index % 12
    manifest = write_jsonl(root / "m.jsonl", rows)
    store = tmp_path / "s.h5"
    convert_with(manifest, store, keep_columns="ward")
    overlay = tmp_path / "wards.parquet"
    fedimage.repartition(store, overlay, PartitionOptions("column", key="ward"), SplitRatios.parse("1,0,0"))
    with fedimage.open(store, partition=overlay) as opened:
        clients = opened.users("train")
        assert sorted(clients, key=int) == [str(ward) for ward in range(12)]
        for client in clients:
            assert set(opened.load_metadata("train", client)["ward"]) == {int(client)}
