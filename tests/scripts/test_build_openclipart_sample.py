"""Tests for scripts/build_openclipart_sample.py and the committed Open Clip Art sample.

The script is exercised on a tiny synthetic Open Clip Art-like tree, so these tests do not
need Debian's openclipart-svg/openclipart-png packages.  They do not import fedimage.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "build_openclipart_sample.py"
SAMPLE = REPO / "src" / "fedimage" / "data" / "openclipart_sample"
MANIFEST_KEYS = ["image", "image_id", "user_id", "labels", "fine_grained_labels"]


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_openclipart_sample", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


bos = _load_script()


# --------------------------------------------------------------------------- fixture


def _svg(creator: str | None, keywords: list[str], license_uri: str = "") -> str:
    creator_xml = (
        f"<dc:creator><cc:Agent><dc:title>{creator}</dc:title></cc:Agent></dc:creator>"
        if creator is not None
        else ""
    )
    items = "".join(f"<rdf:li>{kw}</rdf:li>" for kw in keywords)
    license_uri = license_uri or "http://web.resource.org/cc/PublicDomain"
    return f"""<?xml version="1.0" encoding="UTF-8" standalone="no"?>
<svg xmlns="http://www.w3.org/2000/svg" xmlns:cc="http://web.resource.org/cc/"
     xmlns:dc="http://purl.org/dc/elements/1.1/"
     xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" width="10" height="10">
  <metadata><rdf:RDF><cc:Work rdf:about="">
    <dc:title>drawing</dc:title>
    <dc:subject><rdf:Bag>{items}</rdf:Bag></dc:subject>
    {creator_xml}
    <cc:license rdf:resource="{license_uri}"/>
  </cc:Work></rdf:RDF></metadata>
  <rect width="10" height="10"/>
</svg>
"""


def _png(path: Path, size: tuple[int, int], color: tuple[int, int, int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGBA", size, (0, 0, 0, 0))
    image.paste(color, (size[0] // 4, size[1] // 4, 3 * size[0] // 4, 3 * size[1] // 4))
    image.save(path, format="PNG")


def _drawing(
    root: Path,
    rel: str,
    svg_text: str,
    size: tuple[int, int] | None = (40, 30),
    color: tuple[int, int, int, int] = (200, 0, 0, 255),
) -> None:
    svg = root / "svg" / f"{rel}.svg"
    svg.parent.mkdir(parents=True, exist_ok=True)
    svg.write_text(svg_text, encoding="utf-8")
    if size is not None:
        _png(root / "png" / f"{rel}.png", size, color)


def _link(root: Path, rel: str, target_rel: str) -> None:
    for kind in ("svg", "png"):
        link = root / kind / f"{rel}.{kind}"
        link.parent.mkdir(parents=True, exist_ok=True)
        target = root / kind / f"{target_rel}.{kind}"
        link.symlink_to(os.path.relpath(target, link.parent))


@pytest.fixture
def library(tmp_path: Path) -> Path:
    """A miniature Open Clip Art tree with the library's quirks."""
    root = tmp_path / "openclipart"
    _drawing(root, "animals/cat", _svg("  Alice  Smith ", ["Cat", " Pet  Animal ", "cat", ""]))
    _drawing(root, "animals/mammals/dog", _svg("Alice Smith", ["dog", "pet animal"]), (400, 200))
    _link(root, "people/dog_02", "animals/mammals/dog")  # renamed symlinked copy
    # A regular copy in a second category: same PNG bytes, different keywords.
    _drawing(root, "food/fruit/apple", _svg("Bob", ["apple", "fruit"]), color=(0, 200, 0, 255))
    _drawing(root, "plants/apple", _svg("Bob", ["Tree", "apple"]), color=(0, 200, 0, 255))
    # Same file name, different drawings by different authors.
    _drawing(root, "computer/folder", _svg("Carol", ["folder"]), color=(0, 0, 200, 255))
    _drawing(root, "office/folder", _svg("Dave", ["folder", "office"]), color=(9, 9, 9, 255))
    _drawing(root, "shapes/nobody", _svg(None, ["shape"]), color=(1, 2, 3, 255))
    _drawing(root, "shapes/blank", _svg("   ", ["shape"]), color=(3, 2, 1, 255))
    _drawing(root, "shapes/anon", _svg("Anonymous", ["shape"]), color=(3, 3, 1, 255))
    _drawing(root, "shapes/broken", "<svg><metadata><rdf:RDF>", color=(5, 5, 5, 255))
    _drawing(root, "shapes/lonely", _svg("Erin", ["star"]), size=None)  # PNG missing
    _drawing(
        root,
        "computer/gpl",
        _svg("Frank", ["network"], "http://creativecommons.org/licenses/GPL/2.0/"),
        color=(7, 7, 7, 255),
    )
    _drawing(root, "computer/tall", _svg("Dave", ["office"]), (30, 480), (50, 50, 50, 128))
    return root


EXPECTED_ROWS = [
    {
        "image": "images/cat.png",
        "image_id": "cat",
        "user_id": "Alice Smith",
        "labels": ["animals"],
        "fine_grained_labels": ["cat", "pet animal"],
    },
    {
        "image": "images/dog.png",
        "image_id": "dog",
        "user_id": "Alice Smith",
        "labels": ["animals", "people"],
        "fine_grained_labels": ["dog", "pet animal"],
    },
    {
        "image": "images/apple.png",
        "image_id": "apple",
        "user_id": "Bob",
        "labels": ["food", "plants"],
        "fine_grained_labels": ["apple", "fruit", "tree"],
    },
]


def _rows(out: Path) -> list[dict[str, object]]:
    lines = (out / "manifest.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def _tree_bytes(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}


# --------------------------------------------------------------------------- scanning


def test_scan_dedupes_copies_and_skips_bad_drawings(library: Path) -> None:
    skips = bos.Skips()
    drawings = bos.scan_library(library, skips)
    by_id = {d.image_id: d for d in drawings}
    folder_ids = sorted(i for i in by_id if i.startswith("folder-"))
    assert len(folder_ids) == 2  # same stem, two drawings -> hash-suffixed ids
    assert sorted(by_id) == sorted(["apple", "cat", "dog", "tall", *folder_ids])
    assert {by_id[i].user_id for i in folder_ids} == {"Carol", "Dave"}
    assert by_id["dog"].labels == ("animals", "people")
    assert by_id["apple"].labels == ("food", "plants")
    assert by_id["apple"].fine_labels == ("apple", "fruit", "tree")
    assert skips.counts == Counter(
        {
            "unparsable SVG": 1,
            "missing PNG": 1,
            "drawing without creator": 3,
            "drawing not marked public domain": 1,
        }
    )


def test_normalization_helpers() -> None:
    assert bos.normalize_keywords(["  Big\tCat ", "big cat", "", None, "&eacute;toile"]) == (
        "big cat",
        "étoile",
    )
    assert bos.normalize_text("Miguel SÃ¡nchez") == "Miguel Sánchez"
    assert bos.normalize_text("Gonéri") == "Gonéri"
    assert bos.author_key("A.J. Ashton") == bos.author_key("aj  ashton")
    assert bos.safe_id("view mag+") == "view_mag_"
    assert bos.is_public_domain("Public Domain")
    assert not bos.is_public_domain("http://creativecommons.org/licenses/GPL/2.0/")


def test_author_spelling_variants_are_merged(tmp_path: Path) -> None:
    root = tmp_path / "lib"
    _drawing(root, "shapes/a", _svg("Mo", ["x"]), color=(1, 0, 0, 255))
    _drawing(root, "shapes/b", _svg("mo", ["x"]), color=(2, 0, 0, 255))
    _drawing(root, "shapes/c", _svg("mo", ["x"]), color=(3, 0, 0, 255))
    drawings = bos.scan_library(root, bos.Skips())
    assert {d.user_id for d in drawings} == {"mo"}


# --------------------------------------------------------------------------- building


def test_small_build_manifest_images_and_taxonomy(library: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    summary, skips = bos.build("small", out, library, seed=0)
    assert "4 authors, 6 images" in summary
    assert skips.counts["missing PNG"] == 1
    rows = _rows(out)
    assert all(list(row) == MANIFEST_KEYS for row in rows)
    assert [(r["user_id"], r["image_id"]) for r in rows] == sorted(
        (r["user_id"], r["image_id"]) for r in rows
    )
    by_id = {r["image_id"]: r for r in rows}
    for expected in EXPECTED_ROWS:
        assert by_id[expected["image_id"]] == expected
    assert sorted(p.name for p in (out / "images").iterdir()) == sorted(f"{r['image_id']}.png" for r in rows)
    for row in rows:
        with Image.open(out / row["image"]) as image:
            assert image.mode == "RGBA"
            assert max(image.size) <= bos.SMALL_MAX_SIDE
            assert not {"dpi", "Author", "Title", "Software"} & set(image.info)
    with Image.open(out / "images" / "dog.png") as image:
        assert image.size == (160, 80)  # 400x200 downscaled, aspect kept
    with Image.open(out / "images" / "tall.png") as image:
        assert image.size == (10, 160)
        assert image.getpixel((5, 80))[3] > 0  # alpha kept
        assert image.getpixel((0, 0))[3] == 0
    with Image.open(out / "images" / "cat.png") as image:
        assert image.size == (40, 30)  # small images are not upscaled
    taxonomy = (out / "label_relationship.txt").read_text(encoding="utf-8").splitlines()
    assert taxonomy == [
        "apple\tplants",  # tie food/plants -> food, then moved so that plants has a fine label
        "cat\tanimals",
        "dog\tpeople",  # moved so that people has a fine label
        "folder\toffice",  # tie computer/office -> computer, then moved to cover office
        "fruit\tfood",
        "office\tcomputer",  # 'tall' (computer) and one folder (office): tie
        "pet animal\tanimals",
        "tree\tfood",
    ]
    readme = (out / "README.md").read_text(encoding="utf-8")
    assert "openclipart-svg" in readme and "Public domain" in readme
    assert "--variant small" in readme and "- images: 6" in readme


def test_full_build_copies_pngs_unchanged(library: Path, tmp_path: Path) -> None:
    out = tmp_path / "full"
    bos.build("full", out, library)
    assert (out / "images" / "dog.png").read_bytes() == (
        library / "png" / "animals" / "mammals" / "dog.png"
    ).read_bytes()
    assert len(_rows(out)) == 6


def test_builds_are_byte_identical(library: Path, tmp_path: Path) -> None:
    out = tmp_path / "a"
    bos.build("small", out, library, seed=3)
    first = _tree_bytes(out)
    bos.build("small", out, library, seed=3)  # rebuild over a previous build
    assert _tree_bytes(out) == first
    other = tmp_path / "b"
    bos.build("small", other, library, seed=3)
    second = _tree_bytes(other)
    # Only the README's rebuild command names the output directory.
    assert {k: v for k, v in second.items() if k != "README.md"} == {
        k: v for k, v in first.items() if k != "README.md"
    }


def test_refuses_to_clobber_foreign_images_dir(library: Path, tmp_path: Path) -> None:
    out = tmp_path / "foreign"
    (out / "images").mkdir(parents=True)
    (out / "images" / "keep.txt").write_text("mine")
    assert bos.main(["--variant", "small", "--out", str(out), "--root", str(library)]) == 2
    assert (out / "images" / "keep.txt").exists()


# --------------------------------------------------------------------------- selection


def _fake_library(n_authors: int, sizes: list[int]) -> list[Any]:
    drawings = []
    for a in range(n_authors):
        for i in range(sizes[a % len(sizes)]):
            drawings.append(
                bos.Drawing(
                    image_id=f"a{a:03d}_{i:04d}",
                    user_id=f"author{a:03d}",
                    labels=("shapes",),
                    fine_labels=("x",),
                    png_path=Path("unused.png"),
                    png_size=(1, 1),
                    paths=(),
                )
            )
    return drawings


def test_small_selection_is_heavy_tailed_and_seeded() -> None:
    drawings = _fake_library(80, [400, 120, 60, 30, 12, 5, 3, 2, 1, 1])
    chosen = bos.select_small(drawings, seed=0)
    per_author = sorted(Counter(d.user_id for d in chosen).values(), reverse=True)
    assert len(per_author) == 12
    assert len(chosen) == bos.SMALL_TARGET_IMAGES
    assert per_author[0] >= 80 and sum(n <= 5 for n in per_author) >= 4
    assert bos.select_small(drawings, seed=0) == chosen
    assert bos.select_small(drawings, seed=1) != chosen


def test_full_selection_takes_most_prolific_authors() -> None:
    drawings = _fake_library(70, [5, 4, 3])
    chosen = bos.select_full(drawings, n_authors=3)
    assert {d.user_id for d in chosen} == {"author000", "author003", "author006"}
    assert len(chosen) == 15


def test_author_quotas() -> None:
    assert bos.author_quotas([1000, 1000, 1000], 300) == [164, 82, 54]
    quotas = bos.author_quotas([500, 40, 5, 1], 300)
    assert sum(quotas) == 300 and quotas[1:] == [40, 5, 1]
    assert bos.author_quotas([3, 2], 300) == [3, 2]


# --------------------------------------------------------------------------- errors


def test_missing_root_is_a_clear_error(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--variant",
            "small",
            "--out",
            str(tmp_path / "out"),
            "--root",
            str(tmp_path / "nope"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: Open Clip Art root not found")
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


def test_empty_library_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "empty"
    (root / "svg" / "animals").mkdir(parents=True)
    (root / "png").mkdir()
    assert bos.main(["--variant", "full", "--out", str(tmp_path / "o"), "--root", str(root)]) == 2
    assert capsys.readouterr().err.startswith("error: no usable drawings")


# --------------------------------------------------------------------------- committed sample


def test_committed_sample_is_self_consistent() -> None:
    rows = _rows(SAMPLE)
    assert all(list(row) == MANIFEST_KEYS for row in rows)
    users = Counter(row["user_id"] for row in rows)
    assert 10 <= len(users) <= 15
    assert 200 <= len(rows) <= 400
    assert len({row["image_id"] for row in rows}) == len(rows)
    assert [(r["user_id"], r["image_id"]) for r in rows] == sorted(
        (r["user_id"], r["image_id"]) for r in rows
    )
    for row in rows:
        assert row["image"] == f"images/{row['image_id']}.png"
        assert (SAMPLE / row["image"]).is_file()
        assert row["labels"], row
    coarse = {label for row in rows for label in row["labels"]}
    fine = {label for row in rows for label in row["fine_grained_labels"]}
    lines = (SAMPLE / "label_relationship.txt").read_text(encoding="utf-8").splitlines()
    mapping = dict(line.split("\t") for line in lines)
    assert len(mapping) == len(lines)
    assert set(mapping) == fine
    assert set(mapping.values()) <= coarse
    size = sum(p.stat().st_size for p in SAMPLE.rglob("*") if p.is_file())
    assert size < 5_000_000
    assert (SAMPLE / "README.md").is_file()
