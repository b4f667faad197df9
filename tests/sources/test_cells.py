"""Manifest, FLAIR and Hugging Face cells: typed ids and labels, and text that UTF-8 cannot hold (issue 14).

A cell that cannot be what its column means rejects its row, naming the column; it never crashes
the run and never becomes a made-up id such as ``"['a', 'b']"``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import fast_options, jpeg_bytes, photo, save_image

from fedimage import convert, open_source
from fedimage.records import ImageRecord, Reject, read_rejects
from fedimage.sources.record_table import metadata_from_records
from fedimage.store.schema import rejects_path_for

NOT_UNICODE = "holds text that is not valid Unicode (a lone surrogate escape, or bytes not in UTF-8)"
NOT_UTF8 = "holds bytes that are not UTF-8 text"
NOT_AN_ID = "an id must be text or an integer"
NOT_A_LABEL = "a label is a name (text)"
NOT_LABELS = "labels are a list of names or one joined text"


def outcome(source) -> list[tuple[str, ...]]:
    """Per input: ("ok", user, labels...) or ("rejected", origin, reason)."""
    found = []
    for item in source.records():
        if isinstance(item, Reject):
            found.append(("rejected", item.origin, item.text))
        else:
            found.append(("ok", item.user_id, *item.labels))
    return found


def bad_invalid_utf8_strings(values: list[bytes]) -> pa.Array:
    """A string array whose values are the given bytes, unchecked (as a careless writer leaves it)."""
    offsets, data = [0], b""
    for value in values:
        data += value
        offsets.append(len(data))
    offset_buffer = pa.py_buffer(pa.array(offsets, pa.int32()).buffers()[1])
    return pa.Array.from_buffers(pa.string(), len(values), [None, offset_buffer, pa.py_buffer(data)])


class TestTextThatUtf8CannotHold:
    def test_a_lone_surrogate_in_a_jsonl_row_rejects_that_row_only(self, tmp_path: Path):
        for name in ("a", "b", "c", "d"):
            save_image(tmp_path / f"{name}.jpg", photo(40, 30))
        lines = [
            '{"image": "a.jpg", "user_id": "u"}',
            '{"image": "b.jpg", "user_id": "\\ud800"}',
            '{"image": "c\\udfff.jpg", "user_id": "u"}',
            '{"image": "d.jpg", "user_id": "v", "labels": ["ok", "\\ud83d"]}',
            '{"image": "d.jpg", "user_id": "v", "labels": "x|\\ud83d"}',
            '{"image": "d.jpg", "user_id": "w", "labels": ["\\ud83d\\ude00"]}',  # a proper pair: fine
        ]
        path = tmp_path / "m.jsonl"
        path.write_text("\n".join(lines) + "\n")
        assert outcome(open_source(path)) == [
            ("ok", "u"),
            ("rejected", "m.jsonl line 2", f"column 'user_id' {NOT_UNICODE}"),
            ("rejected", "m.jsonl line 3", f"column 'image' {NOT_UNICODE}"),
            ("rejected", "m.jsonl line 4", f"column 'labels' {NOT_UNICODE}"),
            ("rejected", "m.jsonl line 5", f"column 'labels' {NOT_UNICODE}"),
            ("ok", "w", "\U0001f600"),
        ]
        report = convert(open_source(path), tmp_path / "out.h5", fast_options())
        assert (report.inputs, report.written, len(report.rejects)) == (6, 2, 4)
        rows = read_rejects(Path(rejects_path_for(str(report.output))))
        assert [row["origin"] for row in rows] == [f"m.jsonl line {n}" for n in (2, 3, 4, 5)]

    def test_a_jsonl_line_that_is_not_utf8_rejects_that_line(self, tmp_path: Path):
        path = tmp_path / "m.jsonl"
        path.write_bytes(b'{"image": "a.jpg", "user_id": "u"}\n{"image": "b.jpg", "user_id": "caf\xe9"}\n')
        assert outcome(open_source(path)) == [
            ("ok", "u"),
            ("rejected", "m.jsonl line 2", "line is not UTF-8 text"),
        ]

    def test_a_json_list_item(self, tmp_path: Path):
        path = tmp_path / "m.json"
        path.write_text('[{"image": "a.jpg", "user_id": "u"}, {"image": "b.jpg", "user_id": "\\ud800"}]')
        assert outcome(open_source(path)) == [
            ("ok", "u"),
            ("rejected", "m.json item 1", f"column 'user_id' {NOT_UNICODE}"),
        ]
        path.write_bytes(b'[{"image": "a.jpg", "user_id": "u"}, {"image": "b.jpg", "user_id": "caf\xe9"}]')
        assert outcome(open_source(path))[1] == (
            "rejected",
            "m.json item 1",
            f"column 'user_id' {NOT_UNICODE}",
        )

    def test_a_csv_cell_that_is_not_utf8(self, tmp_path: Path):
        path = tmp_path / "m.csv"
        path.write_bytes(b"image,user_id,labels\na.jpg,u,x\nb.jpg,caf\xe9,x\nc.jpg,v,\xff\n")
        assert outcome(open_source(path)) == [
            ("ok", "u", "x"),
            ("rejected", "m.csv line 3", f"column 'user_id' {NOT_UNICODE}"),
            ("rejected", "m.csv line 4", f"column 'labels' {NOT_UNICODE}"),
        ]

    def test_a_parquet_cell_that_is_not_utf8(self, tmp_path: Path):
        path = tmp_path / "m.parquet"
        users = bad_invalid_utf8_strings([b"u", b"caf\xe9", b"v"])
        pq.write_table(pa.table({"image": ["a.jpg", "b.jpg", "c.jpg"], "user_id": users}), path)
        assert outcome(open_source(path)) == [
            ("ok", "u"),
            ("rejected", "m.parquet row 1", f"column 'user_id' {NOT_UTF8}"),
            ("ok", "v"),
        ]

    def test_flair_items(self, tmp_path: Path):
        (tmp_path / "small_images").mkdir()
        (tmp_path / "labels_and_metadata.json").write_bytes(
            b'[{"user_id": "u", "image_id": "1", "labels": ["a"]},'
            b' {"user_id": "\\ud800", "image_id": "2", "labels": ["a"]},'
            b' {"user_id": "v", "image_id": "3", "labels": ["a", "caf\xe9"]},'
            b' {"user_id": "w", "image_id": "4\\udc00", "labels": "a"}]'
        )
        metadata = open_source(tmp_path, "flair").metadata()
        assert metadata.table.column("user_id").to_pylist() == ["u"]
        assert [(r.origin, r.text) for r in metadata.rejects] == [
            ("labels_and_metadata.json item 1", f"field 'user_id' {NOT_UNICODE}"),
            ("labels_and_metadata.json item 2", f"field 'labels' {NOT_UNICODE}"),
            ("labels_and_metadata.json item 3", f"field 'image_id' {NOT_UNICODE}"),
        ]

    def test_a_hugging_face_cell_that_is_not_utf8(self, tmp_path: Path):
        image = {"bytes": jpeg_bytes(photo(32, 32)), "path": None}
        images = pa.array([image] * 3, pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
        users = bad_invalid_utf8_strings([b"u", b"caf\xe9", b"v"])
        labels = pa.ListArray.from_arrays(
            pa.array([0, 1, 2, 3], pa.int32()), bad_invalid_utf8_strings([b"a", b"b", b"\xff"])
        )
        pq.write_table(
            pa.table({"image": images, "user_id": users, "labels": labels}), tmp_path / "d.parquet"
        )
        metadata = open_source(tmp_path / "d.parquet", "hf").metadata()
        assert metadata.table.column("user_id").to_pylist() == ["u"]
        assert [(r.origin, r.text) for r in metadata.rejects] == [
            ("d.parquet row 1", f"column 'user_id' {NOT_UTF8}"),
            ("d.parquet row 2", f"column 'labels' {NOT_UTF8}"),
        ]

    def test_records_of_any_source_that_utf8_cannot_hold_are_rejected(self):
        good = ImageRecord("/x/a.jpg", "a", "u", origin="row 0")
        bad = ImageRecord("/x/b.jpg", "b", "\udce9", origin="row 1")
        metadata = metadata_from_records([good, bad])
        assert metadata.table.column("image_id").to_pylist() == ["a"]
        assert [(r.origin, r.text) for r in metadata.rejects] == [("row 1", f"'user_id' {NOT_UNICODE}")]


def typed_rows() -> list[dict]:
    return [
        {"image": "a.jpg", "user_id": 7, "labels": ["cat"]},
        {"image": "b.jpg", "user_id": 7.0, "labels": "cat|dog"},
        {"image": "c.jpg", "user_id": "7", "labels": None},
        {"image": "d.jpg", "user_id": 7.5, "labels": []},
        {"image": "e.jpg", "user_id": True, "labels": []},
        {"image": "f.jpg", "user_id": ["a", "b"], "labels": []},
        {"image": "g.jpg", "user_id": {"id": 1}, "labels": []},
        {"image": "h.jpg", "user_id": "u", "labels": ["a", 5]},
        {"image": "i.jpg", "user_id": "u", "labels": ["a", ["b"]]},
        {"image": "j.jpg", "user_id": "u", "labels": 5},
        {"image": "k.jpg", "user_id": "u", "labels": True},
        {"image": 5, "user_id": "u", "labels": []},
        {"image": "m.jpg", "user_id": "u", "labels": [], "image_id": 12.0},
    ]


TYPED_OUTCOME = [
    ("ok", "7", "cat"),
    ("ok", "7", "cat", "dog"),
    ("ok", "7"),
    ("rejected", 3, f"column 'user_id' holds a number that is not an integer; {NOT_AN_ID}"),
    ("rejected", 4, f"column 'user_id' holds a boolean; {NOT_AN_ID}"),
    ("rejected", 5, f"column 'user_id' holds a list; {NOT_AN_ID}"),
    ("rejected", 6, f"column 'user_id' holds an object; {NOT_AN_ID}"),
    ("rejected", 7, f"column 'labels' holds a list with a number in it; {NOT_A_LABEL}"),
    ("rejected", 8, f"column 'labels' holds a list with a list in it; {NOT_A_LABEL}"),
    ("rejected", 9, f"column 'labels' holds a number; {NOT_LABELS}"),
    ("rejected", 10, f"column 'labels' holds a boolean; {NOT_LABELS}"),
    ("rejected", 11, "column 'image' holds a number, not text"),
    ("ok", "u"),
]


class TestTypedCells:
    @pytest.mark.parametrize("suffix", [".jsonl", ".json"])
    def test_ids_are_text_or_integers_and_labels_are_names(self, tmp_path: Path, suffix: str):
        path = tmp_path / f"m{suffix}"
        rows = typed_rows()
        if suffix == ".jsonl":
            path.write_text("".join(json.dumps(row) + "\n" for row in rows))
            where = [f"m.jsonl line {index + 1}" for index in range(len(rows))]
        else:
            path.write_text(json.dumps(rows))
            where = [f"m.json item {index}" for index in range(len(rows))]
        expected = [
            (kind, where[a], *b) if kind == "rejected" else (kind, a, *b) for kind, a, *b in TYPED_OUTCOME
        ]
        assert outcome(open_source(path)) == expected
        records = [item for item in open_source(path).records() if isinstance(item, ImageRecord)]
        assert records[-1].image_id == "12"

    def test_parquet_columns_of_each_type(self, tmp_path: Path):
        def found(**columns) -> list[tuple[str, ...]]:
            path = tmp_path / "m.parquet"
            count = len(next(iter(columns.values())))
            pq.write_table(pa.table({"image": [f"{i}.jpg" for i in range(count)], **columns}), path)
            return outcome(open_source(path))

        assert found(user_id=[7.0, 7.5, None, float("nan")]) == [
            ("ok", "7"),
            (
                "rejected",
                "m.parquet row 1",
                f"column 'user_id' holds a number that is not an integer; {NOT_AN_ID}",
            ),
            ("ok", ""),
            ("ok", ""),
        ]
        assert found(user_id=[7, 8]) == [("ok", "7"), ("ok", "8")]
        assert found(user_id=[True, None])[0] == (
            "rejected",
            "m.parquet row 0",
            f"column 'user_id' holds a boolean; {NOT_AN_ID}",
        )
        assert found(user_id=["u", "v"], labels=[[1, 2], []]) == [
            (
                "rejected",
                "m.parquet row 0",
                f"column 'labels' holds a list with a number in it; {NOT_A_LABEL}",
            ),
            ("ok", "v"),
        ]

    def test_csv_cells_are_text_as_written(self, tmp_path: Path):
        path = tmp_path / "m.csv"
        path.write_text("image,user_id,labels\na.jpg,7.0,5|6\nb.jpg,7,['a']\n")
        assert outcome(open_source(path)) == [("ok", "7.0", "5", "6"), ("ok", "7", "['a']")]

    def test_flair_fields(self, tmp_path: Path):
        (tmp_path / "small_images").mkdir()
        items = [
            {"user_id": 3.0, "image_id": 4, "labels": ["a"]},
            {"user_id": ["x"], "image_id": "5", "labels": ["a"]},
            {"user_id": "u", "image_id": 6.5, "labels": ["a"]},
            {"user_id": "u", "image_id": "7", "labels": [False]},
            {"user_id": "u", "image_id": "8", "labels": "a", "partition": 1},
        ]
        (tmp_path / "labels_and_metadata.json").write_text(json.dumps(items))
        metadata = open_source(tmp_path, "flair").metadata()
        kept = metadata.table.select(["user_id", "image_id", "split"]).to_pylist()
        assert [tuple(row.values()) for row in kept] == [("3", "4", ""), ("u", "8", "1")]
        assert [(r.origin.rsplit(" ", 1)[1], r.text) for r in metadata.rejects] == [
            ("1", f"field 'user_id' holds a list; {NOT_AN_ID}"),
            ("2", f"field 'image_id' holds a number that is not an integer; {NOT_AN_ID}"),
            ("3", f"field 'labels' holds a list with a boolean in it; {NOT_A_LABEL}"),
        ]

    def test_hugging_face_columns_of_each_type(self, tmp_path: Path):
        image = {"bytes": jpeg_bytes(photo(32, 32)), "path": None}
        image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])

        def metadata(**columns):
            count = len(next(iter(columns.values())))
            table = pa.table({"image": pa.array([image] * count, image_type), **columns})
            pq.write_table(table, tmp_path / "d.parquet")
            return open_source(tmp_path / "d.parquet", "hf").metadata()

        found = metadata(
            user_id=pa.array([7.0, 7.5, None, 8.0]), labels=pa.array([["a"], ["b"], None, [" c "]])
        )
        assert found.table.column("user_id").to_pylist() == ["7", "", "8"]
        assert found.table.column("labels").to_pylist() == [["a"], [], ["c"]]
        assert [(r.origin, r.text) for r in found.rejects] == [
            ("d.parquet row 1", f"column 'user_id' holds a number that is not an integer; {NOT_AN_ID}")
        ]
        found = metadata(user_id=pa.array(["u", "v", "w"]), labels=pa.array([[1], [], None]))
        assert found.table.column("user_id").to_pylist() == ["v", "w"]
        assert [r.text for r in found.rejects] == [
            f"column 'labels' holds a list with a number in it; {NOT_A_LABEL}"
        ]
        found = metadata(user_id=pa.array([True, None]), labels=pa.array([1, None]))
        assert found.table.column("user_id").to_pylist() == [""]
        assert [r.text for r in found.rejects] == [f"column 'user_id' holds a boolean; {NOT_AN_ID}"]
        found = metadata(user_id=pa.array([["a"], None]), labels=pa.array([None, 3]))
        assert [r.text for r in found.rejects] == [
            f"column 'user_id' holds a list; {NOT_AN_ID}",
            f"column 'labels' holds a number; {NOT_LABELS}",
        ]
