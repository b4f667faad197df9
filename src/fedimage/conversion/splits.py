"""Assigning users to train/val/test splits, and capping images per user."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fedimage.errors import OptionError

DEFAULT_SPLIT_NAMES = ("train", "val", "test")


@dataclass(frozen=True, slots=True)
class SplitRatios:
    """Fractions of users per split, e.g. FLAIR's train 0.8 / val 0.1 / test 0.1."""

    names: tuple[str, ...] = DEFAULT_SPLIT_NAMES
    ratios: tuple[float, ...] = (0.8, 0.1, 0.1)

    def __post_init__(self) -> None:
        if len(self.names) != len(self.ratios) or not self.names:
            raise OptionError("`split` needs one ratio per split name")
        if any(ratio < 0 or not math.isfinite(ratio) for ratio in self.ratios):
            raise OptionError(f"`split` ratios must be non-negative numbers, got {self.ratios}")
        if abs(sum(self.ratios) - 1.0) > 1e-6:
            raise OptionError(f"`split` ratios must sum to 1, got {sum(self.ratios):g}")
        for name in self.names:
            check_split_name(name)

    @classmethod
    def parse(cls, text: str) -> SplitRatios:
        """Parse ``0.8,0.1,0.1`` (train,val,test) or ``train=0.9,test=0.1``."""
        parts = [part.strip() for part in text.split(",") if part.strip()]
        try:
            if all("=" in part for part in parts):
                pairs = [part.split("=", 1) for part in parts]
                return cls(tuple(n.strip() for n, _ in pairs), tuple(float(v) for _, v in pairs))
            if len(parts) != 3:
                raise OptionError(
                    f"`split` takes three ratios train,val,test (or name=ratio pairs), got {text!r}"
                )
            return cls(DEFAULT_SPLIT_NAMES, tuple(float(part) for part in parts))
        except ValueError as error:
            if isinstance(error, OptionError):
                raise
            raise OptionError(f"`split` ratios must be numbers, got {text!r}") from None


def check_split_name(name: str) -> None:
    """Split names become HDF5 groups beside /metadata."""
    if not name or "/" in name or name in (".", "metadata"):
        raise OptionError(f"invalid split name {name!r}: must be non-empty, no '/', not 'metadata'")


def split_counts(total: int, ratios: Sequence[float]) -> list[int]:
    """Users per split by largest remainder; a positive ratio gets a user when possible."""
    exact = [total * ratio for ratio in ratios]
    counts = [math.floor(value) for value in exact]
    order = sorted(range(len(ratios)), key=lambda i: (-(exact[i] - counts[i]), i))
    for index in order[: total - sum(counts)]:
        counts[index] += 1
    for index, ratio in enumerate(ratios):
        if ratio > 0 and counts[index] == 0:
            donor = max(range(len(counts)), key=lambda i: (counts[i], -i))
            if counts[donor] > 1:
                counts[donor] -= 1
                counts[index] += 1
    return counts


def assign_splits(user_ids: Sequence[str], split: SplitRatios, seed: int) -> dict[str, str]:
    """A seeded, input-order-independent assignment of each user to one split."""
    users = sorted(set(user_ids))
    order = np.random.default_rng(seed).permutation(len(users))
    assignment: dict[str, str] = {}
    start = 0
    for name, count in zip(split.names, split_counts(len(users), split.ratios), strict=True):
        for position in order[start : start + count]:
            assignment[users[position]] = name
        start += count
    return assignment


def user_rng(seed: int, user_id: str) -> np.random.Generator:
    """A generator for one user's random choices, independent of other users."""
    digest = hashlib.sha256(user_id.encode("utf-8")).digest()
    return np.random.default_rng([seed, int.from_bytes(digest[:8], "little")])


def choose_capped(count: int, cap: int, seed: int, user_id: str) -> list[int]:
    """Indices (sorted) of the ``cap`` images a user keeps out of ``count``."""
    if count <= cap:
        return list(range(count))
    chosen = user_rng(seed, user_id).choice(count, size=cap, replace=False)
    return sorted(int(index) for index in chosen)
