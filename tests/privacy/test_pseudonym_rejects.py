"""The rejects report under pseudonyms: no original id, path or file name, whatever its characters (issue 14).

Reasons are templates whose identifying values are fields of the reject: a pseudonymized report
replaces whole fields and never searches text, so a tab or a quote in a path cannot hide it, and a
label that merely contains a user id is not rewritten.
"""

from __future__ import annotations

import json
from pathlib import Path

from helpers import fast_options, photo, save_image, write_jsonl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedimage import convert, open_source
from fedimage.labels import Taxonomy
from fedimage.privacy import Pseudonymizer
from fedimage.privacy.pseudonyms import PseudonymizedSource
from fedimage.records import ImageRecord, Reject
from fedimage.sources.record_table import metadata_from_records
from fedimage.store.schema import rejects_path_for

KEY = bytes(range(32))
PSEUDONYMS = Pseudonymizer(KEY)
# Any character but '/' (a path separator), NUL (no file name holds it) and lone surrogates (rejected
# as text UTF-8 cannot hold); the «» around each name keep it from matching the report by chance.
NAMES = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="/\x00"), min_size=1, max_size=8)


def report_of(source, tmp_path: Path, image_ids: bool = True, taxonomy: Taxonomy | None = None):
    options = fast_options(pseudonyms=PSEUDONYMS, pseudonymize_image_ids=image_ids)
    report = convert(source, tmp_path / "out.h5", options, taxonomy=taxonomy)
    text = Path(rejects_path_for(str(report.output))).read_text(encoding="utf-8")
    return report, text, [json.loads(line) for line in text.splitlines()]


def assert_absent(originals: list[str], text: str, rows: list[dict], *, allowed: str = "") -> None:
    """No original, as it is or escaped (by JSON or by repr), in the report's bytes or in any value."""
    values = [
        str(value).replace(allowed, "") if allowed else str(value) for row in rows for value in row.values()
    ]
    for original in originals:
        forms = {original, json.dumps(original, ensure_ascii=False)[1:-1], repr(original)[1:-1]}
        for form in forms:
            assert form not in text.replace(json.dumps(allowed, ensure_ascii=False)[1:-1], ""), (
                original,
                form,
            )
            assert all(form not in value for value in values), (original, form)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(users=st.lists(NAMES, min_size=4, max_size=4, unique=True), name=NAMES)
def test_no_original_reaches_the_report_whatever_its_characters(tmp_path_factory, users, name):
    tmp_path = tmp_path_factory.mktemp("any")
    save_image(tmp_path / "ok.jpg", photo(40, 30))
    user = [f"«{text}»" for text in users]
    file = f"«{name}»"
    label = f"{user[2]}_label|x"
    rows = [
        {"image": f"../{file}.jpg", "user_id": user[0]},  # outside the folder: {path}
        {"image": f"missing/{file}.jpg", "user_id": user[1]},  # no such file: rejected by the decoder
        {"image": "ok.jpg", "user_id": user[2], "image_id": f"{file}-label", "labels": [label]},
        {"image": "ok.jpg", "user_id": user[3], "image_id": f"{file}-kept"},  # written
        {"image": "ok.jpg", "user_id": user[0], "image_id": f"{file}-kept"},  # a duplicate image id
        {"image": "", "user_id": user[1], "image_id": f"{file}-none"},  # no image path
    ]
    manifest = write_jsonl(tmp_path / "m.jsonl", rows)
    report, text, rejected = report_of(open_source(manifest), tmp_path)
    assert (report.inputs, report.written, len(rejected)) == (6, 1, 5)
    originals = [*user, file, f"{file}.jpg", f"../{file}.jpg", f"missing/{file}.jpg", str(tmp_path)]
    originals += [f"{file}-{kind}" for kind in ("label", "kept", "none")]
    assert_absent(originals, text, rejected, allowed=repr(label))
    by_origin = {row["origin"]: row for row in rejected}
    assert (
        by_origin["m.jsonl line 1"]["reason"]
        == "image path [path withheld] lies outside the manifest's folder"
    )
    assert by_origin["m.jsonl line 3"]["reason"] == f"label {label!r} contains '|', FLAIR's label separator"
    assert by_origin["m.jsonl line 3"]["user_id"] == PSEUDONYMS.user(user[2])
    duplicate = by_origin["m.jsonl line 5"]
    assert duplicate["reason"] == (
        f"duplicate image id {PSEUDONYMS.image(file + '-kept')!r} (first seen at m.jsonl line 4)"
    )
    assert {row["user_id"] for row in rejected} == {PSEUDONYMS.user(u) for u in (user[0], user[1], user[2])}
    assert all("path" not in row for row in rejected)


def test_the_cases_of_the_issue(tmp_path: Path):
    save_image(tmp_path / "scans" / "ok.jpg", photo(40, 30))
    rows = [
        {"image": "scans/ok.jpg", "user_id": "maryjones", "labels": ["maryjones_label"]},
        {"image": "../john\tsmith_scan.jpg", "user_id": "john\tsmith"},
        {"image": "scans/ok.jpg", "user_id": "carol", "image_id": "c1", "labels": ["cat"]},
    ]
    manifest = write_jsonl(tmp_path / "m.jsonl", rows)
    report, text, rejected = report_of(open_source(manifest), tmp_path, taxonomy=Taxonomy({"tabby": "cat"}))
    assert report.written == 1
    assert [(row["origin"], row["reason"]) for row in rejected] == [
        ("m.jsonl line 2", "image path [path withheld] lies outside the manifest's folder"),
        ("m.jsonl line 1", "label 'maryjones_label' is not a coarse label of the taxonomy"),
    ]
    assert "john" not in text and "smith" not in text
    assert [row["user_id"] for row in rejected] == [
        PSEUDONYMS.user("john\tsmith"),
        PSEUDONYMS.user("maryjones"),
    ]
    # Without pseudonyms, the same report names the path, escaped but whole.
    clear = convert(
        open_source(manifest), tmp_path / "clear.h5", fast_options(), taxonomy=Taxonomy({"tabby": "cat"})
    )
    assert clear.rejects[0].text == "image path '../john\\tsmith_scan.jpg' lies outside the manifest's folder"


def test_user_ids_only_keeps_image_ids_and_withholds_paths(tmp_path: Path):
    save_image(tmp_path / "ok.jpg", photo(40, 30))
    rows = [
        {"image": "../elsewhere/'quoted'\nname.jpg", "user_id": "alice 'a'", "image_id": "img-1"},
        {"image": "ok.jpg", "user_id": "bob\n", "image_id": "img-2", "labels": ["x|y"]},
    ]
    _, text, rejected = report_of(open_source(write_jsonl(tmp_path / "m.jsonl", rows)), tmp_path, False)
    assert_absent(["alice 'a'", "'quoted'\nname.jpg", "elsewhere", "bob"], text, rejected)
    assert [row["image_id"] for row in rejected] == ["img-1", "img-2"]


def test_a_folder_source_shows_image_pseudonyms_as_origins(tmp_path: Path):
    root = tmp_path / "people"
    save_image(root / "alice smith" / "holiday\trome.jpg", photo(40, 30))
    (root / "alice smith" / "loop").symlink_to(root, target_is_directory=True)
    (root / "john's scan.jpg").write_bytes(b"loose")
    report, text, rejected = report_of(open_source(root, layout="user"), tmp_path)
    assert (report.inputs, report.written) == (3, 1)
    assert_absent(["alice", "holiday", "john", "scan.jpg", str(root)], text, rejected)
    loop = PSEUDONYMS.image("alice smith/loop")
    assert {row["origin"] for row in rejected} == {loop, PSEUDONYMS.image("john's scan.jpg")}
    assert {row["origin"]: row.get("user_id") for row in rejected}[loop] == PSEUDONYMS.user("alice smith")


def test_scrub_is_idempotent_and_withholds_a_decoders_text_that_names_the_input():
    metadata = metadata_from_records([ImageRecord("/data/kim/a.jpg", "a.jpg", "kim", origin="m.csv line 2")])
    source = PseudonymizedSource(metadata, PSEUDONYMS, image_ids=True)
    rejects = [
        Reject("m.csv line 3", "row has no image path", user_id="lee", stage="source"),  # not in the table
        Reject(
            "m.csv line 2",
            "unexpected error while decoding: OSError: cannot open '/data/kim/a.jpg'",
            image_id=PSEUDONYMS.image("a.jpg"),  # rejected after planning: ids are pseudonyms already
            path="/data/kim/a.jpg",
            user_id=PSEUDONYMS.user("kim"),
            stage="image",
        ),
        Reject("m.csv line 4", "corrupt JPEG data: premature end", path="/data/kim/b.jpg", stage="image"),
    ]
    once = source.scrub(rejects)
    assert source.scrub(once) == once
    assert [(r.user_id, r.image_id, r.path) for r in once] == [
        (PSEUDONYMS.user("lee"), None, None),
        (PSEUDONYMS.user("kim"), PSEUDONYMS.image("a.jpg"), None),
        (None, None, None),
    ]
    assert [r.text for r in once] == [
        "row has no image path",
        "unexpected error while decoding (details withheld: they name the input)",
        "corrupt JPEG data: premature end",
    ]
