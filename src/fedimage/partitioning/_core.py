"""Building blocks shared by the schemes (internal): sizes, dealing, label codes, feasibility."""

from __future__ import annotations

import numpy as np

from fedimage.errors import OptionError

CLIENT_DTYPE = np.int64


def check_feasible(num_images: int, num_clients: int, min_per_client: int) -> None:
    """The only impossible constraint every scheme shares: ``K * M > N``."""
    if num_clients * min_per_client > num_images:
        raise OptionError(
            f"cannot give {num_clients} clients at least {min_per_client} images each: "
            f"there are only {num_images} images (need {num_clients * min_per_client})"
        )


def apportion(total: int, weights: np.ndarray) -> np.ndarray:
    """Integers proportional to ``weights`` that sum to ``total`` (largest remainder, ties by index)."""
    weights = np.asarray(weights, dtype=np.float64)
    exact = weights / weights.sum() * total
    counts = np.floor(exact).astype(np.int64)
    short = total - int(counts.sum())
    if short:
        order = np.argsort(-(exact - counts), kind="stable")
        counts[order[:short]] += 1
    return counts


def deal(order: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Client per image: the images at ``order`` go to client 0 (``sizes[0]`` of them), then 1, ..."""
    assignment = np.empty(len(order), dtype=CLIENT_DTYPE)
    assignment[order] = np.repeat(np.arange(len(sizes), dtype=CLIENT_DTYPE), sizes)
    return assignment


def label_codes(labels: np.ndarray | None, num_images: int, scheme: str) -> tuple[np.ndarray, int]:
    """Dense codes 0..C-1 for any integer labels (one per image), and C."""
    if labels is None:
        raise OptionError(f"the {scheme!r} scheme skews labels: it needs one label per image")
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) != num_images:
        raise OptionError(
            f"the {scheme!r} scheme needs one label per image: got labels of shape {labels.shape} "
            f"for {num_images} images (pick one label per image with skew_labels)"
        )
    if labels.dtype.kind not in "iub":
        raise OptionError(f"labels must be integers, got dtype {labels.dtype}")
    classes, codes = np.unique(labels, return_inverse=True)
    return codes.astype(np.int64), len(classes)


def grouped_order(keys: np.ndarray, num_keys: int, rng: np.random.Generator) -> np.ndarray:
    """Indices grouped by ``keys`` (ascending), in a seeded random order within each group.

    A shuffle then a stable sort: numpy radix-sorts 16-bit keys, several times faster than
    ``lexsort`` with random tie-breakers.
    """
    shuffled = rng.permutation(len(keys))
    narrow = keys[shuffled].astype(np.int16 if num_keys <= np.iinfo(np.int16).max else np.int32)
    return shuffled[np.argsort(narrow, kind="stable")]


def by_class_order(codes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Image indices grouped by class (ascending), in a seeded random order within each class."""
    return grouped_order(codes, int(codes.max(initial=0)) + 1, rng)
