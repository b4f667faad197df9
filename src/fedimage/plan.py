"""Turn a source's records into a conversion plan: validated, grouped by user, split, capped.

Everything here works on metadata only and is deterministic: the same records
and options give the same plan whatever order the source yields them in
(except which of two duplicate image ids is kept: the first one seen).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

import numpy as np

from fedimage.errors import OptionError
from fedimage.records import ImageRecord, Reject
from fedimage.splits import (
    DEFAULT_SPLIT_NAMES,
    SplitRatios,
    assign_splits,
    check_split_name,
    choose_capped,
)
from fedimage.taxonomy import LABEL_JOIN, Taxonomy


@dataclass(frozen=True, slots=True)
class PlanOptions:
    """Options that decide which image goes to which user and split."""

    split: SplitRatios = field(default_factory=SplitRatios)
    seed: int = 0
    max_images_per_user: int | None = None
    num_clients: int = 10

    def __post_init__(self) -> None:
        if self.max_images_per_user is not None and self.max_images_per_user < 1:
            raise OptionError(f"--max-images-per-user must be at least 1, got {self.max_images_per_user}")
        if self.num_clients < 1:
            raise OptionError(f"--num-clients must be at least 1, got {self.num_clients}")


@dataclass(frozen=True, slots=True)
class UserPlan:
    """One user group of the store, with its images in store order."""

    split: str
    user_id: str
    images: tuple[ImageRecord, ...]


@dataclass
class ConversionPlan:
    users: list[UserPlan]
    rejects: list[Reject]
    inputs: int
    coarse_labels: list[str]
    fine_labels: list[str]
    users_assigned: bool = False

    @property
    def planned_images(self) -> int:
        return sum(len(user.images) for user in self.users)


def make_plan(
    records: Iterable[ImageRecord | Reject],
    options: PlanOptions,
    *,
    has_users: bool = True,
    taxonomy: Taxonomy | None = None,
) -> ConversionPlan:
    """Validate every record and lay out users, splits and caps."""
    rejects: list[Reject] = []
    accepted: list[ImageRecord] = []
    first_seen: dict[str, str] = {}
    inputs = 0
    for item in records:
        inputs += 1
        if isinstance(item, Reject):
            rejects.append(item)
            continue
        record, reason = _validate(item, has_users, taxonomy)
        if reason is None and record.image_id in first_seen:
            reason = f"duplicate image id {record.image_id!r} (first seen at {first_seen[record.image_id]})"
        if reason is not None:
            rejects.append(_reject(item, reason, "source"))
            continue
        first_seen[record.image_id] = record.origin
        accepted.append(record)

    if not has_users:
        accepted = _assign_clients(accepted, options)
    by_user: dict[str, list[ImageRecord]] = defaultdict(list)
    for record in accepted:
        by_user[record.user_id].append(record)

    partitions = _user_partitions(by_user, options)
    users: list[UserPlan] = []
    for user_id, images in by_user.items():
        images.sort(key=lambda record: record.image_id)
        cap = options.max_images_per_user
        if cap is not None and len(images) > cap:
            keep = set(choose_capped(len(images), cap, options.seed, user_id))
            for index, record in enumerate(images):
                if index not in keep:
                    reason = f"over --max-images-per-user {cap} (user has {len(images)} images)"
                    rejects.append(_reject(record, reason, "cap"))
            images = [record for index, record in enumerate(images) if index in keep]
        for split_name, split_images in _by_partition(images, partitions[user_id]).items():
            users.append(UserPlan(split_name, user_id, tuple(split_images)))

    split_rank = {name: rank for rank, name in enumerate(DEFAULT_SPLIT_NAMES)}
    users.sort(key=lambda user: (split_rank.get(user.split, len(split_rank)), user.split, user.user_id))
    planned = [record for user in users for record in user.images]
    coarse = {label for record in planned for label in record.labels}
    fine = {label for record in planned for label in record.fine_labels}
    if taxonomy is not None:
        coarse.update(taxonomy.coarse_labels)
        fine.update(taxonomy.fine_labels)
    return ConversionPlan(
        users=users,
        rejects=rejects,
        inputs=inputs,
        coarse_labels=sorted(coarse),
        fine_labels=sorted(fine),
        users_assigned=not has_users,
    )


def _reject(record: ImageRecord, reason: str, stage: str) -> Reject:
    return Reject(
        origin=record.origin,
        reason=reason,
        image_id=record.image_id or None,
        path=record.path or None,
        user_id=record.user_id or None,
        stage=stage,
    )


def _validate(
    record: ImageRecord, has_users: bool, taxonomy: Taxonomy | None
) -> tuple[ImageRecord, str | None]:
    """The record with derived labels, and the reason it is unusable (None if usable)."""
    if not record.image_id:
        return record, "row has no image id"
    if has_users and not record.user_id:
        return record, "row has no user id"
    if record.partition is not None:
        if not record.partition:
            return record, "row has no partition value"
        try:
            check_split_name(record.partition)
        except OptionError as error:
            return record, str(error)
    for label in (*record.labels, *record.fine_labels):
        if LABEL_JOIN in label:
            return record, f"label {label!r} contains {LABEL_JOIN!r}, FLAIR's label separator"
    if taxonomy is None:
        return record, None
    unknown = [label for label in record.fine_labels if label not in taxonomy.fine_to_coarse]
    if unknown:
        return record, f"fine label {unknown[0]!r} is not in the taxonomy"
    known_coarse = set(taxonomy.coarse_labels)
    unknown = [label for label in record.labels if label not in known_coarse]
    if unknown:
        return record, f"label {unknown[0]!r} is not a coarse label of the taxonomy"
    if not record.labels and record.fine_labels:
        record = replace(record, labels=taxonomy.coarse_of(record.fine_labels))
    return record, None


def _assign_clients(records: list[ImageRecord], options: PlanOptions) -> list[ImageRecord]:
    """IID users for collections without any: a seeded shuffle dealt into equal clients."""
    ordered = sorted(records, key=lambda record: record.image_id)
    count = min(options.num_clients, max(1, len(ordered)))
    width = len(str(count - 1))
    permutation = np.random.default_rng(options.seed).permutation(len(ordered))
    assigned: list[ImageRecord] = []
    for client, positions in enumerate(np.array_split(permutation, count)):
        for position in positions:
            assigned.append(replace(ordered[position], user_id=f"client_{client:0{width}d}"))
    return assigned


def _user_partitions(by_user: dict[str, list[ImageRecord]], options: PlanOptions) -> dict[str, str | None]:
    """Each user's split from the source, or None when its rows carry partitions."""
    given = {user for user, images in by_user.items() if images[0].partition is not None}
    assigned = assign_splits([user for user in by_user if user not in given], options.split, options.seed)
    return {user: (None if user in given else assigned[user]) for user in by_user}


def _by_partition(images: list[ImageRecord], split: str | None) -> dict[str, list[ImageRecord]]:
    if split is not None:
        return {split: images}
    groups: dict[str, list[ImageRecord]] = defaultdict(list)
    for record in images:
        groups[record.partition or ""].append(record)
    return dict(groups)
