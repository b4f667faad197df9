"""Folder sources follow links to folders, each folder once, and account for every entry (issue 14)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import fast_options, photo, save_image

from fedimage import convert, open_source
from fedimage.records import ImageRecord, Reject, read_rejects
from fedimage.sources.folder import LINK_LOOP, NOT_UTF8, READ_ALREADY
from fedimage.store.schema import rejects_path_for


def images(folder: Path, count: int, seed: int = 0) -> Path:
    for index in range(count):
        save_image(folder / f"img{index}.jpg", photo(40, 30, seed=seed + index))
    return folder


def split(found: list) -> tuple[list[ImageRecord], list[Reject]]:
    return [r for r in found if isinstance(r, ImageRecord)], [r for r in found if isinstance(r, Reject)]


def test_a_linked_user_folder_is_read_and_counted(tmp_path: Path):
    root = tmp_path / "root"
    images(root / "alice", 1)
    (root / "bob").symlink_to(images(tmp_path / "elsewhere" / "bob", 3, seed=5), target_is_directory=True)
    records, rejects = split(list(open_source(root, layout="user").records()))
    assert not rejects
    assert [(r.user_id, r.image_id) for r in records] == [
        ("alice", "alice/img0.jpg"),
        ("bob", "bob/img0.jpg"),
        ("bob", "bob/img1.jpg"),
        ("bob", "bob/img2.jpg"),
    ]
    report = convert(open_source(root, layout="user"), tmp_path / "out.h5", fast_options())
    assert (report.inputs, report.written, len(report.rejects)) == (4, 4, 0)


def test_a_link_back_to_a_folder_that_holds_it_is_one_rejection(tmp_path: Path):
    root = tmp_path / "root"
    images(root / "alice", 2)
    (root / "alice" / "again").symlink_to(root / "alice", target_is_directory=True)
    (root / "alice" / "top").symlink_to(root, target_is_directory=True)
    (root / "up").symlink_to(tmp_path, target_is_directory=True)  # holds the source folder itself
    records, rejects = split(list(open_source(root, layout="user").records()))
    assert [r.image_id for r in records] == ["alice/img0.jpg", "alice/img1.jpg"]
    assert [(r.origin, r.reason, r.user_id) for r in rejects] == [
        ("alice/again", LINK_LOOP, "alice"),
        ("alice/top", LINK_LOOP, "alice"),
        ("up", LINK_LOOP, "up"),
    ]
    report = convert(open_source(root, layout="user"), tmp_path / "out.h5", fast_options())
    assert (report.inputs, report.written, len(report.rejects)) == (5, 2, 3)
    reasons = {
        row["origin"]: row["reason"] for row in read_rejects(Path(rejects_path_for(str(report.output))))
    }
    assert reasons["up"] == "folder link leads back to a folder that holds it (a loop); not followed"


def test_a_folder_reached_twice_is_read_once(tmp_path: Path):
    root = tmp_path / "root"
    images(root / "zed", 2)
    (root / "aaa").symlink_to(root / "zed", target_is_directory=True)  # the real folder wins
    shared = images(tmp_path / "elsewhere" / "shared", 1, seed=9)
    (root / "bob").symlink_to(shared, target_is_directory=True)  # the first link in path order wins
    (root / "carol").symlink_to(shared, target_is_directory=True)
    records, rejects = split(list(open_source(root, layout="user").records()))
    assert [r.image_id for r in records] == ["bob/img0.jpg", "zed/img0.jpg", "zed/img1.jpg"]
    assert [(r.origin, r.reason) for r in rejects] == [("aaa", READ_ALREADY), ("carol", READ_ALREADY)]


def test_links_inside_a_linked_folder_are_followed_once(tmp_path: Path):
    root = tmp_path / "root"
    images(root / "alice", 1)
    outside = images(tmp_path / "outside" / "bob", 1, seed=3)
    images(outside / "holiday", 1, seed=4)
    (outside / "loop").symlink_to(outside, target_is_directory=True)
    (outside / "home").symlink_to(root / "alice", target_is_directory=True)
    (root / "bob").symlink_to(outside, target_is_directory=True)
    records, rejects = split(list(open_source(root, layout="user").records()))
    assert [r.image_id for r in records] == ["alice/img0.jpg", "bob/holiday/img0.jpg", "bob/img0.jpg"]
    assert [(r.origin, r.reason) for r in rejects] == [("bob/home", READ_ALREADY), ("bob/loop", LINK_LOOP)]


def test_a_dangling_link_is_a_file_that_is_not_found(tmp_path: Path):
    root = tmp_path / "root"
    images(root / "alice", 1)
    (root / "alice" / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    report = convert(open_source(root, layout="user"), tmp_path / "out.h5", fast_options())
    assert (report.inputs, report.written) == (2, 1)
    assert [r.text for r in report.rejects] == ["file not found"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every folder")
def test_a_folder_that_cannot_be_read_is_rejected(tmp_path: Path):
    root = tmp_path / "root"
    images(root / "alice", 1)
    locked = images(root / "bob", 2)
    locked.chmod(0)
    try:
        records, rejects = split(list(open_source(root, layout="user").records()))
    finally:
        locked.chmod(0o755)
    assert [r.image_id for r in records] == ["alice/img0.jpg"]
    assert [(r.origin, r.text) for r in rejects] == [("bob", "folder cannot be read: Permission denied")]


def test_a_file_name_that_is_not_utf8_is_rejected_not_a_crash(tmp_path: Path):
    root = tmp_path / "root"
    images(root / "alice", 1)
    try:
        with open(os.path.join(os.fsencode(root / "alice"), b"caf\xe9.jpg"), "wb") as handle:
            handle.write(b"x")
    except OSError:
        pytest.skip("this file system refuses names that are not UTF-8")
    report = convert(open_source(root, layout="user"), tmp_path / "out.h5", fast_options())
    assert (report.inputs, report.written, len(report.rejects)) == (2, 1, 1)
    (row,) = read_rejects(Path(rejects_path_for(str(report.output))))
    assert row["reason"] == NOT_UTF8 and row["origin"] == "alice/caf\\udce9.jpg"
