"""Picking the one label per image that label-skew schemes need, from multi-label data.

Images in FLAIR-like stores carry several labels (or none). Label-skew schemes split
*one* label per image, so :func:`skew_labels` picks it:

``rarest`` (default)
    the image's label with the fewest images in the whole collection (ties: the lower label
    index). Deterministic, and it keeps rare labels visible: with ``first`` or a random pick,
    ubiquitous labels (FLAIR's ``structure`` and ``equipment`` are on half the images)
    would absorb most images and the skew of rare labels would be lost.
``random``
    a seeded uniform choice among the image's labels, for a skew that follows label
    frequencies.

An image without labels gets :data:`NO_LABEL` (-1), which the schemes treat as one more label.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedimage.errors import OptionError

NO_LABEL = -1
SKEW_STRATEGIES = ("rarest", "random")

LabelInput = np.ndarray | Sequence[Sequence[int]]


def label_pairs(labels: LabelInput) -> tuple[np.ndarray, np.ndarray, int]:
    """``(rows, cols, num_images)`` of every (image, label index) pair, from a multi-hot array
    [N, L] or a list of label-index lists."""
    if isinstance(labels, np.ndarray) and labels.ndim == 2:
        rows, cols = np.nonzero(labels)
        return rows.astype(np.int64), cols.astype(np.int64), labels.shape[0]
    if isinstance(labels, np.ndarray):
        raise OptionError(
            f"labels must be a 2-D multi-hot array or a list of label lists, got shape {labels.shape}"
        )
    lengths = np.fromiter((len(row) for row in labels), dtype=np.int64, count=len(labels))
    rows = np.repeat(np.arange(len(labels), dtype=np.int64), lengths)
    flat = [label for row in labels for label in row]
    cols = np.asarray(flat, dtype=np.int64) if flat else np.zeros(0, dtype=np.int64)
    if cols.size and cols.min() < 0:
        row = int(rows[np.argmax(cols < 0)])
        raise OptionError(f"image {row} has a negative label index: {list(labels[row])}")
    return rows, cols, len(labels)


def pick_label(
    rows: np.ndarray, cols: np.ndarray, num_images: int, strategy: str = "rarest", seed: int = 0
) -> np.ndarray:
    """One label index per image from (image, label) pairs; :data:`NO_LABEL` for unlabeled images."""
    if strategy == "rarest":
        frequency = np.bincount(cols) if cols.size else np.zeros(0, dtype=np.int64)
        order = np.lexsort((cols, frequency[cols], rows))
    elif strategy == "random":
        order = np.lexsort((np.random.default_rng(seed).random(len(rows)), rows))
    else:
        choices = ", ".join(SKEW_STRATEGIES)
        raise OptionError(f"unknown skew label strategy {strategy!r}; choose one of: {choices}")
    picked = np.full(num_images, NO_LABEL, dtype=np.int64)
    sorted_rows = rows[order]
    first = np.flatnonzero(np.r_[True, sorted_rows[1:] != sorted_rows[:-1]]) if len(rows) else []
    picked[sorted_rows[first]] = cols[order][first]
    return picked


def skew_labels(labels: LabelInput, strategy: str = "rarest", seed: int = 0) -> np.ndarray:
    """One label index per image for the label-skew schemes (see the module docstring)."""
    rows, cols, num_images = label_pairs(labels)
    return pick_label(rows, cols, num_images, strategy, seed)
