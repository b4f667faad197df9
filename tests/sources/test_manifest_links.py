"""Image paths are checked with symbolic links resolved: a link out of the folder is rejected (issue 14)."""

from __future__ import annotations

import os
from pathlib import Path

from helpers import fast_options, photo, save_image, write_jsonl

import fedimage
from fedimage import convert, open_source
from fedimage.records import ImageRecord, Reject, read_rejects
from fedimage.store.schema import rejects_path_for

LINK_OUTSIDE = "image path {!r} leads outside the manifest's folder through a symbolic link"


def test_links_that_lead_outside_are_rejected_without_naming_their_target(tmp_path: Path):
    root = tmp_path / "root"
    secret = save_image(tmp_path / "private_place" / "secret.jpg", photo(40, 30, seed=1))
    save_image(root / "inside.jpg", photo(40, 30, seed=2))
    (root / "link.jpg").symlink_to(secret)
    (root / "folder").symlink_to(secret.parent, target_is_directory=True)
    (root / "alias.jpg").symlink_to(root / "inside.jpg")  # a link that stays inside: fine
    (root / "sub").mkdir()
    (root / "sub" / "up.jpg").symlink_to("../../private_place/secret.jpg")
    rows = [
        {"image": "link.jpg", "user_id": "u"},
        {"image": "folder/secret.jpg", "user_id": "u"},
        {"image": "inside.jpg", "user_id": "u"},
        {"image": "alias.jpg", "user_id": "v"},
        {"image": "sub/up.jpg", "user_id": "u"},
    ]
    manifest = write_jsonl(root / "m.jsonl", rows)
    found = list(open_source(manifest).records())
    assert [item.text if isinstance(item, Reject) else item.path for item in found] == [
        LINK_OUTSIDE.format("link.jpg"),
        LINK_OUTSIDE.format("folder/secret.jpg"),
        str(root / "inside.jpg"),
        str(root / "alias.jpg"),
        LINK_OUTSIDE.format("sub/up.jpg"),
    ]
    report = convert(open_source(manifest), tmp_path / "out.h5", fast_options())
    assert (report.inputs, report.written, len(report.rejects)) == (5, 2, 3)
    text = Path(rejects_path_for(str(report.output))).read_text()
    assert "private_place" not in text and "secret.jpg" in text  # the row's own path, never the target
    with fedimage.open(report.output) as store:
        ids = {i for s in store.splits for u in store.users(s) for i in store.load_user(s, u).image_ids}
    assert ids == {"inside.jpg", "alias.jpg"}


def test_a_source_folder_reached_through_a_link_is_still_inside(tmp_path: Path):
    real = tmp_path / "real"
    save_image(real / "images" / "a.jpg", photo(40, 30))
    write_jsonl(real / "m.jsonl", [{"image": "images/a.jpg", "user_id": "u"}])
    (tmp_path / "linked").symlink_to(real, target_is_directory=True)
    (record,) = open_source(tmp_path / "linked" / "m.jsonl").records()
    assert isinstance(record, ImageRecord) and record.path == str(tmp_path / "linked" / "images" / "a.jpg")


def test_flair_images_that_are_links_out_of_the_folder(flair_folder: Path, tmp_path: Path):
    secret = save_image(tmp_path / "private_place" / "secret.jpg", photo(256, 256))
    image = flair_folder / "small_images" / "1000.jpg"
    image.unlink()
    image.symlink_to(secret)
    metadata = open_source(flair_folder).metadata()
    assert metadata.table.num_rows == 13
    (reject,) = metadata.rejects
    assert reject.origin == "labels_and_metadata.json item 0"
    assert reject.text == LINK_OUTSIDE.format("small_images/1000.jpg")


def test_a_flair_image_folder_that_is_a_link_out_of_the_folder(flair_folder: Path, tmp_path: Path):
    moved = tmp_path / "elsewhere"
    os.rename(flair_folder / "small_images", moved)
    (flair_folder / "small_images").symlink_to(moved, target_is_directory=True)
    report = convert(open_source(flair_folder), tmp_path / "out.h5", fast_options())
    assert (report.inputs, report.written, len(report.rejects)) == (14, 0, 14)
    rows = read_rejects(Path(rejects_path_for(str(report.output))))
    assert rows[0]["reason"] == LINK_OUTSIDE.format("small_images/1000.jpg")
