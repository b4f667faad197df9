"""Partitions by an image's metadata rather than its labels: feature skew, the other non-IID axis.

- :func:`column_partition`: one client per distinct value of a column (a hospital, a camera,
  a site: natural silos).
- :func:`continuous_partition`: images ranked by a numeric column blended with Gaussian noise,
  then cut into equal clients (a drift in time or brightness). ``strictness`` 1 follows the
  ranking exactly, 0 ignores it (IID); in between, ``b = s * z + (1 - s) * e`` with ``z`` the
  standardized column and ``e`` standard normal noise, as Flower Datasets' ``ContinuousPartitioner``
  defines it.

Both take the images in the caller's stable order (sorted by image id) and are deterministic for
a seed.

    clients = column_partition(np.array(["site-b", "site-a", "site-b"]))       # [1, 0, 1]
    clients = continuous_partition(np.array([0.3, 5.0, 1.2, 9.9]), 2, strictness=1.0)  # [0, 1, 0, 1]
"""

from __future__ import annotations

import math

import numpy as np

from fedimage.errors import OptionError
from fedimage.partitioning._core import CLIENT_DTYPE, apportion, check_feasible, deal


def column_partition(keys: np.ndarray, min_per_client: int = 1) -> np.ndarray:
    """Client per image: the rank of its key among the sorted distinct keys.

    Parameters:
        keys: one value per image (strings or numbers); a missing value (None, NaN) is an error.
        min_per_client: every value must have at least this many images; a natural silo is never
            topped up with other silos' images, so a smaller one is an error naming it.

    Example::

        column_partition(np.array(["b", "a", "b"]))   # array([1, 0, 1])
    """
    keys = np.asarray(keys)
    if keys.ndim != 1:
        raise OptionError(f"`partition_key` values must be one per image, got shape {keys.shape}")
    if keys.dtype == object or keys.dtype.kind == "f":
        missing = [index for index, key in enumerate(keys.tolist()) if _is_missing(key)]
        if missing:
            raise OptionError(
                f"`partition_key` has no value for {len(missing)} images (the first: image {missing[0]} "
                "in id order); the column partition needs one value per image"
            )
    values, clients = _distinct(keys)
    sizes = np.bincount(clients, minlength=len(values))
    small = np.flatnonzero(sizes < min_per_client)
    if len(small):
        first = small[0]
        raise OptionError(
            f"`partition_key` value {values[first].item()!r} has {sizes[first]} images, fewer than "
            f"`min_per_client` {min_per_client} ({len(small)} values are that small)"
        )
    return clients.astype(CLIENT_DTYPE)


def column_names(keys: np.ndarray) -> list[str]:
    """The value each client of :func:`column_partition` holds, in client order, as text.

    column_names(np.array([10, 9, 10]))   # ['9', '10'] (numbers in numeric order)
    """
    return [str(value) for value in _distinct(np.asarray(keys))[0].tolist()]


def _distinct(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The sorted distinct keys (text compared as text, numbers as numbers) and each key's index."""
    return np.unique(keys.astype(str) if keys.dtype == object else keys, return_inverse=True)


def continuous_partition(
    values: np.ndarray,
    num_clients: int,
    strictness: float = 1.0,
    seed: int = 0,
    min_per_client: int = 1,
) -> np.ndarray:
    """Client per image: equal clients (sizes differ by at most one) cut along the blended ranking.

    Parameters:
        values: one finite number per image (a timestamp as seconds, a brightness, an age).
        num_clients: clients to make; client 0 holds the lowest blended scores.
        strictness: 0 (IID) to 1 (sorted by the value alone).
        seed: seeds the noise (ties in the blended score are broken by image order).
        min_per_client: checked against ``len(values) // num_clients``.

    Example::

        continuous_partition(np.arange(100.0), num_clients=4, strictness=0.8, seed=1)
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1:
        raise OptionError(f"`partition_key` values must be one per image, got shape {values.shape}")
    if not (isinstance(strictness, int | float) and math.isfinite(strictness) and 0 <= strictness <= 1):
        raise OptionError(f"`strictness` must be between 0 and 1, got {strictness!r}")
    if num_clients < 1:
        raise OptionError(f"`num_clients` must be at least 1, got {num_clients}")
    check_feasible(len(values), num_clients, min_per_client)
    if not np.isfinite(values).all():
        first = int(np.flatnonzero(~np.isfinite(values))[0])
        raise OptionError(
            f"`partition_key` must be a finite number for every image; image {first} (in id order) is "
            f"{values[first]}"
        )
    spread = float(values.std())
    if strictness > 0 and spread == 0.0:
        raise OptionError(
            "`partition_key` has the same value for every image: nothing to rank by (use `strictness` 0 "
            "for IID, or another column)"
        )
    standardized = (values - values.mean()) / spread if spread > 0 else np.zeros_like(values)
    noise = np.random.default_rng(seed).standard_normal(len(values))
    blended = strictness * standardized + (1.0 - strictness) * noise
    order = np.argsort(blended, kind="stable")
    sizes = apportion(len(values), np.ones(num_clients))
    return deal(order, sizes)


def _is_missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


__all__ = ["column_names", "column_partition", "continuous_partition"]
