"""The Python API does every CLI command's job (``import fedimage``), with errors naming parameters."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import pytest
from helpers import fast_options

import fedimage
from fedimage.errors import OptionError
from fedimage.exports import ExportOptions

QUIET = ExportOptions(quiet=True)


@pytest.fixture
def store(user_folder: Path, tmp_path: Path) -> Path:
    output = tmp_path / "store.h5"
    fedimage.convert(fedimage.open_source(user_folder, layout="user"), output, fast_options())
    return output


def test_convert_takes_a_path_and_applies_a_flair_folders_taxonomy(flair_folder: Path, tmp_path: Path):
    report = fedimage.convert(flair_folder, tmp_path / "flair.h5", fast_options())
    assert report.written > 0 and report.inputs == report.written + report.rejected
    with fedimage.open(tmp_path / "flair.h5") as opened:
        assert opened.taxonomy  # label_relationship.txt, as the CLI applies it
        with h5py.File(tmp_path / "flair.h5") as raw:
            assert json.loads(raw["metadata/label_relationship"][()]) == opened.taxonomy


def test_convert_sample_is_the_demo(tmp_path: Path):
    report = fedimage.convert_sample(tmp_path / "demo" / "sample.h5", workers=1, quiet=True)
    assert report.written == 300 and report.rejected == 0
    assert fedimage.verify_store(report.output).ok


def test_open_verify_summarize(store: Path):
    with fedimage.open(store) as opened:
        assert sum(len(opened.users(split)) for split in opened.splits) > 0
    assert fedimage.verify_store(store, decode=True).ok
    summary = fedimage.summarize(store)
    assert summary == fedimage.summarize(fedimage.open(store))
    assert summary["counts"]["written"] == sum(info["images"] for info in summary["splits"].values())


def test_export(store: Path, tmp_path: Path):
    report = fedimage.export(store, "dirs", tmp_path / "dirs", QUIET)
    assert report.destination == tmp_path / "dirs" and (tmp_path / "dirs").is_dir()


def test_export_of_an_encrypted_store_takes_its_key(user_folder: Path, tmp_path: Path):
    key = fedimage.keygen(tmp_path / "store.key")
    output = tmp_path / "sealed.h5"
    source = fedimage.open_source(user_folder, layout="user")
    fedimage.convert(source, output, fast_options(encrypt_key=key))
    with pytest.raises(fedimage.StoreError, match="`key=KEYFILE`"):
        fedimage.summarize(output)
    assert fedimage.summarize(output, key=key)["counts"]["written"] > 0
    fedimage.export(output, "dirs", tmp_path / "dirs", QUIET, key=key)
    assert any((tmp_path / "dirs").rglob("*.jpg"))


def test_keygen_writes_a_private_key(tmp_path: Path):
    path = fedimage.keygen(tmp_path / "k.key")
    assert path.stat().st_mode & 0o777 == 0o600 and len(path.read_text().strip()) == 64


def test_heterogeneity_report(store: Path, tmp_path: Path):
    pytest.importorskip("matplotlib")
    files = fedimage.heterogeneity_report([store], tmp_path / "report")
    assert files.html.exists() and files.stats.exists()


def test_train_is_offered_lazily():
    pytest.importorskip("torch")
    assert fedimage.TrainOptions().rounds == 5000
    assert callable(fedimage.train)
    with pytest.raises(AttributeError):
        fedimage.no_such_command  # noqa: B018


@pytest.mark.parametrize(
    ("make", "parameter"),
    [
        (lambda: fedimage.ConvertOptions(workers=0), "`workers`"),
        (lambda: fedimage.ImageOptions(size=2), "`size`"),
        (lambda: fedimage.PlanOptions(group_size=0), "`group_size`"),
        (lambda: fedimage.ConvertOptions(executor="spark"), "`executor`"),
        (lambda: fedimage.SplitRatios.parse("0.5,0.6,0.1"), "`split`"),
    ],
)
def test_api_errors_name_parameters_never_flags(make, parameter: str):
    with pytest.raises(OptionError) as error:
        make()
    assert parameter in str(error.value) and "--" not in str(error.value)
