"""Every exported JPEG is 8-bit RGB (3-component YCbCr), even a grayscale source at the store size.

A grayscale JPEG of exactly the store size used to be byte-copied into the store and from there into
``tfrecords``, ``parquet`` and ``dirs``, one channel: ml-flair's TensorFlow reader failed on it and
``datasets`` decoded mode ``L`` (issue 14, item 12). Conversions now store it as RGB, and exports
re-encode any 1-component JPEG an older store holds.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from helpers import QUIET, fast_options, jpeg_bytes, photo, save_image
from PIL import Image

import fedimage
from fedimage import ImageOptions, convert, open_source
from fedimage.exports import export
from fedimage.imaging.jpeg_segments import read_jpeg_info
from fedimage.store import schema
from fedimage.store.writer import StoreWriter

SIZE = 64
FORMATS = ("tfrecords", "parquet", "dirs")


def exported_jpegs(destination: Path, to: str) -> list[bytes]:
    """Every JPEG file of an export, read without fedimage's exporters."""
    if to == "parquet":
        return [
            row["bytes"]
            for path in sorted(destination.glob("*.parquet"))
            for row in pq.read_table(path).column("image").to_pylist()
        ]
    if to == "dirs":
        return [path.read_bytes() for path in sorted(destination.rglob("*.jpg"))]
    reader = pytest.importorskip("tfrecord.reader")
    return [
        bytes(record["image/encoded_jpeg"])
        for path in sorted(destination.rglob("*.tfrecords"))
        for record in reader.tfrecord_loader(str(path), None, {"image/encoded_jpeg": "byte"})
    ]


def assert_rgb(data: bytes) -> np.ndarray:
    info = read_jpeg_info(data)
    assert info.components == 3 and info.decodes_as_ycbcr_or_gray
    with Image.open(io.BytesIO(data)) as image:
        assert image.mode == "RGB" and image.size == (SIZE, SIZE)
        return np.asarray(image)


@pytest.fixture
def gray_source(tmp_path: Path) -> tuple[Path, np.ndarray]:
    gray = photo(SIZE, SIZE, seed=4).convert("L")
    save_image(tmp_path / "src" / "alice" / "gray.jpg", gray, quality=90)
    save_image(tmp_path / "src" / "alice" / "color.jpg", photo(SIZE, SIZE, seed=5), quality=90)
    return tmp_path / "src", np.asarray(gray)


@pytest.mark.parametrize("to", FORMATS)
def test_grayscale_jpeg_at_store_size_is_exported_as_rgb(gray_source, tmp_path: Path, to: str):
    source, gray = gray_source
    store = tmp_path / "store.h5"
    convert(open_source(source, layout="user"), store, fast_options(image=ImageOptions(size=SIZE)))
    with fedimage.open(store) as opened:
        split, user = next((s, u) for s in opened.splits for u in opened.users(s))
        stored = opened.encoded_images(split, user)
        ids = opened.load_user(split, user).image_ids
        (index,) = [position for position, image_id in enumerate(ids) if "gray" in image_id]
    assert all(read_jpeg_info(data).components == 3 for data in stored)
    export(store, to, tmp_path / to, QUIET)
    jpegs = exported_jpegs(tmp_path / to, to)
    assert sorted(jpegs) == sorted(stored)  # the store's RGB JPEGs, copied
    assert np.abs(assert_rgb(stored[index]).astype(int) - gray[..., None]).mean() < 3


def old_store_with_a_gray_jpeg(path: Path, gray: bytes, color: bytes) -> Path:
    """A store as an older fedimage wrote it: a grayscale JPEG byte-copied next to a color one."""
    with StoreWriter(
        path, storage="jpeg", image_size=SIZE, coarse_labels=["animal"], fine_labels=["cat"]
    ) as writer:
        user = writer.user("train", "alice")
        user.add(gray, "gray", ("animal",), ("cat",))
        user.add(color, "color", (), ())
        count = user.close()
        manifest = {
            "format": schema.FORMAT_NAME,
            "format_version": schema.FORMAT_VERSION,
            "storage": "jpeg",
            "image_size": SIZE,
            "counts": {"inputs": count, "written": count, "rejected": 0, "ignored": {}},
            "splits": {"train": {"users": 1, "images": count}},
            "users": writer.users,
        }
        writer.finish({schema.TAXONOMY: {"cat": "animal"}, schema.MANIFEST: manifest})
    return path


@pytest.mark.parametrize("to", FORMATS)
def test_one_component_jpeg_of_an_older_store_is_reencoded_as_rgb(tmp_path: Path, to: str):
    gray_image = photo(SIZE, SIZE, seed=6).convert("L")
    gray, color = jpeg_bytes(gray_image, quality=90), jpeg_bytes(photo(SIZE, SIZE, seed=7), quality=90)
    store = old_store_with_a_gray_jpeg(tmp_path / "old.h5", gray, color)
    assert fedimage.verify_store(store, decode=True).ok
    export(store, to, tmp_path / to, QUIET)
    jpegs = exported_jpegs(tmp_path / to, to)
    assert len(jpegs) == 2 and color in jpegs  # a 3-component JPEG is copied as stored
    (reencoded,) = [data for data in jpegs if data != color]
    assert np.abs(assert_rgb(reencoded).astype(int) - np.asarray(gray_image)[..., None]).mean() < 3
    if to == "dirs":  # metadata.json's checksums are of the files written
        folder = tmp_path / to / "train" / "alice"
        for image in json.loads((folder / "metadata.json").read_text())["images"]:
            assert image["sha256"] == hashlib.sha256((folder / image["file"]).read_bytes()).hexdigest()
