"""Assigning users (or each user's images) to train/val/test splits, sampling and capping users.

Three ways to split (see ``docs/splits.md``): whole users at random (:func:`assign_splits`,
FLAIR's way), whole users balanced on labels and image counts (:func:`assign_stratified`), or
each user's images (:func:`split_images`, a user then holds data in every split). Everything
is seeded and independent of the order users or images are given in.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fedimage.errors import OptionError

DEFAULT_SPLIT_NAMES = ("train", "val", "test")
#: What a split divides: whole users (``user``, FLAIR's way) or each user's images (``image``).
SPLIT_LEVELS = ("user", "image")
#: What a stratified user split balances: coarse labels (``labels``) or fine labels (``fine-labels``).
STRATIFY_LEVELS = ("labels", "fine-labels")
#: Streams of :func:`user_rng` (a cap keeps the empty stream of earlier versions, and their bytes).
_SPLIT_STREAM = "split"
#: A fixed second seed word, so that sampling users draws apart from shuffling them into splits.
_SAMPLE_STREAM = 0x7361_6D70  # "samp"


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


def user_rng(seed: int, user_id: str, stream: str = "") -> np.random.Generator:
    """A generator for one user's random choices, independent of other users.

    ``stream`` names a purpose (``""``: the cap's), so that two choices about one user
    (which images it keeps, which split each goes to) draw independently.

    Example::

        user_rng(0, "alice").permutation(5)  # the same for seed 0 and alice, whatever else there is
    """
    key = user_id if not stream else f"{stream}\0{user_id}"
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return np.random.default_rng([seed, int.from_bytes(digest[:8], "little")])


def choose_capped(count: int, cap: int, seed: int, user_id: str) -> list[int]:
    """Indices (sorted) of the ``cap`` images a user keeps out of ``count``."""
    if count <= cap:
        return list(range(count))
    chosen = user_rng(seed, user_id).choice(count, size=cap, replace=False)
    return sorted(int(index) for index in chosen)


def split_images(count: int, split: SplitRatios, seed: int, user_id: str) -> np.ndarray:
    """The split (an index into ``split.names``) of each of a user's ``count`` images.

    Images are given sorted by image id. Counts per split come from :func:`split_counts` (largest
    remainder), so a user with at least as many images as there are splits with a positive ratio
    has at least one image in each; which images go where is drawn by :func:`user_rng` (seeded by
    ``seed`` and the user), so it does not depend on other users or on the order of the source.

    Parameters:
        count: the user's images.
        split: the split names and ratios.
        seed: the plan's seed.
        user_id: the user (or client) whose images these are.

    Example::

        split_images(10, SplitRatios(), seed=0, user_id="alice")  # eight 0s (train), one 1, one 2
    """
    result = np.empty(count, dtype=np.int64)
    order = user_rng(seed, user_id, _SPLIT_STREAM).permutation(count)
    start = 0
    for index, size in enumerate(split_counts(count, split.ratios)):
        result[order[start : start + size]] = index
        start += size
    return result


def sample_users(user_ids: Sequence[str], count: int, seed: int) -> set[str]:
    """``count`` of the distinct users (all when there are no more), seeded, independent of input order.

    Parameters:
        user_ids: the users to sample from (repeats are one user).
        count: how many to keep.
        seed: the plan's seed.

    Example::

        sample_users(["a", "b", "c", "d"], 2, seed=0)  # two of them, the same two for seed 0
    """
    users = sorted(set(user_ids))
    if count >= len(users):
        return set(users)
    chosen = np.random.default_rng([seed, _SAMPLE_STREAM]).choice(len(users), size=count, replace=False)
    return {users[index] for index in chosen.tolist()}


def assign_stratified(
    user_ids: Sequence[str],
    sizes: Sequence[int] | np.ndarray,
    occurrences: tuple[np.ndarray, np.ndarray],
    split: SplitRatios,
    seed: int,
) -> dict[str, str]:
    """Whole users assigned to splits so that each split's label counts and image count follow the whole.

    Greedy deficit filling: users are taken largest first (ties in a seeded random order), and each
    goes, among the splits still short of their share of the images, to the one whose fit it
    improves most, the fit being the chi-square distance of every split's label counts and image
    count from their share of the whole (a split's share of a label is its ratio times the label's
    count). A user never crosses splits; a split with a positive ratio gets a user when there are
    enough users (the last users go to splits still empty).

    Parameters:
        user_ids: the distinct users.
        sizes: images of each user.
        occurrences: (user index, label index) arrays, one entry per label of each image.
        split: split names and ratios (of images, here).
        seed: orders users of the same size.

    Example::

        users, sizes = ["a", "b", "c"], [3, 2, 1]
        pairs = (np.array([0, 0, 1, 2]), np.array([0, 1, 1, 0]))
        assign_stratified(users, sizes, pairs, SplitRatios(), seed=0)  # {"a": "train", ...}
    """
    names = list(user_ids)
    if len(set(names)) != len(names):
        raise OptionError("`assign_stratified` needs distinct user ids")
    count = len(names)
    if not count:
        return {}
    sizes = np.asarray(sizes, dtype=np.float64)
    user_of, label_of = (np.asarray(values, dtype=np.int64) for values in occurrences)
    # Rank users by name, so that ties are broken the same way whatever the input order.
    by_name = sorted(range(count), key=names.__getitem__)
    tiebreak = np.empty(count, dtype=np.int64)
    tiebreak[by_name] = np.random.default_rng(seed).permutation(count)
    order = np.lexsort((tiebreak, -sizes))

    positive = [index for index, ratio in enumerate(split.ratios) if ratio > 0]
    ratios = np.array([split.ratios[index] for index in positive])
    num_labels = int(label_of.max()) + 1 if len(label_of) else 0
    keys, counts = np.unique(user_of * max(num_labels, 1) + label_of, return_counts=True)
    pair_user, pair_label = keys // max(num_labels, 1), keys % max(num_labels, 1)
    offsets = np.searchsorted(pair_user, np.arange(count + 1))
    label_totals = np.bincount(pair_label, weights=counts, minlength=num_labels)
    label_target = ratios[:, None] * label_totals[None, :]  # [S, L]
    image_target = np.maximum(ratios * sizes.sum(), 1e-9)  # [S]
    label_have = np.zeros_like(label_target)
    image_have = np.zeros(len(positive))
    members = np.zeros(len(positive), dtype=np.int64)
    chosen = np.empty(count, dtype=np.int64)
    for position, user in enumerate(order.tolist()):
        labels = pair_label[offsets[user] : offsets[user + 1]]
        amount = counts[offsets[user] : offsets[user + 1]].astype(np.float64)
        target = label_target[:, labels]
        # Increase of sum (have - target)^2 / target when this user's counts are added to a split.
        cost = ((2 * amount * (label_have[:, labels] - target) + amount**2) / target).sum(axis=1)
        size = sizes[user]
        cost += (2 * size * (image_have - image_target) + size**2) / image_target
        full = image_have >= image_target
        if not full.all():  # a split that has its share of the images takes no more users
            cost[full] = np.inf
        empty = members == 0
        if count - position <= empty.sum():  # as many users left as empty splits: fill those
            cost[~empty] = np.inf
        best = int(np.argmin(cost))
        chosen[user] = best
        label_have[best, labels] += amount
        image_have[best] += size
        members[best] += 1
    return {name: split.names[positive[chosen[index]]] for index, name in enumerate(names)}
