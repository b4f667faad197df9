"""Shared fixtures: image files of every kind, and small collections in each source format."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fedimage import ConvertOptions, ImageOptions, PlanOptions, SplitRatios

GPS_EXIF_TAG = 0x8825


def photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """A smooth, photo-like RGB image (gradients + shapes) that JPEG compresses realistically."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    channels = []
    for _ in range(3):
        fx, fy, phase = [*rng.uniform(0.5, 4, 2).tolist(), rng.uniform(0, 6.28)]
        channels.append(127 + 120 * np.sin(fx * x / width * 6.28 + phase) * np.cos(fy * y / height * 6.28))
    array = np.stack(channels, axis=-1).clip(0, 255).astype(np.uint8)
    return Image.fromarray(array, "RGB")


def jpeg_bytes(image: Image.Image, **save_options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", **save_options)
    return buffer.getvalue()


def exif_with(orientation: int | None = None, gps: bool = False) -> bytes:
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    if gps:
        exif[GPS_EXIF_TAG] = {1: "N", 2: (48.0, 51.0, 24.0), 3: "E", 4: (2.0, 21.0, 3.0)}
    exif[0x013B] = "Secret Photographer"  # Artist
    return exif.tobytes()


def save_image(path: Path, image: Image.Image, **options) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **options)
    return path


def fast_options(**overrides) -> ConvertOptions:
    """One worker, no progress bar: what most tests want."""
    plan = overrides.pop("plan", PlanOptions(split=SplitRatios(), seed=0))
    image = overrides.pop("image", ImageOptions(size=64))
    defaults = {"workers": 1, "quiet": True, "overwrite": True}
    defaults.update(overrides)
    return ConvertOptions(image=image, plan=plan, **defaults)


@pytest.fixture
def make_photo() -> Callable[..., Image.Image]:
    return photo


@pytest.fixture
def user_folder(tmp_path: Path) -> Path:
    """root/<user>/<image>: 5 users with 1..5 JPEGs of mixed sizes."""
    root = tmp_path / "by_user"
    for user in range(5):
        for index in range(user + 1):
            size = (80 + 13 * index, 60 + 7 * user)
            save_image(root / f"user{user}" / f"img{index}.jpg", photo(*size, seed=user * 10 + index))
    return root


@pytest.fixture
def flair_folder(tmp_path: Path) -> Path:
    """A miniature of FLAIR's raw distribution: 256x256 JPEGs, metadata JSON, label_relationship.txt."""
    root = tmp_path / "flair"
    taxonomy = {"cat": "animal", "dog": "animal", "tree": "plant", "flower": "plant", "car": "equipment"}
    rng = np.random.default_rng(1)
    metadata = []
    image_id = 1000
    for user, (partition, count) in enumerate(
        [("train", 4), ("train", 1), ("train", 3), ("val", 2), ("test", 2), ("train", 2)]
    ):
        for _ in range(count):
            fine = sorted(rng.choice(sorted(taxonomy), size=int(rng.integers(1, 4)), replace=False).tolist())
            coarse = sorted({taxonomy[label] for label in fine})
            data = jpeg_bytes(photo(256, 256, seed=image_id), quality=90, exif=exif_with(gps=True))
            (root / "small_images").mkdir(parents=True, exist_ok=True)
            (root / "small_images" / f"{image_id}.jpg").write_bytes(data)
            metadata.append(
                {
                    "user_id": f"{59769174 + user}@N00",
                    "image_id": str(image_id),
                    "labels": coarse,
                    "partition": partition,
                    "fine_grained_labels": fine,
                }
            )
            image_id += 1
    (root / "labels_and_metadata.json").write_text(json.dumps(metadata))
    (root / "label_relationship.txt").write_text(
        "".join(f"{fine} -> {coarse}\n" for fine, coarse in taxonomy.items())
    )
    return root


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path
