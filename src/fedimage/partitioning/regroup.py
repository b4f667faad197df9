"""Regrouping natural users: merge users into seeded groups of ``group_size``."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedimage.errors import OptionError


def group_users(user_ids: Sequence[str], group_size: int, seed: int = 0) -> dict[str, int]:
    """``{user: group}``: distinct users sorted, shuffled by ``seed`` and cut into groups of
    ``group_size`` users (the last group holds the remainder). Independent of input order."""
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
        raise OptionError(f"group_size must be an integer >= 1, got {group_size!r}")
    users = sorted(set(user_ids))
    shuffled = np.random.default_rng(seed).permutation(len(users))
    return {users[index]: position // group_size for position, index in enumerate(shuffled.tolist())}


def regroup(image_users: Sequence[str], group_size: int, seed: int = 0) -> np.ndarray:
    """Group (client) index per image, from each image's natural user."""
    groups = group_users(image_users, group_size, seed)
    return np.fromiter((groups[user] for user in image_users), dtype=np.int64, count=len(image_users))
