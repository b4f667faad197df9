"""The real sample that ships with fedimage: Open Clip Art drawings, one user per author."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def sample_path() -> Path:
    """Folder of the embedded sample: ``manifest.jsonl``, ``images/``, ``label_relationship.txt``."""
    return Path(str(resources.files("fedimage") / "data" / "openclipart_sample"))


def sample_manifest() -> Path:
    return sample_path() / "manifest.jsonl"


def sample_taxonomy() -> Path:
    return sample_path() / "label_relationship.txt"
