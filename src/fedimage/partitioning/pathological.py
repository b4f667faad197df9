"""``pathological``: every client holds exactly ``classes_per_client`` labels (the "#C=k" label
skew of Li et al., 2022; Flower's ``PathologicalPartitioner``).

Each label's images are shared equally among the clients that hold it. Every label present
is held by some client (ceil(C/k) clients, at seeded positions, cover all labels), so every
image gets a client. The other clients draw k distinct labels with probability proportional
to the label's size (Gumbel top-k), so a label's holders are about as many as its images
allow and every client expects about N / (K k) images per label, rare labels included
(a uniform draw would leave the holders of rare labels nearly empty). The minimum size is
repaired with images of labels the deficient client already holds, so no client ever gets
a label outside its k.
"""

from __future__ import annotations

import math

import numpy as np

from fedimage.errors import OptionError
from fedimage.partitioning._core import CLIENT_DTYPE, by_class_order, check_feasible, label_codes

_CHUNK = 4096


def class_sets(
    class_sizes: np.ndarray, num_clients: int, per_client: int, rng: np.random.Generator
) -> np.ndarray:
    """[clients, per_client] distinct labels per client; together they cover every label."""
    num_classes = len(class_sizes)
    covering = math.ceil(num_classes / per_client)
    ring = rng.permutation(num_classes)
    sets = [ring[np.arange(covering * per_client) % num_classes].reshape(covering, per_client)]
    log_weights = np.log(class_sizes)
    for start in range(covering, num_clients, _CHUNK):
        rows = min(_CHUNK, num_clients - start)
        keys = log_weights + rng.gumbel(size=(rows, num_classes))
        sets.append(np.argsort(-keys, axis=1)[:, :per_client])
    return np.concatenate(sets)[rng.permutation(num_clients)]


def pathological_partition(
    labels: np.ndarray,
    num_clients: int,
    classes_per_client: int = 2,
    min_per_client: int = 1,
    seed: int = 0,
) -> np.ndarray:
    """Client per image for one integer label per image."""
    num_images = len(labels)
    check_feasible(num_images, num_clients, min_per_client)
    codes, num_classes = label_codes(labels, num_images, "pathological")
    if classes_per_client > num_classes:
        raise OptionError(
            f"classes_per_client={classes_per_client} but the images have only {num_classes} distinct labels"
        )
    if num_clients * classes_per_client < num_classes:
        raise OptionError(
            f"{num_clients} clients x {classes_per_client} labels cannot cover the {num_classes} labels: "
            "images of an uncovered label would have no client"
        )
    rng = np.random.default_rng(seed)
    class_sizes = np.bincount(codes, minlength=num_classes)
    sets = class_sets(class_sizes, num_clients, classes_per_client, rng)
    pair_class = sets.ravel()
    pair_client = np.repeat(np.arange(num_clients, dtype=CLIENT_DTYPE), classes_per_client)
    shuffled = rng.permutation(len(pair_class))
    by_class = shuffled[np.argsort(pair_class[shuffled], kind="stable")]
    holder_class, holder_client = pair_class[by_class], pair_client[by_class]
    holders = np.bincount(holder_class, minlength=num_classes)
    rank = np.arange(len(holder_class)) - (np.cumsum(holders) - holders)[holder_class]
    shares = class_sizes[holder_class] // holders[holder_class] + (
        rank < class_sizes[holder_class] % holders[holder_class]
    )
    order = by_class_order(codes, rng)
    assignment = np.empty(num_images, dtype=CLIENT_DTYPE)
    assignment[order] = np.repeat(holder_client, shares)
    _repair_within_classes(assignment, codes, order, class_sizes, sets, min_per_client, rng)
    return assignment


def _repair_within_classes(
    assignment: np.ndarray,
    codes: np.ndarray,
    order: np.ndarray,
    class_sizes: np.ndarray,
    sets: np.ndarray,
    min_per_client: int,
    rng: np.random.Generator,
) -> None:
    """Top up clients below the minimum (in place) with images of their own labels, taken from
    the largest other holders of those labels."""
    sizes = np.bincount(assignment, minlength=len(sets))
    class_start = np.cumsum(class_sizes) - class_sizes
    for client in rng.permutation(np.flatnonzero(sizes < min_per_client)):
        need = min_per_client - sizes[client]
        spans = [order[class_start[c] : class_start[c] + class_sizes[c]] for c in sets[client]]
        candidates = np.concatenate(spans)
        candidates = candidates[assignment[candidates] != client]
        donors = assignment[candidates]
        for donor in sorted(np.unique(donors), key=lambda d: (-sizes[d], d)):
            take = min(need, sizes[donor] - min_per_client)
            if take <= 0:
                continue
            chosen = candidates[donors == donor][:take]
            assignment[chosen] = client
            sizes[donor] -= len(chosen)
            sizes[client] += len(chosen)
            need -= len(chosen)
            if need == 0:
                break
        if need > 0:
            raise OptionError(
                f"pathological: client {client} holds labels {sorted(sets[client].tolist())}, which cannot "
                f"spare {need} more images for min_per_client={min_per_client}; lower min_per_client "
                "or raise classes_per_client"
            )
