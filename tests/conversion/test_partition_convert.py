"""Partition schemes inside a conversion: clients made from images, regrouped users, the CLI options."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest
from helpers import photo, save_image

import fedimage
from fedimage.cli import main
from fedimage.conversion.plan import PlanOptions, make_plan
from fedimage.conversion.splits import SplitRatios
from fedimage.errors import OptionError
from fedimage.partitioning import PartitionOptions
from fedimage.records import ImageRecord

ALL_TRAIN = SplitRatios(("train",), (1.0,))


def records(count: int, users: bool = False, partition: str | None = None) -> list[ImageRecord]:
    """``count`` images with one of 5 labels each (label = index % 5)."""
    return [
        ImageRecord(
            f"/x/{index}.jpg",
            f"img{index:04d}",
            f"user{index % 7}" if users else "",
            (f"label{index % 5}",),
            (),
            partition,
            f"row {index}",
            index,
        )
        for index in range(count)
    ]


def clients_of(plan) -> dict[str, str]:
    return {record.image_id: record.user_id for record in plan.iter_records()}


def test_dirichlet_clients_are_label_skewed_and_row_order_independent():
    options = PlanOptions(
        split=ALL_TRAIN, partition=PartitionOptions("dirichlet", num_clients=8, alpha=0.1, min_per_client=5)
    )
    rows = records(400)
    shuffled = random.Random(1).sample(rows, len(rows))
    plan = make_plan(rows, options, has_users=False)
    assert clients_of(plan) == clients_of(make_plan(shuffled, options, has_users=False))
    assert len(plan.users) == 8 and min(user.size for user in plan.users) >= 5
    # With alpha 0.1 most clients are dominated by one label.
    dominant = []
    for user in plan.users:
        counts = Counter(record.labels[0] for record in plan.user_records(user))
        dominant.append(counts.most_common(1)[0][1] / user.size)
    assert sorted(dominant)[len(dominant) // 2] > 0.6


def test_a_scheme_replaces_natural_users_and_keeps_client_ids_across_partitions():
    rows = records(200, users=True, partition="train") + [
        ImageRecord(f"/t/{i}.jpg", f"test{i:03d}", "user0", (f"label{i % 5}",), (), "test", f"t {i}", 200 + i)
        for i in range(100)
    ]
    options = PlanOptions(partition=PartitionOptions("iid", num_clients=4))
    plan = make_plan(rows, options)
    assert plan.users_assigned
    by_split: dict[str, set[str]] = {}
    for user in plan.users:
        by_split.setdefault(user.split, set()).add(user.user_id)
    assert by_split == {"train": {f"client_{i}" for i in range(4)}, "test": {f"client_{i}" for i in range(4)}}


def test_group_size_merges_natural_users():
    plan = make_plan(records(70, users=True), PlanOptions(split=ALL_TRAIN, group_size=3))
    assert sorted(user.user_id for user in plan.users) == ["group_0", "group_1", "group_2"]
    assert sorted(user.size for user in plan.users) == [10, 30, 30]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (lambda: PlanOptions(group_size=0), "`group_size` must be at least 1"),
        (lambda: PlanOptions(skew_label="most"), "`skew_label` must be one of"),
        (
            lambda: PlanOptions(group_size=2, partition=PartitionOptions("iid")),
            "cannot be combined with `partition`",
        ),
    ],
)
def test_bad_partition_options_are_clear_errors(options, message):
    with pytest.raises(OptionError, match=message):
        options()


def test_group_size_needs_users():
    with pytest.raises(OptionError, match="this source has none"):
        make_plan(records(10), PlanOptions(group_size=2), has_users=False)


def test_impossible_minimum_is_a_clear_error():
    options = PlanOptions(partition=PartitionOptions("dirichlet", num_clients=10, min_per_client=50))
    with pytest.raises(OptionError):
        make_plan(records(100), options, has_users=False)


def test_cli_partition_options(tmp_path: Path):
    for label in ("cat", "dog", "owl"):
        for index in range(12):
            save_image(tmp_path / "src" / label / f"{label}{index}.png", photo(24, 24, seed=index))
    output = tmp_path / "out.h5"
    status = main(
        [
            "convert", str(tmp_path / "src"), "-o", str(output), "--layout", "class", "--size", "32",
            "--partition", "pathological", "--classes-per-client", "1", "--num-clients", "3",
            "--split", "1,0,0", "--workers", "1", "--quiet",
        ]
    )  # fmt: skip
    assert status == 0
    with fedimage.open(output) as store:
        assert store.manifest["options"]["partition"]["scheme"] == "pathological"
        for user in store.iter_users("train"):
            assert (user.labels.sum(axis=0) > 0).sum() == 1  # one label per client
    status = main(["convert", str(tmp_path / "src"), "-o", str(output), "--partition", "natural"])
    assert status == 2  # a class folder tree has no users


def test_the_plan_has_one_seed():
    plan = PlanOptions(seed=5, partition=PartitionOptions("iid", num_clients=3))
    assert plan.partition is not None and plan.partition.seed == 5
    with pytest.raises(OptionError, match=r"`partition.seed` .* differs from `seed`"):
        PlanOptions(seed=5, partition=PartitionOptions("iid", seed=7))
