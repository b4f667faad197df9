"""Shared fixtures: small collections in each source format (helpers live in ``helpers.py``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from helpers import exif_with, jpeg_bytes, photo, save_image
from PIL import Image


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
