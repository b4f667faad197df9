"""The streaming JSON-array reader against json.loads, across buffer boundaries."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedimage.errors import SourceError
from fedimage.sources.json_stream import iter_json_array

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=8))
items = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=150, deadline=None)
@given(st.lists(items, max_size=12), st.sampled_from([None, 0, 2]), st.integers(1, 64))
def test_items_match_json_loads(tmp_path_factory, values, indent, read_bytes):
    path = tmp_path_factory.mktemp("json") / "items.json"
    path.write_text(json.dumps(values, indent=indent, ensure_ascii=False), encoding="utf-8")
    assert list(iter_json_array(path, read_bytes=read_bytes)) == values


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"a": 1}', "must hold a JSON list"),
        ("", "must hold a JSON list"),
        ('[{"a": 1}, {"b": ]', "invalid JSON in item 1"),
        ('[{"a": 1} {"b": 2}]', "expected ',' or ']' after item 0, found '{'"),
        ('[{"a": 1},', "invalid JSON in item 1"),
        ('[{"a": 1}', "expected ',' or ']' after item 0, found the end of the file"),
    ],
)
def test_malformed_files_name_the_item(tmp_path: Path, text: str, message: str):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(SourceError, match=message.replace("[", r"\[").replace("]", r"\]")):
        list(iter_json_array(path, read_bytes=4))
