"""Shared fixtures: small collections in each source format (helpers live in ``helpers.py``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import make_flair_folder, photo, save_image
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
    return make_flair_folder(tmp_path)
