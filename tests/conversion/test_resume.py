"""Resumable conversion: a run killed at any point continues to the same bytes with --resume."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from helpers import fast_options

import fedimage
from fedimage import ImageOptions, convert, open_source
from fedimage.conversion import workdir as shards
from fedimage.errors import StoreError
from fedimage.store import writer as writer_module

SHARD_IMAGES = 3  # 15 images of 5 users -> 4 shards


@pytest.fixture
def folder(user_folder: Path) -> Path:
    (user_folder / "user3" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return user_folder


@pytest.fixture(autouse=True)
def small_shards(monkeypatch):
    monkeypatch.setattr(shards, "SHARD_IMAGES", SHARD_IMAGES)


def run_cli(args: list[str], kill_at: tuple[str, int] | None = None) -> subprocess.CompletedProcess:
    """``fedimage ARGS`` in a fresh process that is SIGKILLed at the n-th call of a function.

    The count is per process: a hook on a function that workers run kills the main
    process from the worker that makes that call first (the worker then dies with it).
    """
    hook = ""
    if kill_at is not None:
        target, call = kill_at
        module, _, name = target.rpartition(".")
        owner, _, attribute = name.partition(":")
        hook = textwrap.dedent(
            f"""
            import os, signal
            import {module} as module
            main_pid = os.getpid()
            owner = getattr(module, {owner!r}) if {attribute!r} else module
            name = {attribute!r} or {owner!r}
            original = getattr(owner, name)
            calls = [0]
            def killer(*args, **kwargs):
                calls[0] += 1
                if calls[0] == {call}:
                    os.kill(main_pid, signal.SIGKILL)
                    os._exit(9)
                return original(*args, **kwargs)
            setattr(owner, name, killer)
            """
        )
    code = (
        "import sys\nfrom fedimage.conversion import workdir as shards\n"
        f"shards.SHARD_IMAGES = {SHARD_IMAGES}\n{hook}\n"
        f"from fedimage.cli import main\nsys.exit(main({args!r}))\n"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def convert_args(source: Path, output: Path, *extra: str) -> list[str]:
    return [
        "convert", str(source), "-o", str(output), "--layout", "user", "--size", "48",
        "--workers", "2", "--quiet", *extra,
    ]  # fmt: skip


@pytest.mark.parametrize(
    "kill_at",
    [
        ("fedimage.store.writer.UserGroupWriter:close", 1),  # in a worker, inside the first shard
        ("fedimage.store.writer.StoreWriter:finish", 1),  # in a worker, while publishing a shard
        ("fedimage.conversion.shard:next_shard", 3),  # after two shards were renamed
        ("fedimage.store.writer.copy_user_groups", 2),  # while assembling the store
    ],
)
def test_killed_run_resumes_to_identical_bytes(folder: Path, tmp_path: Path, kill_at):
    reference = tmp_path / "reference.h5"
    assert run_cli(convert_args(folder, reference)).returncode == 0  # one reject, without --strict
    output = tmp_path / "out.h5"
    killed = run_cli(convert_args(folder, output), kill_at=kill_at)
    assert killed.returncode == -9
    assert not output.exists() and (tmp_path / "out.h5.work").is_dir()

    refused = run_cli(convert_args(folder, output))
    assert refused.returncode == 2 and "--resume" in refused.stderr

    resumed = run_cli(convert_args(folder, output, "--resume"))
    assert resumed.returncode == 0, resumed.stderr
    assert ("shards of the interrupted run reused" in resumed.stdout) == (kill_at[1] > 1)
    assert output.read_bytes() == reference.read_bytes()
    rejects = tmp_path / "out.rejects.jsonl"
    assert rejects.read_text() == (tmp_path / "reference.rejects.jsonl").read_text()
    assert "broken.jpg" in rejects.read_text()
    assert not (tmp_path / "out.h5.work").exists()
    assert fedimage.verify_store(output).ok


def interrupt_at_fourth_user(folder: Path, output: Path, monkeypatch, options=None, at: int = 4) -> None:
    """Convert ``folder`` to ``output`` until Ctrl-C comes as the ``at``-th (fourth) user group is written."""
    from fedimage.store import writer as writer_module

    original = writer_module.UserGroupWriter.close
    calls = {"n": 0}

    def interrupt_on_fourth_user(self):
        calls["n"] += 1
        if calls["n"] == at:
            raise KeyboardInterrupt
        return original(self)

    with monkeypatch.context() as patch:
        patch.setattr(writer_module.UserGroupWriter, "close", interrupt_on_fourth_user)
        with pytest.raises(KeyboardInterrupt):
            convert(open_source(folder, layout="user"), output, options or fast_options(overwrite=False))


def test_resume_reuses_finished_shards_in_process(folder: Path, tmp_path: Path, monkeypatch):
    output = tmp_path / "out.h5"
    interrupt_at_fourth_user(folder, output, monkeypatch)

    report = convert(open_source(folder, layout="user"), output, fast_options(overwrite=False, resume=True))
    assert 0 < report.shards_reused < 5  # shards finished before the fourth user are reused
    assert report.written == 15 and report.rejected == 1 and report.inputs == 16


def test_resume_refuses_other_options(folder: Path, tmp_path: Path, monkeypatch):
    from fedimage.store import writer as writer_module

    output = tmp_path / "out.h5"
    monkeypatch.setattr(
        writer_module.UserGroupWriter, "close", lambda self: (_ for _ in ()).throw(KeyboardInterrupt)
    )
    with pytest.raises(KeyboardInterrupt):
        convert(open_source(folder, layout="user"), output, fast_options(overwrite=False))
    other = fast_options(overwrite=False, resume=True, image=ImageOptions(size=32))
    with pytest.raises(StoreError, match="other image options"):
        convert(open_source(folder, layout="user"), output, other)
    with pytest.raises(StoreError, match="pass `resume` to continue it, or `overwrite`"):
        convert(open_source(folder, layout="user"), output, fast_options(overwrite=False))


def test_a_run_interrupted_under_another_store_format_is_not_resumed(
    folder: Path, tmp_path: Path, monkeypatch
):
    from fedimage.store import schema

    output = tmp_path / "out.h5"
    with monkeypatch.context() as patch:  # an interrupted run of the fedimage that wrote format 2
        patch.setattr(schema, "FORMAT_VERSION", 2)
        interrupt_at_fourth_user(folder, output, monkeypatch)
    with pytest.raises(StoreError, match="the interrupted run used other format_version; pass `overwrite`"):
        convert(open_source(folder, layout="user"), output, fast_options(overwrite=False, resume=True))
    convert(open_source(folder, layout="user"), output, fast_options(overwrite=True))
    with fedimage.open(output) as store:
        assert store.format_version == schema.FORMAT_VERSION
    assert fedimage.verify_store(output).ok


def test_resume_of_a_finished_store_is_refused(folder: Path, tmp_path: Path):
    output = tmp_path / "out.h5"
    convert(open_source(folder, layout="user"), output, fast_options(overwrite=False))
    with pytest.raises(StoreError, match="nothing to resume"):
        convert(open_source(folder, layout="user"), output, fast_options(overwrite=False, resume=True))


def test_resume_without_an_interrupted_run_converts_from_scratch(folder: Path, tmp_path: Path):
    output = tmp_path / "out.h5"
    report = convert(open_source(folder, layout="user"), output, fast_options(overwrite=False, resume=True))
    assert report.written == 15 and report.shards_reused == 0


def _flip_image_bytes(shard: Path, count: int = 64) -> None:
    """Flip ``count`` bytes inside the first user group's image data of a finished shard."""
    import h5py
    import numpy as np

    with h5py.File(shard, "r") as file:
        split = next(name for name in file if name != "metadata")
        group = file[split][next(iter(file[split]))]
        images = next(
            group[name] for name in group if group[name].dtype == np.uint8 and group[name].ndim >= 1
        )
        offset = images.id.get_offset()
    assert offset is not None  # contiguous: the bytes sit at one place in the file
    data = bytearray(shard.read_bytes())
    for index in range(offset + 100, offset + 100 + count):
        data[index] ^= 0xFF
    shard.write_bytes(bytes(data))


def test_resume_redoes_a_finished_shard_damaged_since(folder: Path, tmp_path: Path, monkeypatch):
    reference = tmp_path / "reference.h5"
    convert(open_source(folder, layout="user"), reference, fast_options())
    output = tmp_path / "out.h5"
    interrupt_at_fourth_user(folder, output, monkeypatch)
    finished = sorted((tmp_path / "out.h5.work").glob("shard-*.h5"))
    assert finished
    _flip_image_bytes(finished[0])

    report = convert(open_source(folder, layout="user"), output, fast_options(resume=True))
    assert report.shards_reused == len(finished) - 1  # the damaged one was made again
    assert fedimage.verify_store(output).ok
    assert output.read_bytes() == reference.read_bytes()


#: Raw stores of 64 px RGB images: 3 pages each, so users' pixels are written past the page cache
#: (``O_DIRECT``) as FLAIR's 256 px are.
RAW_SIZE = 64
RAW = ("--storage", "raw", "--size", str(RAW_SIZE))


@pytest.mark.parametrize(
    "kill_at",
    [
        ("fedimage.store.writer.UserGroupWriter:close", 1),  # in a worker, inside the first shard
        ("fedimage.store.writer.PixelWrites:_write", 2),  # writing the second shard's pixels
        ("fedimage.conversion.pixels.PixelJournal:record", 3),  # after two shards' pixels were journaled
    ],
)
def test_killed_raw_run_resumes_from_its_partial_store(folder: Path, tmp_path: Path, kill_at):
    """A raw store's pixels are written once, into the store: a resume takes them from the killed
    run's partial store (shards hold no pixels)."""
    reference = tmp_path / "reference.h5"
    assert run_cli(convert_args(folder, reference, *RAW)).returncode == 0
    output = tmp_path / "out.h5"
    killed = run_cli(convert_args(folder, output, *RAW), kill_at=kill_at)
    assert killed.returncode == -9
    assert (tmp_path / "out.h5.partial").exists()  # its pixels, for the resume

    resumed = run_cli(convert_args(folder, output, *RAW, "--resume"))
    assert resumed.returncode == 0, resumed.stderr
    assert ("shards of the interrupted run reused" in resumed.stdout) == (kill_at[1] > 1)
    assert output.read_bytes() == reference.read_bytes()
    assert not (tmp_path / "out.h5.work").exists() and not (tmp_path / "out.h5.partial").exists()
    assert fedimage.verify_store(output).ok


def raw_options(size: int = RAW_SIZE, **overrides):
    return fast_options(image=ImageOptions(size=size, storage="raw"), **overrides)


def test_an_interrupted_raw_run_keeps_its_pixels_in_the_work_folder(
    folder: Path, tmp_path: Path, monkeypatch
):
    reference = tmp_path / "reference.h5"
    convert(open_source(folder, layout="user"), reference, raw_options())
    output = tmp_path / "out.h5"
    interrupt_at_fourth_user(folder, output, monkeypatch, raw_options(overwrite=False))
    assert not list(tmp_path.glob("*.partial"))
    assert list((tmp_path / "out.h5.work").glob("pixels-*.h5"))
    assert not list((tmp_path / "out.h5.work").glob("shard-*.h5")) or all(
        "images" not in group
        for shard in (tmp_path / "out.h5.work").glob("shard-*.h5")
        for group in _user_groups(shard)
    )  # shards carry no pixels

    report = convert(open_source(folder, layout="user"), output, raw_options(resume=True))
    assert report.shards_reused > 0
    assert output.read_bytes() == reference.read_bytes()


def test_raw_resume_redoes_a_shard_whose_pixels_were_damaged(folder: Path, tmp_path: Path, monkeypatch):
    from fedimage.conversion.pixels import PixelJournal

    reference = tmp_path / "reference.h5"
    convert(open_source(folder, layout="user"), reference, raw_options())
    output = tmp_path / "out.h5"
    interrupt_at_fourth_user(folder, output, monkeypatch, raw_options(overwrite=False))
    journal = PixelJournal(tmp_path / "out.h5.work")
    found = journal.find(0)
    assert found is not None
    pixels, runs = found
    data = bytearray(pixels.read_bytes())
    data[runs[0].offset + 10] ^= 0xFF
    pixels.write_bytes(bytes(data))
    journaled = sum(journal.find(index) is not None for index in range(5))

    report = convert(open_source(folder, layout="user"), output, raw_options(resume=True))
    assert report.shards_reused == journaled - 1  # shard 0 was made again
    assert output.read_bytes() == reference.read_bytes()
    assert fedimage.verify_store(output).ok


def _user_groups(shard: Path) -> list:
    import h5py

    with h5py.File(shard, "r") as file:
        return [set(file[split][user]) for split in file if split != "metadata" for user in file[split]]


def test_a_shard_too_large_for_shared_memory_keeps_its_pixels(folder: Path, tmp_path: Path, monkeypatch):
    """A raw shard over MAX_SLOT_BYTES (one enormous user) writes its pixels into its shard file
    and the store copies them: same bytes as shards that go through shared memory, and resumable."""
    from fedimage.conversion import pixels

    reference = tmp_path / "reference.h5"
    convert(open_source(folder, layout="user"), reference, raw_options(workers=2))
    image_bytes = RAW_SIZE * RAW_SIZE * 3
    monkeypatch.setattr(pixels, "MAX_SLOT_BYTES", 3 * image_bytes)  # shards of 4 images and more: in files
    from fedimage.conversion.executors import local

    monkeypatch.setattr(local, "MAX_SLOT_BYTES", 3 * image_bytes)
    output = tmp_path / "out.h5"
    interrupt_at_fourth_user(folder, output, monkeypatch, raw_options(overwrite=False, workers=1))
    kinds = {
        "images" in group
        for shard in (tmp_path / "out.h5.work").glob("shard-*.h5")
        for group in _user_groups(shard)
    }
    assert kinds == {True, False}  # finished shards of both kinds
    report = convert(open_source(folder, layout="user"), output, raw_options(resume=True, workers=2))
    assert report.shards_reused > 0
    with fedimage.open(output) as resumed, fedimage.open(reference) as whole:
        assert resumed.manifest["users"] == whole.manifest["users"]  # same checksums
        for split in whole.splits:
            for user in whole.users(split):
                assert (resumed.load_user(split, user).images == whole.load_user(split, user).images).all()
    assert fedimage.verify_store(output).ok


def test_a_resumed_raw_run_interrupted_again_still_resumes_to_the_same_bytes(
    folder: Path, tmp_path: Path, monkeypatch
):
    """Two interruptions: the third run takes each shard's pixels from the newest partial store that
    holds them (the second run's for those it copied, the first run's for the others)."""
    reference = tmp_path / "reference.h5"
    convert(open_source(folder, layout="user"), reference, raw_options())
    output = tmp_path / "out.h5"
    interrupt_at_fourth_user(folder, output, monkeypatch, raw_options(overwrite=False))
    interrupt_at_fourth_user(folder, output, monkeypatch, raw_options(overwrite=False, resume=True), at=1)
    work = tmp_path / "out.h5.work"
    assert sorted(path.name for path in work.glob("pixels-*.h5")) == ["pixels-000.h5", "pixels-001.h5"]

    report = convert(open_source(folder, layout="user"), output, raw_options(resume=True))
    assert report.shards_reused > 0
    assert output.read_bytes() == reference.read_bytes()
    assert not work.exists()


@pytest.mark.parametrize("size", [32, RAW_SIZE])  # 32 px: 3 KB images, not whole pages
def test_raw_pixels_are_written_in_the_background_only_into_reserved_disk(
    folder: Path, tmp_path: Path, monkeypatch, size: int
):
    """The same bytes either way: a background thread when the store's disk was reserved, else
    in line (a full disk must fail where HDF5 can still close what it made); past the page cache
    where the file system allows and the images are whole pages, else through it."""
    threads = []
    original = writer_module.PixelWrites._write

    def recording(self, pieces, then):
        threads.append(threading.current_thread() is threading.main_thread())
        return original(self, pieces, then)

    monkeypatch.setattr(writer_module.PixelWrites, "_write", recording)
    background = tmp_path / "background.h5"
    convert(open_source(folder, layout="user"), background, raw_options(size, workers=2))
    assert threads and not any(threads)

    threads.clear()
    monkeypatch.setattr(writer_module, "reserve_space", lambda path, nbytes: False)
    in_line = tmp_path / "in_line.h5"
    convert(open_source(folder, layout="user"), in_line, raw_options(size, workers=2))
    assert threads and all(threads)
    assert in_line.read_bytes() == background.read_bytes()
    assert fedimage.verify_store(in_line).ok


def pixel_offsets(store: Path) -> list[int]:
    import h5py

    with h5py.File(store, "r") as file:
        return [
            file[split][user]["images"].id.get_offset()
            for split in file
            if split != "metadata"
            for user in file[split]
        ]


@pytest.mark.parametrize("size", [32, RAW_SIZE])
def test_raw_pixels_start_on_page_boundaries_when_images_are_whole_pages(
    folder: Path, tmp_path: Path, monkeypatch, size: int
):
    """Where each image is a whole number of pages, each user's pixels start on a page boundary and
    go to the disk directly (``O_DIRECT``, where the file system has it); else they are packed."""
    direct_bytes = []
    original = writer_module.PixelWrites._write_all

    def recording(self, descriptor, offset, data):
        if descriptor == self._direct:
            direct_bytes.append(len(data))
        return original(self, descriptor, offset, data)

    monkeypatch.setattr(writer_module.PixelWrites, "_write_all", recording)
    output = tmp_path / "out.h5"
    report = convert(open_source(folder, layout="user"), output, raw_options(size, workers=2))
    offsets = pixel_offsets(output)
    assert len(offsets) == sum(report.splits[split]["users"] for split in report.splits)
    image_bytes = size * size * 3
    aligned = image_bytes % writer_module.DIRECT_ALIGNMENT == 0
    assert all(offset % writer_module.DIRECT_ALIGNMENT == 0 for offset in offsets) == aligned
    probe = writer_module._open_direct(output)
    if probe is not None:
        os.close(probe)
    if aligned and probe is not None:
        assert sum(direct_bytes) == report.written * image_bytes  # every pixel past the page cache
    else:
        assert not direct_bytes


@pytest.mark.parametrize("workers", [1, 2])  # 1: found when its slot is reused; 2: when the store closes
def test_a_failing_pixel_write_is_one_line_and_publishes_nothing(
    folder: Path, tmp_path: Path, monkeypatch, workers: int
):
    def failing(descriptor, data, offset):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(writer_module.os, "pwrite", failing)
    output = tmp_path / "out.h5"
    message = r"^cannot write pixels into .*out\.h5\.partial: Input/output error$"
    with pytest.raises(StoreError, match=message):
        convert(open_source(folder, layout="user"), output, raw_options(workers=workers))
    assert not output.exists() and not (tmp_path / "out.h5.partial").exists()
