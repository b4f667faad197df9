"""Taxonomy files, split ratios, user split assignment and per-user caps."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedimage.conversion.splits import SplitRatios, assign_splits, choose_capped, split_counts
from fedimage.errors import OptionError, SourceError
from fedimage.labels import label_mapping, load_taxonomy


class TestTaxonomyFiles:
    # (file text, expected mapping)
    CASES = [
        ("ice cream -> food\ncat -> animal\n", {"ice cream": "food", "cat": "animal"}),
        ("ice cream\tfood\n# comment\n\ncat\tanimal\n", {"ice cream": "food", "cat": "animal"}),
        ("ice cream,food\ncat, animal\n", {"ice cream": "food", "cat": "animal"}),
        ("cat animal\ndog   animal\n", {"cat": "animal", "dog": "animal"}),
        ('{"cat": "animal", "rose": "plant"}', {"cat": "animal", "rose": "plant"}),
    ]

    @pytest.mark.parametrize(("text", "expected"), CASES)
    def test_formats(self, tmp_path: Path, text, expected):
        path = tmp_path / "taxonomy.txt"
        path.write_text(text)
        taxonomy = load_taxonomy(path)
        assert taxonomy.fine_to_coarse == dict(sorted(expected.items()))
        assert taxonomy.coarse_labels == sorted(set(expected.values()))

    def test_derives_coarse_labels(self, tmp_path: Path):
        path = tmp_path / "t.txt"
        path.write_text("cat -> animal\ndog -> animal\nrose -> plant\n")
        assert load_taxonomy(path).coarse_of(["rose", "dog", "cat"]) == ("animal", "plant")


class TestTaxonomyErrors:
    # (file text or None for a missing file, message pattern)
    CASES = [
        (None, "taxonomy file not found"),
        ("", "holds no"),
        ("cat -> animal\ncat -> plant\n", "mapped to both 'animal' and 'plant'"),
        ("just-one-word\n", "line 1: expected 'fine -> coarse'"),
        ('{"cat": 3}', "JSON object of strings"),
        ("{broken", "not valid JSON"),
    ]

    @pytest.mark.parametrize(("text", "message"), CASES)
    def test_errors(self, tmp_path: Path, text, message):
        path = tmp_path / "taxonomy.txt"
        if text is not None:
            path.write_text(text)
        with pytest.raises(SourceError, match=message):
            load_taxonomy(path)


def test_label_mapping_is_alphabetical_like_flair():
    assert label_mapping(["structure", "animal", "food", "animal"]) == {
        "animal": 0,
        "food": 1,
        "structure": 2,
    }


class TestSplitRatios:
    def test_parse_forms(self):
        assert SplitRatios.parse("0.8,0.1,0.1") == SplitRatios()
        named = SplitRatios.parse("train=0.9, test=0.1")
        assert named.names == ("train", "test") and named.ratios == (0.9, 0.1)

    @pytest.mark.parametrize(
        ("text", "message"),
        [
            ("0.8,0.1", "three ratios"),
            ("0.8,0.3,0.1", "sum to 1"),
            ("0.8,x,0.1", "must be numbers"),
            ("1.2,-0.1,-0.1", "non-negative"),
            ("train=0.5,metadata=0.5", "invalid split name"),
        ],
    )
    def test_bad_ratios(self, text, message):
        with pytest.raises(OptionError, match=message):
            SplitRatios.parse(text)


@given(
    st.integers(0, 5000),
    st.sampled_from([(0.8, 0.1, 0.1), (0.5, 0.5, 0.0), (1 / 3, 1 / 3, 1 / 3), (0.98, 0.01, 0.01)]),
)
def test_split_counts_add_up_and_cover_positive_splits(total, ratios):
    counts = split_counts(total, ratios)
    assert sum(counts) == total
    positive = sum(1 for ratio in ratios if ratio > 0)
    if total >= 2 * positive:
        assert all(count > 0 for count, ratio in zip(counts, ratios, strict=True) if ratio > 0)
    for count, ratio in zip(counts, ratios, strict=True):
        assert abs(count - total * ratio) <= 2


@given(
    st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=60, unique=True), st.integers(0, 2**32 - 1)
)
def test_assign_splits_ignores_input_order_and_never_splits_a_user(users, seed):
    forward = assign_splits(users, SplitRatios(), seed)
    backward = assign_splits(list(reversed(users)), SplitRatios(), seed)
    assert forward == backward
    assert set(forward) == set(users)
    assert set(forward.values()) <= {"train", "val", "test"}


def test_flair_split_proportions():
    users = [f"user{i}" for i in range(51_414)]
    counts = {name: 0 for name in ("train", "val", "test")}
    for split in assign_splits(users, SplitRatios(), seed=0).values():
        counts[split] += 1
    assert counts == {"train": 41_131, "val": 5_142, "test": 5_141}


def test_seed_changes_assignment():
    users = [f"u{i}" for i in range(100)]
    assert assign_splits(users, SplitRatios(), 1) != assign_splits(users, SplitRatios(), 2)


def test_cap_choice_is_seeded_per_user():
    first = choose_capped(100, 10, seed=3, user_id="alice")
    assert first == sorted(first) and len(set(first)) == 10
    assert first == choose_capped(100, 10, seed=3, user_id="alice")
    assert first != choose_capped(100, 10, seed=4, user_id="alice")
    assert choose_capped(5, 10, seed=3, user_id="alice") == [0, 1, 2, 3, 4]
