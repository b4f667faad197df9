"""The columnar record table and the plan built on it, against the per-record reference behaviour."""

from __future__ import annotations

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from fedimage.conversion.plan import PlanOptions, make_plan
from fedimage.labels import Taxonomy
from fedimage.records import ImageRecord, Reject
from fedimage.sources.base import parse_label_list
from fedimage.sources.record_table import clean_label_lists, metadata_from_records, records_of

label = st.sampled_from(["cat", " cat", "dog ", "", "  ", "bird", "a b"])
label_lists = st.lists(st.one_of(st.none(), st.lists(st.one_of(st.none(), label), max_size=6)), max_size=30)


@settings(max_examples=200, deadline=None)
@given(label_lists)
def test_clean_label_lists_matches_the_per_row_parser(values):
    column = pa.array(values, type=pa.list_(pa.string()))
    expected = [list(parse_label_list(value or [], "|")) for value in values]
    assert clean_label_lists(column, "|").to_pylist() == expected


@settings(max_examples=100, deadline=None)
@given(st.lists(st.one_of(st.none(), st.lists(label, max_size=4).map("|".join)), max_size=30))
def test_joined_label_strings_are_split_and_cleaned(values):
    expected = [list(parse_label_list(value, "|")) for value in values]
    assert clean_label_lists(pa.array(values, pa.string()), "|").to_pylist() == expected


def record(index: int, user: str, labels=(), fine=(), partition=None, image_id=None) -> ImageRecord:
    image_id = f"img{index:03d}" if image_id is None else image_id
    return ImageRecord(f"/x/{index}.jpg", image_id, user, labels, fine, partition, f"row {index}", index)


def test_records_round_trip_through_the_table():
    records = [record(0, "u", ("a",), ("x", "y"), "train"), record(1, "v")]
    metadata = metadata_from_records([records[0], Reject("row 9", "broken"), records[1]])
    assert metadata.inputs == 3 and [r.reason for r in metadata.rejects] == ["broken"]
    assert records_of(metadata.table) == records


def test_every_invalid_row_is_rejected_with_its_first_reason():
    taxonomy = Taxonomy({"x": "A", "y": "B"})
    records = [
        record(0, "u", fine=("x",)),
        record(1, "", fine=("x",)),  # no user
        record(2, "u", image_id=""),  # no id
        record(3, "u", fine=("zzz",)),  # unknown fine label
        record(4, "u", labels=("Q",), fine=("y",)),  # unknown coarse label
        record(5, "u", labels=("a|b",)),  # separator inside a label
        record(6, "v", fine=("y",), image_id="img000"),  # duplicate id of row 0
    ]
    plan = make_plan(records, PlanOptions(), taxonomy=taxonomy)
    reasons = {reject.origin: reject.text for reject in plan.rejects}
    assert reasons == {
        "row 1": "row has no user id",
        "row 2": "row has no image id",
        "row 3": "fine label 'zzz' is not in the taxonomy",
        "row 4": "label 'Q' is not a coarse label of the taxonomy",
        "row 5": "label 'a|b' contains '|', FLAIR's label separator",
        "row 6": "duplicate image id 'img000' (first seen at row 0)",
    }
    assert plan.inputs == 7 and plan.planned_images == 1
    (kept,) = plan.records()
    assert kept.labels == ("A",) and kept.fine_labels == ("x",)  # coarse derived from fine


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from("uvwxyz"), st.integers(0, 40)), min_size=1, max_size=60),
    st.randoms(use_true_random=False),
    st.integers(1, 5),
)
def test_plan_is_independent_of_row_order(rows, random, cap):
    records = [record(index, user, image_id=f"i{number}") for index, (user, number) in enumerate(rows)]
    first_ids = {r.image_id: r for r in reversed(records)}  # duplicates: the first row seen wins
    records = [r for r in records if first_ids[r.image_id] is r]
    shuffled = list(records)
    random.shuffle(shuffled)
    options = PlanOptions(seed=3, max_images_per_user=cap)

    def layout(plan):
        return [(u.split, u.user_id, [r.image_id for r in plan.user_records(u)]) for u in plan.users]

    a, b = make_plan(records, options), make_plan(shuffled, options)
    assert layout(a) == layout(b)
    assert a.planned_images + len(a.rejects) == len(records)
    for user in a.users:
        ids = [r.image_id for r in a.user_records(user)]
        assert ids == sorted(ids) and len(ids) <= cap
