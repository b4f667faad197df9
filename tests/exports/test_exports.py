"""Exports in general: destinations, atomicity, determinism, names, reports, the command line.

The small stores the export tests use are made by ``helpers.flair_store`` and ``helpers.odd_store``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from helpers import QUIET, files_of, flair_store

import fedimage
from fedimage import OptionError, StoreError
from fedimage.cli import main
from fedimage.errors import FedimageError
from fedimage.exports import EXPORT_FORMATS, EXPORTERS, Exporter, ExportOptions, export
from fedimage.exports.names import MAX_NAME_LENGTH, NameTable, safe_name
from fedimage.exports.tfrecord_file import _crc32c


@pytest.fixture
def store(flair_folder: Path, tmp_path: Path) -> Path:
    return flair_store(flair_folder, tmp_path / "store.h5")


class TestDestination:
    @pytest.mark.parametrize("to", EXPORT_FORMATS)
    def test_an_existing_destination_needs_overwrite(self, store: Path, tmp_path: Path, to: str):
        dest = tmp_path / "out"
        first = export(store, to, dest, QUIET)
        before = files_of(dest)
        with pytest.raises(StoreError, match="already exists; pass `overwrite`"):
            export(store, to, dest, QUIET)
        assert files_of(dest) == before
        second = export(store, to, dest, ExportOptions(quiet=True, overwrite=True))
        if EXPORTERS[to].reproducible:
            assert files_of(dest) == before
        else:  # client bundles: fresh keys every time
            assert files_of(dest).keys() == before.keys()
        assert (first.users, first.images) == (second.users, second.images) == (6, 14)
        assert not [path for path in tmp_path.iterdir() if path.suffix in (".partial", ".replaced")]

    def test_a_failed_export_leaves_nothing(self, store: Path, tmp_path: Path, monkeypatch):
        def fail_half_way(run, path):
            (path / "written-before-the-failure").write_text("x")
            for _ in run.users("train"):
                raise RuntimeError("disk full")

        monkeypatch.setitem(EXPORTERS, "dirs", Exporter("dirs", fail_half_way, True, "failing"))
        with pytest.raises(RuntimeError, match="disk full"):
            export(store, "dirs", tmp_path / "out", QUIET)
        assert not (tmp_path / "out").exists()
        assert not (tmp_path / "out.partial").exists()

    def test_a_failed_overwrite_keeps_the_old_export(self, store: Path, tmp_path: Path, monkeypatch):
        export(store, "parquet", tmp_path / "out", QUIET)
        before = files_of(tmp_path / "out")

        def fail(run, path):
            raise RuntimeError("interrupted")

        monkeypatch.setitem(EXPORTERS, "parquet", Exporter("parquet", fail, True, "failing"))
        with pytest.raises(RuntimeError):
            export(store, "parquet", tmp_path / "out", ExportOptions(quiet=True, overwrite=True))
        assert files_of(tmp_path / "out") == before

    @pytest.mark.parametrize(
        # destination (relative to the store's folder), error
        ("destination", "error"),
        [
            ("store.h5", "is \\(or holds\\) the store"),
            (".", "is \\(or holds\\) the store"),
            ("no/such/folder/out", "does not exist"),
        ],
    )
    def test_bad_destinations(self, store: Path, destination: str, error: str):
        with pytest.raises((OptionError, StoreError), match=error):
            export(store, "dirs", store.parent / destination, ExportOptions(quiet=True, overwrite=True))

    def test_a_file_is_not_replaced_by_a_folder(self, store: Path, tmp_path: Path):
        (tmp_path / "out").write_text("a file")
        with pytest.raises(StoreError, match="is a file"):
            export(store, "tfrecords", tmp_path / "out", ExportOptions(quiet=True, overwrite=True))
        assert (tmp_path / "out").read_text() == "a file"


class TestOptions:
    def test_unknown_format_lists_the_formats(self, store: Path, tmp_path: Path):
        with pytest.raises(OptionError, match="choose one of: dirs, flair-central, parquet, tfrecords"):
            export(store, "tfrecord", tmp_path / "out")

    @pytest.mark.parametrize("quality", [0, 101])
    def test_quality_range(self, quality: int):
        with pytest.raises(OptionError, match="between 1 and 100"):
            ExportOptions(quality=quality)

    def test_missing_store(self, tmp_path: Path):
        with pytest.raises(StoreError, match="store not found"):
            export(tmp_path / "missing.h5", "dirs", tmp_path / "out")

    def test_a_missing_optional_package_names_the_extra(self, store: Path, tmp_path: Path, monkeypatch):
        _crc32c.cache_clear()
        monkeypatch.setitem(sys.modules, "google_crc32c", None)
        try:
            with pytest.raises(
                FedimageError,
                match=r"'google_crc32c', which is not installed: pip install 'fedimage\[export\]'",
            ):
                export(store, "tfrecords", tmp_path / "out", QUIET)
        finally:
            _crc32c.cache_clear()
        assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("to", [name for name in EXPORT_FORMATS if EXPORTERS[name].reproducible])
@pytest.mark.parametrize("storage", ["jpeg", "raw"])
def test_same_store_same_bytes(flair_folder: Path, tmp_path: Path, to: str, storage: str):
    store = flair_store(flair_folder, tmp_path / "store.h5", storage)
    first = export(store, to, tmp_path / "first", QUIET)
    export(store, to, tmp_path / "second", QUIET)
    assert files_of(tmp_path / "first") == files_of(tmp_path / "second")
    assert first.bytes == sum(len(data) for data in files_of(tmp_path / "first").values())
    assert first.splits == {
        "train": {"users": 4, "images": 10},
        "val": {"users": 1, "images": 2},
        "test": {"users": 1, "images": 2},
    }


def test_report_counts_every_split(store: Path, tmp_path: Path):
    report = export(store, "dirs", tmp_path / "out", QUIET)
    with fedimage.open(store) as opened:
        expected = {
            split: {"users": len(opened.users(split)), "images": opened.num_images(split)}
            for split in opened.splits
        }
    assert report.splits == expected
    assert report.seconds > 0 and report.bytes > 0
    assert f"{report.users} users, {report.images} images" in report.summary()


class TestCommandLine:
    def test_export_prints_a_report(self, store: Path, tmp_path: Path, capsys):
        status = main(["export", str(store), "--to", "parquet", str(tmp_path / "pq"), "--quiet"])
        out = capsys.readouterr().out
        assert status == 0
        assert f"to {tmp_path / 'pq'} (parquet)" in out
        assert "6 users, 14 images" in out
        assert sorted(path.name for path in (tmp_path / "pq").iterdir()) == [
            "test.parquet",
            "train.parquet",
            "val.parquet",
        ]

    def test_errors_are_one_line(self, store: Path, tmp_path: Path, capsys):
        (tmp_path / "out").mkdir()
        status = main(["export", str(store), "--to", "dirs", str(tmp_path / "out"), "--quiet"])
        err = capsys.readouterr().err
        assert status == 2
        assert err.strip().splitlines() == [
            f"error: destination {tmp_path / 'out'} already exists; pass --overwrite to replace it"
        ]


class TestNames:
    # id, portable name
    CASES = [
        ("59769174@N00", "59769174@N00"),
        ("Benji Park", "Benji Park"),
        ("a/b", "a%2Fb"),
        ("50%", "50%25"),
        (".", "%2E"),
        ("..", "%2E%2E"),
        (".hidden", "%2Ehidden"),
        (" padded ", "%20padded%20"),
        ("ünï", "%C3%BCn%C3%AF"),
        ("tab\there", "tab%09here"),
    ]

    @pytest.mark.parametrize(("identifier", "name"), CASES)
    def test_safe_name(self, identifier: str, name: str):
        assert safe_name(identifier) == name

    def test_long_and_empty_ids_get_a_hash(self):
        long_a, long_b = safe_name("x" * 300 + "a"), safe_name("x" * 300 + "b")
        assert len(long_a) == MAX_NAME_LENGTH and long_a != long_b
        assert safe_name("").startswith("~") and len(safe_name("")) > 1

    def test_names_differ_ignoring_case_and_changes_are_recorded(self):
        table = NameTable()
        names = [table.assign(identifier) for identifier in ["UserA", "usera", "a/b", "plain"]]
        assert names[0] == "UserA" and names[1].startswith("usera~")
        assert len({name.casefold() for name in names}) == 4
        assert table.changed == {names[1]: "usera", "a%2Fb": "a/b"}

    def test_the_same_id_twice_is_an_error(self):
        table = NameTable()
        table.assign("same")
        table.assign("SAME")
        with pytest.raises(FedimageError, match="given twice"):
            table.assign("same")
