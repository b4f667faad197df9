"""End-to-end conversion: accounting of every input, options, determinism, atomic writes."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import h5py
import numpy as np
import pytest
from helpers import fast_options, jpeg_bytes, photo, save_image, write_jsonl
from PIL import Image

import fedimage
from fedimage import ImageOptions, PartitionOptions, PlanOptions, SplitRatios, convert, open_source
from fedimage.conversion import shard as shard_writing
from fedimage.conversion.executors import local as local_executor
from fedimage.errors import StoreError
from fedimage.labels import Taxonomy
from fedimage.records import read_rejects
from fedimage.store import writer as writer_module


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def bad_input_collection(root: Path) -> Path:
    """A manifest with one example of every bad-input class next to good images."""
    images = root / "images"
    for index in range(6):
        save_image(images / f"good{index}.jpg", photo(90, 70, seed=index))
    (images / "empty.jpg").write_bytes(b"")
    (images / "text.jpg").write_text("not an image")
    (images / "truncated.jpg").write_bytes(jpeg_bytes(photo(300, 300))[:2500])
    save_image(images / "bomb.png", Image.new("L", (3000, 3000)))
    (root / "secret.jpg").parent.mkdir(parents=True, exist_ok=True)
    rows = [
        {
            "image": f"images/good{i}.jpg",
            "user_id": f"u{i % 3}",
            "labels": ["cat"],
            "fine_grained_labels": ["tabby"],
        }
        for i in range(6)
    ]
    rows += [
        {"image": "images/empty.jpg", "user_id": "u0", "image_id": "empty"},
        {"image": "images/text.jpg", "user_id": "u0", "image_id": "text"},
        {"image": "images/truncated.jpg", "user_id": "u1"},
        {"image": "images/bomb.png", "user_id": "u1"},
        {"image": "images/missing.jpg", "user_id": "u1"},
        {"image": "../secret.jpg", "user_id": "u2"},
        {"image": "images/good0.jpg", "user_id": "u2"},  # duplicate image id
        {"image": "images/good1.jpg", "user_id": "", "image_id": "no-user"},
        {"image": "images/good2.jpg", "user_id": "u2", "image_id": "x", "fine_grained_labels": ["unicorn"]},
    ]
    path = write_jsonl(root / "manifest.jsonl", rows)
    with open(path, "a") as handle:
        handle.write("{not json\n")
    return path


class TestEveryInputIsAccountedFor:
    EXPECTED_REASONS = {
        "empty": "empty file",
        "text": "not an image file",
        "images/truncated.jpg": "truncated image data",
        "images/bomb.png": "decompression bomb",
        "images/missing.jpg": "file not found",
        "../secret.jpg": "lies outside the manifest's folder",
        "images/good0.jpg": "duplicate image id",
        "no-user": "row has no user id",
        "x": "fine label 'unicorn' is not in the taxonomy",
    }

    def test_rejects_report(self, tmp_path: Path):
        manifest = bad_input_collection(tmp_path / "src")
        options = fast_options(image=ImageOptions(size=32, max_pixels=4_000_000))
        taxonomy = Taxonomy({"tabby": "cat"})
        report = convert(open_source(manifest), tmp_path / "out.h5", options, taxonomy=taxonomy)
        assert report.inputs == 16
        assert report.written == 6
        assert report.written + report.rejected == report.inputs
        rows = read_rejects(tmp_path / "out.rejects.jsonl")
        assert len(rows) == 10
        by_id = {row.get("image_id"): row for row in rows}
        for image_id, reason in self.EXPECTED_REASONS.items():
            assert reason in by_id[image_id]["reason"], image_id
            assert "origin" in by_id[image_id]
        invalid_json = [row for row in rows if "image_id" not in row]
        assert invalid_json[0]["reason"].startswith("invalid JSON") and "line 16" in invalid_json[0]["origin"]
        with fedimage.open(tmp_path / "out.h5") as store:
            counts = store.manifest["counts"]
            assert (counts["inputs"], counts["written"], counts["rejected"]) == (16, 6, 10)
        assert fedimage.verify_store(tmp_path / "out.h5").ok

    def test_users_with_only_bad_images_are_not_written(self, tmp_path: Path):
        save_image(tmp_path / "good.jpg", photo(40, 40))
        (tmp_path / "bad.jpg").write_bytes(b"junk")
        manifest = write_jsonl(
            tmp_path / "m.jsonl",
            [{"image": "good.jpg", "user_id": "a"}, {"image": "bad.jpg", "user_id": "b"}],
        )
        options = fast_options(plan=PlanOptions(split=SplitRatios(("train",), (1.0,))))
        report = convert(open_source(manifest), tmp_path / "out.h5", options)
        assert report.splits == {"train": {"users": 1, "images": 1}}
        with fedimage.open(tmp_path / "out.h5") as store:
            assert store.users("train") == {"a": 1}


class TestOptions:
    def test_split_by_user_with_seed(self, user_folder: Path, tmp_path: Path):
        report = convert(open_source(user_folder, layout="user"), tmp_path / "out.h5", fast_options())
        with fedimage.open(tmp_path / "out.h5") as store:
            users = [user for split in store.splits for user in store.users(split)]
            assert len(users) == len(set(users)) == 5  # no user crosses splits
            assert sum(info["users"] for info in report.splits.values()) == 5
            assert store.splits == ["train", "val", "test"]

    def test_partition_column_is_kept(self, flair_folder: Path, tmp_path: Path):
        convert(open_source(flair_folder), tmp_path / "out.h5", fast_options())
        metadata = json.loads((flair_folder / "labels_and_metadata.json").read_text())
        expected = {(row["partition"], row["user_id"]) for row in metadata}
        with fedimage.open(tmp_path / "out.h5") as store:
            assert {(split, user) for split in store.splits for user in store.users(split)} == expected

    def test_max_images_per_user(self, user_folder: Path, tmp_path: Path):
        options = fast_options(plan=PlanOptions(max_images_per_user=2, seed=5))
        report = convert(open_source(user_folder, layout="user"), tmp_path / "out.h5", options)
        assert report.written == 1 + 2 * 4
        capped = [row for row in read_rejects(tmp_path / "out.rejects.jsonl") if row["stage"] == "cap"]
        assert len(capped) == 15 - 9 and "over the cap of 2 images per user" in capped[0]["reason"]
        report_again = convert(open_source(user_folder, layout="user"), tmp_path / "again.h5", options)
        assert digest(tmp_path / "out.h5") == digest(tmp_path / "again.h5")
        assert report_again.written == report.written

    def test_fine_labels_derive_coarse_labels(self, tmp_path: Path):
        save_image(tmp_path / "a.png", photo(40, 40))
        manifest = write_jsonl(
            tmp_path / "m.jsonl", [{"image": "a.png", "user_id": "u", "fine": "rose|tabby"}]
        )
        taxonomy = Taxonomy({"rose": "plant", "tabby": "animal", "oak": "plant"})
        source = open_source(manifest, columns=fedimage.ManifestColumns(fine_labels="fine"))
        convert(
            source,
            tmp_path / "out.h5",
            fast_options(plan=PlanOptions(split=SplitRatios(("train",), (1.0,)))),
            taxonomy=taxonomy,
        )
        with fedimage.open(tmp_path / "out.h5") as store:
            assert store.label_names == ["animal", "plant"]
            assert store.fine_label_names == ["oak", "rose", "tabby"]
            assert store.taxonomy == {"oak": "plant", "rose": "plant", "tabby": "animal"}
            user = store.load_user("train", "u")
            assert user.labels.tolist() == [[1.0, 1.0]] and user.fine_labels.tolist() == [[0.0, 1.0, 1.0]]

    def test_class_folders_are_dealt_into_iid_clients(self, tmp_path: Path):
        for label in ("cat", "dog"):
            for index in range(10):
                save_image(tmp_path / "src" / label / f"{index}.png", photo(30, 30, seed=index))
        options = fast_options(
            plan=PlanOptions(
                partition=PartitionOptions("iid", num_clients=4), split=SplitRatios(("train",), (1.0,))
            )
        )
        convert(open_source(tmp_path / "src", layout="class"), tmp_path / "out.h5", options)
        with fedimage.open(tmp_path / "out.h5") as store:
            assert store.users("train") == {"client_0": 5, "client_1": 5, "client_2": 5, "client_3": 5}
            assert store.manifest["users_assigned"] is True
            labels = np.concatenate([user.labels for user in store.iter_users("train")])
            assert labels.sum(axis=0).tolist() == [10.0, 10.0]


class TestDeterminism:
    def test_workers_and_repeats_give_identical_bytes(self, user_folder: Path, tmp_path: Path):
        source = open_source(user_folder, layout="user")
        convert(source, tmp_path / "one.h5", fast_options(workers=1))
        convert(source, tmp_path / "two.h5", fast_options(workers=2))
        convert(source, tmp_path / "again.h5", fast_options(workers=1))
        assert digest(tmp_path / "one.h5") == digest(tmp_path / "two.h5") == digest(tmp_path / "again.h5")

    def test_large_users_spread_in_batches_give_identical_bytes(
        self, user_folder: Path, tmp_path: Path, monkeypatch
    ):
        source = open_source(user_folder, layout="user")
        convert(source, tmp_path / "whole.h5", fast_options(workers=1))
        monkeypatch.setattr(shard_writing, "LARGE_USER_IMAGES", 3)  # users 2, 3 and 4 are "large"
        monkeypatch.setattr(shard_writing, "BATCH_SIZE", 2)
        batched = []
        original = shard_writing.image_batches
        monkeypatch.setattr(
            shard_writing, "image_batches", lambda *args: batched.append(args[2]) or original(*args)
        )
        convert(source, tmp_path / "spread.h5", fast_options(workers=2))
        assert batched  # the large users' shards went out in batches
        assert digest(tmp_path / "whole.h5") == digest(tmp_path / "spread.h5")

    def test_a_raw_store_keeps_large_users_shards_whole(self, user_folder: Path, tmp_path: Path, monkeypatch):
        # decoded pixels would cross between processes: the shard goes to one worker whole
        source = open_source(user_folder, layout="user")
        raw = ImageOptions(size=32, storage="raw")
        convert(source, tmp_path / "whole.h5", fast_options(image=raw, workers=1))
        monkeypatch.setattr(shard_writing, "LARGE_USER_IMAGES", 3)
        batched = []
        original = shard_writing.image_batches
        monkeypatch.setattr(
            shard_writing, "image_batches", lambda *args: batched.append(args[2]) or original(*args)
        )
        convert(source, tmp_path / "two.h5", fast_options(image=raw, workers=2))
        assert batched == []
        assert digest(tmp_path / "whole.h5") == digest(tmp_path / "two.h5")

    @pytest.mark.parametrize("size", [32, 64])  # 64 px: whole pages, written past the page cache
    def test_raw_mode_is_deterministic_too(self, user_folder: Path, tmp_path: Path, size: int):
        image = ImageOptions(size=size, storage="raw")
        source = open_source(user_folder, layout="user")
        convert(source, tmp_path / "a.h5", fast_options(image=image, workers=1))
        convert(source, tmp_path / "b.h5", fast_options(image=image, workers=2))
        assert digest(tmp_path / "a.h5") == digest(tmp_path / "b.h5")
        assert (tmp_path / "a.h5").read_bytes() == (tmp_path / "b.h5").read_bytes()

    def test_manifest_row_order_does_not_matter(self, tmp_path: Path):
        rows = []
        for index in range(12):
            save_image(tmp_path / f"{index}.png", photo(30, 30, seed=index))
            rows.append({"image": f"{index}.png", "user_id": f"u{index % 4}", "labels": [f"l{index % 3}"]})
        forward = write_jsonl(tmp_path / "forward.jsonl", rows)
        backward = write_jsonl(tmp_path / "backward.jsonl", list(reversed(rows)))
        convert(open_source(forward), tmp_path / "f.h5", fast_options())
        convert(open_source(backward), tmp_path / "b.h5", fast_options())
        with h5py.File(tmp_path / "f.h5") as f, h5py.File(tmp_path / "b.h5") as b:
            for split in ("train", "val", "test"):
                assert sorted(f[split]) == sorted(b[split])
                for user in f[split]:
                    for name in f[split][user]:
                        np.testing.assert_array_equal(f[split][user][name][()], b[split][user][name][()])

    def test_seed_changes_the_split(self, tmp_path: Path):
        rows = []
        for index in range(30):
            save_image(tmp_path / f"{index}.png", photo(16, 16, seed=index))
            rows.append({"image": f"{index}.png", "user_id": f"u{index}"})
        manifest = write_jsonl(tmp_path / "m.jsonl", rows)

        def split_of(seed: int) -> dict[str, list[str]]:
            path = tmp_path / f"s{seed}.h5"
            convert(open_source(manifest), path, fast_options(plan=PlanOptions(seed=seed)))
            with fedimage.open(path) as store:
                return {split: sorted(store.users(split)) for split in store.splits}

        assert split_of(1) != split_of(2)
        assert split_of(1) == split_of(1)


class TestAtomicWriting:
    def test_existing_output_is_kept_without_overwrite(self, user_folder: Path, tmp_path: Path):
        output = tmp_path / "out.h5"
        output.write_bytes(b"precious")
        with pytest.raises(StoreError, match="already exists; pass `overwrite`"):
            convert(open_source(user_folder, layout="user"), output, fast_options(overwrite=False))
        assert output.read_bytes() == b"precious"

    def test_interrupted_run_leaves_no_store(self, user_folder: Path, tmp_path: Path, monkeypatch):
        output = tmp_path / "out.h5"
        calls = {"n": 0}
        original = writer_module.UserGroupWriter.close

        def crash_on_third_user(self):
            calls["n"] += 1
            if calls["n"] == 3:
                raise KeyboardInterrupt
            return original(self)

        monkeypatch.setattr(writer_module.UserGroupWriter, "close", crash_on_third_user)
        with pytest.raises(KeyboardInterrupt):
            convert(open_source(user_folder, layout="user"), output, fast_options())
        assert not output.exists()
        assert not list(tmp_path.glob("*.partial"))

    def test_partial_file_is_not_a_store(self, user_folder: Path, tmp_path: Path, monkeypatch):
        """Even if the process dies hard, only the .partial name exists, and it is not readable as a store."""
        output = tmp_path / "out.h5"
        monkeypatch.setattr(writer_module.StoreWriter, "abort", lambda self: self._file.close())
        monkeypatch.setattr(
            writer_module.StoreWriter,
            "finish",
            lambda self, metadata: (_ for _ in ()).throw(KeyboardInterrupt),
        )
        with pytest.raises(KeyboardInterrupt):
            convert(open_source(user_folder, layout="user"), output, fast_options())
        assert not output.exists()
        partial = tmp_path / "out.h5.work" / "shard-00000.h5.partial"
        assert partial.exists()
        with pytest.raises(StoreError, match="not a fedimage store"):
            fedimage.open(partial)

    def test_large_users_spill_to_chunked_datasets_with_same_content(
        self, user_folder: Path, tmp_path: Path, monkeypatch
    ):
        # (a raw store's pixels are written straight from shared memory: jpeg bytes are what users spill)
        options = fast_options(image=ImageOptions(size=32, storage="jpeg"))
        convert(open_source(user_folder, layout="user"), tmp_path / "memory.h5", options)
        monkeypatch.setattr(writer_module, "DEFAULT_SPILL_BYTES", 2000)
        convert(open_source(user_folder, layout="user"), tmp_path / "spilled.h5", options)
        with fedimage.open(tmp_path / "memory.h5") as a, fedimage.open(tmp_path / "spilled.h5") as b:
            assert a.manifest["users"] == b.manifest["users"]  # same checksums
            for split in a.splits:
                for user in a.users(split):
                    np.testing.assert_array_equal(
                        a.load_user(split, user).images, b.load_user(split, user).images
                    )
        assert fedimage.verify_store(tmp_path / "spilled.h5").ok
        with h5py.File(tmp_path / "spilled.h5") as spilled, h5py.File(tmp_path / "memory.h5") as memory:
            chunked = [
                f"{split}/{user}"
                for split in ("train", "val", "test")
                for user in spilled.get(split, {})
                if spilled[split][user]["jpeg"].chunks is not None
            ]
            assert chunked, "the test must make at least one user spill"
            assert all(memory[name]["jpeg"].chunks is None for name in chunked)


def test_quality_and_size_options_reach_the_store(user_folder: Path, tmp_path: Path):
    source = open_source(user_folder, "folder", layout="user")
    sizes = {}
    for quality in (30, 95):
        path = tmp_path / f"q{quality}.h5"
        convert(source, path, fast_options(image=ImageOptions(size=80, quality=quality)))
        with fedimage.open(path) as store:
            assert store.manifest["options"]["quality"] == quality
            assert store.load_user("train", next(iter(store.users("train")))).images.shape[1:] == (80, 80, 3)
            sizes[quality] = sum(
                len(blob)
                for split in store.splits
                for user in store.users(split)
                for blob in store.encoded_images(split, user)
            )
    assert sizes[30] < 0.6 * sizes[95]


def _die_in_worker(item):
    os._exit(9)


def test_a_dying_worker_is_a_clear_error_and_leaves_no_store(user_folder: Path, tmp_path: Path, monkeypatch):
    monkeypatch.setattr(local_executor, "_work_item", _die_in_worker)
    output = tmp_path / "out.h5"
    with pytest.raises(fedimage.FedimageError, match="a worker process died while converting"):
        convert(open_source(user_folder, layout="user"), output, fast_options(workers=2))
    assert not output.exists() and not list(tmp_path.glob("*.partial"))


def test_a_run_that_converts_nothing_leaves_no_store(tmp_path: Path):
    root = tmp_path / "bad"
    (root / "alice").mkdir(parents=True)
    (root / "alice" / "a.jpg").write_bytes(b"not an image")
    output = tmp_path / "out.h5"
    report = convert(open_source(root, layout="user"), output, fast_options())
    assert report.written == 0 and report.rejected == 1
    assert not output.exists() and not (tmp_path / "out.h5.work").exists()
    assert "a.jpg" in report.rejects_path.read_text()
    again = convert(open_source(root, layout="user"), output, fast_options())  # no --overwrite needed
    assert again.written == 0


def test_disk_full_is_one_line_naming_the_output(user_folder: Path, tmp_path: Path, monkeypatch):
    import errno

    from fedimage.store import writer as writer_module

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(writer_module.StoreWriter, "add_shard", full)
    output = tmp_path / "out.h5"
    with pytest.raises(StoreError) as error:
        convert(open_source(user_folder, layout="user"), output, fast_options(workers=1))
    message = str(error.value)
    assert "\n" not in message and str(output) in message and "free" in message and "needs about" in message
    assert not output.exists() and not Path(str(output) + ".partial").exists()


def test_disk_full_on_a_real_small_file_system(user_folder: Path, tmp_path: Path):
    """A 1 MB tmpfs (root only) fills up while a raw store is written: one line, no store."""
    import os
    import subprocess

    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "tiny"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], check=False).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        output = mount / "out.h5"
        options = fast_options(image=ImageOptions(size=160, storage="raw"), workers=1)
        with pytest.raises(StoreError, match="no space left on the device of"):
            convert(open_source(user_folder, layout="user"), output, options)
        assert not output.exists()
        assert not [path for path in mount.iterdir() if path.suffix in (".h5", ".partial")]
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
