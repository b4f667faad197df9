"""Reading sources: folder layouts, manifest formats and column mapping, FLAIR's raw folder."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import photo, save_image, write_jsonl

from fedimage.errors import OptionError, SourceError
from fedimage.labels import Taxonomy
from fedimage.records import ImageRecord, Reject
from fedimage.sources import ManifestColumns, detect_source_format, open_source
from fedimage.sources import flair as flair_module


def records(source) -> list[ImageRecord | Reject]:
    return list(source.records())


class TestFolderLayouts:
    def test_user_layout(self, user_folder: Path):
        source = open_source(user_folder, layout="user")
        found = records(source)
        assert source.has_users and len(found) == 15
        assert {record.user_id for record in found} == {f"user{i}" for i in range(5)}
        assert found[0].image_id == "user0/img0.jpg" and found[0].labels == ()

    def test_class_layout_has_no_users(self, tmp_path: Path):
        for label in ("cat", "dog"):
            save_image(tmp_path / "c" / label / "a.png", photo(20, 20))
        source = open_source(tmp_path / "c", layout="class")
        assert not source.has_users
        assert [(r.labels, r.user_id) for r in records(source)] == [(("cat",), ""), (("dog",), "")]

    def test_user_class_layout_is_detected(self, tmp_path: Path):
        save_image(tmp_path / "uc" / "alice" / "cat" / "1.png", photo(20, 20))
        save_image(tmp_path / "uc" / "bob" / "dog" / "sub" / "2.png", photo(20, 20))
        source = open_source(tmp_path / "uc")
        assert source.layout == "user/class"
        assert [(r.user_id, r.labels) for r in records(source)] == [("alice", ("cat",)), ("bob", ("dog",))]

    def test_folder_label_known_as_fine_label(self, tmp_path: Path):
        save_image(tmp_path / "c" / "tabby" / "1.png", photo(20, 20))
        source = open_source(tmp_path / "c", layout="class", taxonomy=Taxonomy({"tabby": "cat"}))
        (record,) = records(source)
        assert record.fine_labels == ("tabby",) and record.labels == ()

    def test_ambiguous_layout_needs_option(self, user_folder: Path):
        with pytest.raises(OptionError, match="pass `layout`"):
            open_source(user_folder)

    def test_hidden_files_are_counted_and_loose_files_rejected(self, user_folder: Path):
        (user_folder / ".DS_Store").write_bytes(b"junk")
        (user_folder / "user0" / ".hidden.jpg").write_bytes(b"junk")
        (user_folder / "loose.jpg").write_bytes(b"junk")
        source = open_source(user_folder, layout="user")
        found = records(source)
        assert source.ignored == {"hidden file or folder": 2}
        rejects = [item for item in found if isinstance(item, Reject)]
        assert len(rejects) == 1 and "directly in the source folder" in rejects[0].reason

    def test_empty_and_missing_folders(self, tmp_path: Path):
        (tmp_path / "empty").mkdir()
        with pytest.raises(SourceError, match="contains no files"):
            open_source(tmp_path / "empty", layout="user")
        with pytest.raises(SourceError, match="source not found"):
            open_source(tmp_path / "nothing")


ROWS = [
    {"file": "img/a.jpg", "owner": "alice", "tags": "cat|dog", "fine": "tabby", "id": "1", "part": "train"},
    {"file": "img/b.jpg", "owner": "bob", "tags": "", "fine": "", "id": "2", "part": "test"},
]
COLUMNS = ManifestColumns(
    image="file", user="owner", labels="tags", fine_labels="fine", image_id="id", split="part"
)


def write_table(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".csv":
        with open(path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    elif path.suffix == ".jsonl":
        write_jsonl(path, rows)
    elif path.suffix == ".json":
        path.write_text(json.dumps(rows))
    else:
        pq.write_table(pa.Table.from_pylist(rows), path)
    return path


class TestManifests:
    @pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".json", ".parquet"])
    def test_columns_are_mapped(self, tmp_path: Path, suffix):
        path = write_table(tmp_path / f"m{suffix}", ROWS)
        found = records(open_source(path, columns=COLUMNS))
        assert found == [
            ImageRecord(
                str(tmp_path / "img/a.jpg"),
                "1",
                "alice",
                ("cat", "dog"),
                ("tabby",),
                "train",
                found[0].origin,
            ),
            ImageRecord(str(tmp_path / "img/b.jpg"), "2", "bob", (), (), "test", found[1].origin),
        ]
        assert path.name in found[0].origin

    @pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
    def test_real_list_columns(self, tmp_path: Path, suffix):
        rows = [{"image": "a.jpg", "user_id": "u", "labels": ["x", " y ", "x", ""]}]
        (record,) = records(open_source(write_table(tmp_path / f"m{suffix}", rows)))
        assert record.labels == ("x", "y")

    def test_custom_delimiter(self, tmp_path: Path):
        rows = [{"image": "a.jpg", "user_id": "u", "labels": "cat;dog"}]
        (record,) = records(open_source(write_table(tmp_path / "m.csv", rows), label_delimiter=";"))
        assert record.labels == ("cat", "dog")

    def test_defaults_follow_flair_names_and_image_id_defaults_to_path(self, tmp_path: Path):
        rows = [{"image": "a.jpg", "user_id": "u", "labels": "cat"}]
        source = open_source(write_table(tmp_path / "m.csv", rows))
        (record,) = records(source)
        assert (record.image_id, record.user_id, record.labels, record.split) == (
            "a.jpg",
            "u",
            ("cat",),
            None,
        )

    def test_missing_explicit_column_names_the_columns(self, tmp_path: Path):
        path = write_table(tmp_path / "m.csv", ROWS)
        with pytest.raises(SourceError, match=r"`columns.user` 'user' is not a column .* file, owner, tags"):
            open_source(path, columns=ManifestColumns(image="file", user="user"))
        with pytest.raises(SourceError, match="has no image column"):
            open_source(path)

    def test_paths_outside_the_folder_are_rejected(self, tmp_path: Path):
        rows = [
            {"image": "../secret.jpg", "user_id": "u"},
            {"image": "/etc/passwd", "user_id": "u"},
            {"image": "ok/../fine.jpg", "user_id": "u"},
            {"image": "", "user_id": "u"},
        ]
        found = records(open_source(write_table(tmp_path / "m.jsonl", rows)))
        reasons = [item.text if isinstance(item, Reject) else "ok" for item in found]
        assert reasons[0] == "image path '../secret.jpg' lies outside the manifest's folder"
        assert "lies outside" in reasons[1]
        assert reasons[2] == "ok" and found[2].path == str(tmp_path / "fine.jpg")
        assert reasons[3] == "row has no image path"

    def test_broken_jsonl_lines_become_rejects(self, tmp_path: Path):
        path = tmp_path / "m.jsonl"
        path.write_text('{"image": "a.jpg", "user_id": "u"}\n{oops\n[1, 2]\n')
        found = records(open_source(path))
        assert isinstance(found[0], ImageRecord)
        assert found[1].reason.startswith("invalid JSON") and found[1].origin == "m.jsonl line 2"
        assert found[2].reason == "row is not a JSON object"

    def test_unknown_formats(self, tmp_path: Path):
        path = tmp_path / "m.xlsx"
        path.write_text("x")
        with pytest.raises(SourceError, match="cannot tell what"):
            open_source(path)
        with pytest.raises(SourceError, match="unknown manifest format"):
            open_source(path, "manifest")
        with pytest.raises(SourceError, match="unknown source format 'zip'"):
            open_source(tmp_path, "zip")


class TestFlairFolder:
    def test_detected_with_default_taxonomy(self, flair_folder: Path):
        assert detect_source_format(flair_folder) == "flair"
        source = open_source(flair_folder)
        assert source.default_taxonomy == flair_folder / "label_relationship.txt"
        found = records(source)
        assert len(found) == 14
        first = found[0]
        assert first.path == str(flair_folder / "small_images" / "1000.jpg")
        assert first.user_id == "59769174@N00" and first.split == "train"

    def test_columnar_metadata_cleans_and_rejects_item_by_item(self, tmp_path: Path, monkeypatch):
        items = [
            {"user_id": "u1", "image_id": "1", "labels": ["a", "b"], "fine_grained_labels": ["x"]},
            {"user_id": " u2 ", "image_id": " 2 ", "labels": "a|b| a", "partition": "val"},
            [1, 2],
            {"user_id": 3, "image_id": 4, "labels": [], "partition": None},
            {"user_id": "u5", "image_id": "../../etc/passwd", "labels": ["a"]},
            {"user_id": "u6", "image_id": "", "labels": ["a"]},
            {"user_id": "u7", "image_id": "sub/dir", "labels": ["a", 5]},  # a number is no label name
            {"user_id": "u8", "image_id": None, "labels": "a"},
            {"user_id": "u9", "labels": "a"},
            {"user_id": "u10", "image_id": "10", "labels": ["a", None, "a"], "fine_grained_labels": "q|r"},
            "not an object",
            {"user_id": "u11", "image_id": "11", "labels": ["a"], "fine_grained_labels": [" q ", "q"]},
            {"user_id": "u12", "image_id": "sub/dir", "labels": ["a", None]},
        ]
        (tmp_path / "labels_and_metadata.json").write_text(json.dumps(items))
        monkeypatch.setattr(flair_module, "METADATA_BATCH_ROWS", 4)  # several batches
        source = open_source(tmp_path, "flair")
        columnar = source.metadata()
        kept = columnar.table.select(["user_id", "image_id", "labels", "fine_labels", "split"]).to_pylist()
        # what the row-by-row manifest path gave for these items (pinned when both paths existed)
        assert [tuple(row.values()) for row in kept] == [
            ("u1", "1", ["a", "b"], ["x"], ""),
            ("u2", "2", ["a", "b"], [], "val"),
            ("3", "4", [], [], ""),
            ("u10", "10", ["a"], ["q", "r"], ""),
            ("u11", "11", ["a"], ["q"], ""),
            ("u12", "sub/dir", ["a"], [], ""),
        ]
        assert [reject.reason for reject in columnar.rejects].count("row has no image path") == 3
        rejected = [reject.origin.rsplit(" ", 1)[1] for reject in columnar.rejects]
        assert rejected == ["2", "4", "5", "6", "7", "8", "10"]
        assert "lies outside" in columnar.rejects[1].reason
        assert columnar.rejects[3].text == (
            "field 'labels' holds a list with a number in it; a label is a name (text)"
        )

    def test_missing_metadata(self, tmp_path: Path):
        with pytest.raises(SourceError, match="not a FLAIR folder"):
            open_source(tmp_path, "flair")
