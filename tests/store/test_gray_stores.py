"""Gray stores (``color="gray"``) and native sizes, from conversion through every reader and export.

A grayscale collection used to be stored as RGB (three equal channels, 3x the raw bytes) and at
256 px unless ``--size`` was repeated (issue 19, item 8).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import h5py
import numpy as np
import pyarrow.parquet as pq
import pytest
from helpers import QUIET, fast_options, photo, save_image
from PIL import Image

import fedimage
from fedimage import ImageOptions, convert, open_source
from fedimage.cli import main
from fedimage.exports import export
from fedimage.imaging.jpeg_segments import read_jpeg_info

SIZE = 28


@pytest.fixture
def gray_folder(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """Two users of 28x28 grayscale PNGs (one 16-bit), one larger gray JPEG; their gray levels by id."""
    root = tmp_path / "gray"
    levels = {}
    for user in ("alice", "bob", "carol", "dave", "erin"):
        for index in range(3):
            image = photo(SIZE, SIZE, seed=len(levels)).convert("L")
            levels[f"{user}/{index}.png"] = np.asarray(image)
            save_image(root / user / f"{index}.png", image)
    save_image(root / "alice" / "deep.png", photo(SIZE, SIZE, seed=99).convert("L").convert("I;16"))
    save_image(root / "bob" / "big.jpg", photo(56, 40, seed=98).convert("L"), quality=95)
    return root, levels


def convert_gray(source: Path, store: Path, **image) -> fedimage.ConvertReport:
    options = fast_options(image=ImageOptions(**{"size": "native", "color": "gray", **image}))
    return convert(open_source(source, layout="user"), store, options)


@pytest.mark.parametrize("storage", ["jpeg", "raw"])
def test_gray_store_keeps_one_channel_at_the_native_size(gray_folder, tmp_path: Path, storage: str):
    source, levels = gray_folder
    report = convert_gray(source, tmp_path / "gray.h5", storage=storage)
    assert report.written == 17 and report.image.size == SIZE and report.image.color == "gray"
    assert report.notes == [
        "native size: 28 px (28x28: 16 of 17 sampled images; 1 other sizes are resized to 28 px)"
    ]
    assert fedimage.verify_store(tmp_path / "gray.h5", decode=True).ok
    with fedimage.open(tmp_path / "gray.h5") as store:
        assert (store.color, store.channels, store.image_size) == ("gray", 1, SIZE)
        assert "gray" in repr(store)
        seen = 0
        for split in store.splits:
            for user in store.iter_users(split):
                assert user.images.shape == (len(user), SIZE, SIZE, 1) and user.images.dtype == np.uint8
                for index, image_id in enumerate(user.image_ids):
                    single = store.load_image(split, user.user_id, index)
                    assert np.array_equal(single, user.images[index])
                    if image_id in levels:
                        seen += 1
                        difference = np.abs(user.images[index, :, :, 0].astype(int) - levels[image_id])
                        assert difference.max() == 0 if storage == "raw" else difference.mean() < 2
        assert seen == 15
        if storage == "jpeg":
            split = store.splits[0]
            user_id = next(iter(store.users(split)))
            assert {read_jpeg_info(data).components for data in store.encoded_images(split, user_id)} == {1}


def test_gray_store_is_smaller_than_the_same_images_in_rgb(gray_folder, tmp_path: Path):
    source, _ = gray_folder
    convert_gray(source, tmp_path / "gray.h5", storage="raw")
    rgb = convert(
        open_source(source, layout="user"),
        tmp_path / "rgb.h5",
        fast_options(image=ImageOptions(size="native", storage="raw")),
    )
    assert any("every sampled image is grayscale (17 of 17)" in note for note in rgb.notes)
    with h5py.File(tmp_path / "gray.h5") as gray_file, h5py.File(tmp_path / "rgb.h5") as rgb_file:
        gray_bytes = sum(
            g["images"].nbytes
            for split in gray_file
            if split != "metadata"
            for g in gray_file[split].values()
        )
        rgb_bytes = sum(
            g["images"].nbytes for split in rgb_file if split != "metadata" for g in rgb_file[split].values()
        )
    assert rgb_bytes == 3 * gray_bytes


def test_exports_of_a_gray_store(gray_folder, tmp_path: Path):
    source, _ = gray_folder
    store = tmp_path / "gray.h5"
    convert_gray(source, store)
    with fedimage.open(store) as opened:
        total = opened.num_images()
        first_split = opened.splits[0]
        first_user = next(iter(opened.users(first_split)))
        stored = opened.load_user(first_split, first_user)
    # parquet: datasets' Image feature decodes mode L at 28 px; the schema states size and colour
    export(store, "parquet", tmp_path / "parquet", QUIET)
    rows = [
        row
        for path in sorted((tmp_path / "parquet").glob("*.parquet"))
        for row in pq.read_table(path).to_pylist()
    ]
    assert len(rows) == total
    for row in rows:
        with Image.open(io.BytesIO(row["image"]["bytes"])) as image:
            assert image.mode == "L" and image.size == (SIZE, SIZE)
    # converting the export back keeps its size and colour without being told
    back = fedimage.convert(tmp_path / "parquet", tmp_path / "back.h5")
    assert back.image.size == SIZE and back.image.color == "gray"
    with fedimage.open(tmp_path / "back.h5") as reopened:
        assert reopened.color == "gray" and reopened.num_images() == total
    # dirs: one-component JPEGs, the index says gray
    export(store, "dirs", tmp_path / "dirs", QUIET)
    files = sorted((tmp_path / "dirs").rglob("*.jpg"))
    assert len(files) == total and {read_jpeg_info(path.read_bytes()).components for path in files} == {1}
    # flair-central and tfrecords are FLAIR's formats: RGB, three equal channels
    export(store, "flair-central", tmp_path / "central.h5", QUIET)
    with h5py.File(tmp_path / "central.h5") as central:
        images = [
            group["image"][()]
            for split in ("train", "val", "test")
            if split in central
            for group in central[split].values()
        ]
    assert len(images) == total
    assert all(image.shape == (SIZE, SIZE, 3) and (image == image[..., :1]).all() for image in images)
    # client bundles: each a gray one-user store with the store's pixels
    export(store, "client-bundles", tmp_path / "bundles", QUIET)
    (client,) = [
        entry
        for entry in json.loads((tmp_path / "bundles" / "index.json").read_text())["clients"]
        if (entry["split"], entry["user"]) == (first_split, first_user)
    ]
    bundle = tmp_path / "bundles" / client["bundle"]
    with fedimage.open(bundle, key=tmp_path / "bundles" / client["key"]) as opened:
        assert opened.color == "gray"
        assert np.array_equal(opened.load_user(first_split, first_user).images, stored.images)


def test_tfrecords_of_a_gray_store_hold_rgb_jpegs(gray_folder, tmp_path: Path):
    reader = pytest.importorskip("tfrecord.reader")
    source, _ = gray_folder
    convert_gray(source, tmp_path / "gray.h5", storage="raw")
    export(tmp_path / "gray.h5", "tfrecords", tmp_path / "tf", QUIET)
    jpegs = [
        bytes(record["image/encoded_jpeg"])
        for path in sorted((tmp_path / "tf").rglob("*.tfrecords"))
        for record in reader.tfrecord_loader(str(path), None, {"image/encoded_jpeg": "byte"})
    ]
    assert len(jpegs) == 17 and {read_jpeg_info(data).components for data in jpegs} == {3}


def test_training_transform_takes_a_gray_batch_as_its_rgb_twin():
    torch = pytest.importorskip("torch")
    from fedimage.training.transforms import ImageTransform

    gray = torch.randint(0, 256, (2, SIZE, SIZE, 1), dtype=torch.uint8)
    transform = ImageTransform(24).eval()
    assert torch.equal(transform(gray), transform(gray.expand(-1, -1, -1, 3)))
    assert transform(gray).shape == (2, 3, 24, 24)


def test_command_line_native_size_and_gray(gray_folder, tmp_path: Path, capsys):
    source, _ = gray_folder
    assert (
        main(
            [
                "convert",
                str(source),
                "-o",
                str(tmp_path / "a.h5"),
                "--layout",
                "user",
                "--size",
                "native",
                "--quiet",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "native size: 28 px" in out
    assert (
        "every sampled image is grayscale (17 of 17): --color gray would store a third of the pixels" in out
    )
    assert (
        main(
            [
                "convert",
                str(source),
                "-o",
                str(tmp_path / "b.h5"),
                "--layout",
                "user",
                "--size",
                "native",
                "--color",
                "gray",
                "--quiet",
            ]
        )
        == 0
    )
    assert "--color gray would" not in capsys.readouterr().out
    assert main(["inspect", str(tmp_path / "b.h5")]) == 0
    assert "jpeg 28x28 gray" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["convert", str(source), "-o", str(tmp_path / "c.h5"), "--size", "tiny"])
    assert "expected pixels or native, got 'tiny'" in capsys.readouterr().err


def test_native_size_of_a_source_with_no_readable_image_is_one_line(tmp_path: Path, capsys):
    (tmp_path / "bad" / "alice").mkdir(parents=True)
    (tmp_path / "bad" / "alice" / "x.png").write_bytes(b"not a png")
    status = main(
        [
            "convert",
            str(tmp_path / "bad"),
            "-o",
            str(tmp_path / "x.h5"),
            "--layout",
            "user",
            "--size",
            "native",
        ]
    )
    assert status == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == (
        "error: --size native: no sampled image could be read to learn the source's size; give a size"
    )
    assert not (tmp_path / "x.h5").exists()
