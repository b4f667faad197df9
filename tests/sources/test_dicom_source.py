"""DICOM in (a PACS export folder, or a manifest naming .dcm files), identifiers never out."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

pytest.importorskip("pydicom")

from dicom_helpers import (
    PLANTED,
    burned_in_dicom,
    multiframe_dicom,
    no_pixels_dicom,
    site_identifiers,
    truncated_dicom,
    write,
    write_labels_csv,
    write_site,
)
from helpers import fast_options

import fedimage
from fedimage import PartitionOptions, PlanOptions, SplitRatios, convert
from fedimage.cli import main
from fedimage.conversion.metadata import MetadataOptions
from fedimage.errors import OptionError
from fedimage.privacy.pseudonyms import Pseudonymizer
from fedimage.records import read_rejects
from fedimage.sources import detect_source_format, open_source

KEY = bytes(range(32))
SITES = ("north", "south")


@pytest.fixture
def pacs(tmp_path: Path) -> tuple[Path, list]:
    """Two sites' files under one export folder, plus the files every site export has that are not images."""
    root = tmp_path / "pacs"
    images = []
    for number, site in enumerate(SITES):
        images += write_site(root / site, f"Site {site}", patients=3, images_per_patient=2, seed=number)
    write(root / "north" / "other" / "X1.dcm", truncated_dicom())
    write(root / "north" / "other" / "X2.dcm", no_pixels_dicom())
    write(root / "north" / "other" / "X3.dcm", burned_in_dicom())
    (root / "north" / "notes.txt").write_text("PLANTED-PID-7730419 was seen on Tuesday")
    return root, images


def scan(paths: list[Path], forbidden: list[str]) -> list[tuple[str, str]]:
    """(file, planted string) for every planted string found in the bytes of ``paths`` (recursively)."""
    found = []
    for path in paths:
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for file in files:
            data = file.read_bytes()
            found += [(str(file), text) for text in forbidden if text.encode() in data]
    return found


def test_a_pacs_export_converts_with_pseudonyms_and_no_identifier_reaches_any_output(pacs, tmp_path, capsys):
    root, images = pacs
    assert detect_source_format(root) == "dicom"
    key_file = tmp_path / "site.key"
    assert main(["keygen", str(key_file)]) == 0
    output = tmp_path / "store.h5"
    status = main(
        [
            "convert", str(root), "-o", str(output), "--pseudonymize-key", str(key_file),
            "--label-tag", "Modality", "--keep-tags", "Modality,BodyPartExamined,InstitutionName",
            "--pseudonymize-columns", "InstitutionName", "--size", "32", "--workers", "1", "--split", "1,0,0",
        ]
    )  # fmt: skip
    logs = capsys.readouterr()
    assert status == 0, logs.err
    rejects = read_rejects(Path(str(output).replace(".h5", ".rejects.jsonl")))
    reasons = [reject["reason"] for reject in rejects]
    assert sorted(reject["reason"] for reject in rejects) == sorted(
        [
            "DICOM pixel data is truncated or cannot be decoded",
            "DICOM file has no pixel data",
            "DICOM file flags burned-in annotation (BurnedInAnnotation YES): text on the image may identify"
            " the patient; pass `allow_burned_in` to keep it",
            "not a readable DICOM file",
        ]
    ), reasons
    with fedimage.open(output) as store:
        assert store.num_images() == len(images)
        users = list(store.users("train"))
        assert len(users) == 6 and all(len(user) == 32 for user in users)
        data = store.load_user("train", users[0])
        assert set(data.metadata) == {"Modality", "BodyPartExamined", "InstitutionName"}
        assert data.metadata["BodyPartExamined"][0] == "CHEST"
        assert (
            len(set(data.metadata["InstitutionName"])) == 1 and len(data.metadata["InstitutionName"][0]) == 32
        )
        assert data.labels.sum(axis=1).tolist() == [1.0] * len(data)  # the modality
    fedimage.export(output, "parquet", tmp_path / "parquet")
    fedimage.export(output, "dirs", tmp_path / "dirs")
    fedimage.make_kits(output, tmp_path / "kits", "127.0.0.1:9092", quiet=True)
    (tmp_path / "logs.txt").write_text(logs.out + logs.err)
    forbidden = [*PLANTED, *site_identifiers(images), "Site north", "Site south", "study000", "IM0000"]
    outputs = [output, output.with_name("store.rejects.jsonl"), tmp_path / "parquet", tmp_path / "dirs"]
    outputs.append(tmp_path / "kits")
    assert scan([*outputs, tmp_path / "logs.txt"], forbidden) == []


def test_identifiers_in_the_clear_are_refused_unless_allowed(pacs, tmp_path):
    root, images = pacs
    with pytest.raises(OptionError, match=r"user ids and file paths identify patients: pass a pseudonym key"):
        convert(root, tmp_path / "a.h5", fast_options())
    pseudonyms = Pseudonymizer(KEY)
    with pytest.raises(OptionError, match=r"InstitutionName identifies people .*PS3\.15 Annex E"):
        convert(
            root,
            tmp_path / "b.h5",
            fast_options(pseudonyms=pseudonyms, metadata=MetadataOptions(keep_columns="InstitutionName")),
        )
    source = open_source(root, label_tag="PatientName")
    with pytest.raises(OptionError, match="labels from PatientName would identify people"):
        convert(source, tmp_path / "c.h5", fast_options(pseudonyms=pseudonyms))
    report = convert(root, tmp_path / "d.h5", fast_options(allow_identifiers=True))
    with fedimage.open(tmp_path / "d.h5") as store:  # de-identified data: ids kept as they are
        assert any(user.startswith("PLANTED-Site") for split in store.splits for user in store.users(split))
    assert report.written == len(images)


def test_one_client_per_site_named_by_its_pseudonym(pacs, tmp_path):
    root, images = pacs
    partition = PartitionOptions("column", key="InstitutionName")
    options = fast_options(
        plan=PlanOptions(partition=partition, split_level="image", split=SplitRatios.parse("0.5,0.5,0")),
        pseudonyms=Pseudonymizer(KEY),
        metadata=MetadataOptions(pseudonymize_columns="InstitutionName"),
    )
    convert(root, tmp_path / "sites.h5", options)
    expected = Pseudonymizer(KEY).array(pa.array([f"Site {site}" for site in SITES]), "value").to_pylist()
    with fedimage.open(tmp_path / "sites.h5") as store:
        assert sorted(store.users("train")) == sorted(expected)
        assert store.num_images() == len(images)
    assert scan([tmp_path / "sites.h5"], ["Site north", "Site south", *site_identifiers(images)]) == []


def test_every_frame_of_a_multi_frame_file_and_windows(tmp_path):
    root = tmp_path / "mf"
    write(root / "series" / "cine.dcm", multiframe_dicom())
    options = fast_options(pseudonyms=Pseudonymizer(KEY))
    convert(open_source(root, dicom_frames="all"), tmp_path / "all.h5", options)
    with fedimage.open(tmp_path / "all.h5") as store:
        assert store.num_images() == 3
    expected = {Pseudonymizer(KEY).image(f"series/cine.dcm#{frame}") for frame in range(3)}
    with fedimage.open(tmp_path / "all.h5") as store:
        ids = {image_id for split in store.splits for user in store.users(split)
               for image_id in store.load_user(split, user).image_ids}  # fmt: skip
    assert ids == expected
    for frames, want in (("first", 0), ("middle", 1)):
        image = fedimage.ImageOptions(size=64, storage="raw", color="gray", dicom_frames=frames)
        convert(
            open_source(root),
            tmp_path / f"{frames}.h5",
            fast_options(image=image, pseudonyms=Pseudonymizer(KEY)),
        )
        with fedimage.open(tmp_path / f"{frames}.h5") as store:
            split = store.splits[0]
            pixels = store.load_user(split, next(iter(store.users(split)))).images[0, :, :, 0]
        from fedimage.imaging.dicom import read_dicom

        assert np.array_equal(pixels, read_dicom((root / "series" / "cine.dcm").read_bytes(), want).display)


def test_a_manifest_naming_dicom_files_with_a_label_table(tmp_path):
    root = tmp_path / "site"
    images = write_site(root, "Site east", patients=2, images_per_patient=3)
    manifest = root / "labels.csv"
    with open(manifest, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "patient", "finding"])
        for image in images:
            writer.writerow([image.relative, image.patient_id, image.finding or ""])
    source = open_source(
        manifest, columns=fedimage.ManifestColumns(image="path", user="patient", labels="finding")
    )
    options = fast_options(pseudonyms=Pseudonymizer(KEY), pseudonymize_image_ids=True)
    report = convert(source, tmp_path / "m.h5", options)
    assert report.written == 6 and report.rejected == 0
    with fedimage.open(tmp_path / "m.h5") as store:
        labels = {label for label, count in store.read_metadata("label_counter").items() if count}
    assert labels == {image.finding for image in images if image.finding}
    assert scan([tmp_path / "m.h5", report.rejects_path], [*PLANTED, *site_identifiers(images)]) == []


def test_flags_parse_and_errors_are_one_line(pacs, tmp_path, capsys):
    root, _ = pacs
    status = main(["convert", str(root), "-o", str(tmp_path / "x.h5"), "--quiet"])
    err = capsys.readouterr().err
    assert status != 0 and "--pseudonymize-key" in err and "--allow-identifiers" in err
    assert len(err.strip().splitlines()) == 1
    status = main(["convert", str(root), "-o", str(tmp_path / "y.h5"), "--user-tag", "NotATag", "--quiet"])
    assert status != 0 and "'NotATag' is not a DICOM attribute keyword" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["convert", str(root), "-o", str(tmp_path / "z.h5"), "--dicom-window", "40", "--quiet"])
    assert "CENTER,WIDTH" in capsys.readouterr().err


@pytest.mark.parametrize("key", ["path", "sop"])
def test_labels_from_a_table_joined_on_the_path_or_the_sop_instance_uid(tmp_path, key):
    root = tmp_path / "site"
    images = write_site(root, "Site west", patients=2, images_per_patient=4, seed=3)
    table = write_labels_csv(root / "findings.csv", images, key=key)  # inside the folder: not an input
    with open(table, "a", newline="") as handle:  # a row naming no file
        csv.writer(handle).writerow(["study999/IM0000.dcm" if key == "path" else "2.25.1.2.3", "normal"])
    source = open_source(root, label_table=table)
    report = convert(source, tmp_path / "t.h5", fast_options(pseudonyms=Pseudonymizer(KEY)))
    assert report.written == len(images) and report.rejected == 0
    assert source.ignored == {"label table": 1, "label table rows matching no DICOM file": 1}
    expected = sorted(image.finding for image in images if image.finding)
    with fedimage.open(tmp_path / "t.h5") as store:
        found = sorted(
            store.label_names[index]
            for split in store.splits
            for user in store.users(split)
            for row in store.load_user(split, user).labels
            for index in np.flatnonzero(row)
        )
    assert found == expected
    with pytest.raises(OptionError, match="not both"):
        open_source(root, label_table=table, label_tag="Modality")


def test_a_manifest_row_naming_a_multi_frame_file_gives_every_frame(tmp_path):
    root = tmp_path / "m"
    write(root / "cine.dcm", multiframe_dicom())
    write(root / "single.dcm", truncated_dicom(keep=1.0))
    manifest = root / "m.csv"
    manifest.write_text("image,user_id\ncine.dcm,p1\nsingle.dcm,p1\n")
    image = fedimage.ImageOptions(size=32, storage="raw", color="gray", dicom_frames="all")
    report = convert(manifest, tmp_path / "all.h5", fast_options(image=image))
    assert report.written == 4 and report.rejected == 0
    with fedimage.open(tmp_path / "all.h5") as store:
        ids = sorted(i for split in store.splits for user in store.users(split)
                     for i in store.load_user(split, user).image_ids)  # fmt: skip
    assert ids == ["cine.dcm#0", "cine.dcm#1", "cine.dcm#2", "single.dcm"]
