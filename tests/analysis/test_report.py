"""``fedimage report``: files written, a self-contained HTML page, several stores side by side."""

from __future__ import annotations

import io
import json
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from helpers import fast_options

import fedimage
from fedimage import ImageOptions, convert, open_source
from fedimage.cli import main
from fedimage.errors import FedimageError

pytest.importorskip("matplotlib")
Image = pytest.importorskip("PIL.Image")


class References(HTMLParser):
    """Every URL-bearing attribute and element that could fetch something."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.tags: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        for name, value in attrs:
            if name in ("src", "href", "srcset", "data", "poster", "action") and value is not None:
                self.urls.append(value)


@pytest.fixture
def two_stores(flair_folder: Path, user_folder: Path, tmp_path: Path) -> list[Path]:
    taxonomy = fedimage.load_taxonomy(flair_folder / "label_relationship.txt")
    a, b = tmp_path / "flair.h5", tmp_path / "users.h5"
    convert(open_source(flair_folder), a, fast_options(image=ImageOptions(size=32)), taxonomy=taxonomy)
    convert(open_source(user_folder, layout="user"), b, fast_options(image=ImageOptions(size=32)))
    return [a, b]


def test_report_of_two_stores(two_stores: list[Path], tmp_path: Path, capsys):
    out = tmp_path / "report"
    assert main(["report", *map(str, two_stores), "-o", str(out), "--top-clients", "5"]) == 0
    assert "report.html" in capsys.readouterr().out
    stats = json.loads((out / "stats.json").read_text())
    assert [store["name"] for store in stats["stores"]] == ["flair", "users"]
    flair = stats["stores"][0]
    assert flair["summary"]["clients"] == 6 and flair["summary"]["images"] == 14
    assert len(flair["clients"]["client_id"]) == 6 and "coarse_jensen_shannon" in flair["clients"]
    pngs = sorted(path.name for path in out.glob("*.png"))
    assert pngs == sorted(
        ["comparison.png"]
        + [f"{s}_{k}.png" for s in ("flair", "users") for k in ("sizes", "labels", "heatmap", "divergence")]
    )
    for png in out.glob("*.png"):
        with Image.open(png) as image:
            assert image.format == "PNG" and image.width > 300 and image.height > 100

    page = (out / "report.html").read_text(encoding="utf-8")
    parser = References()
    parser.feed(page)
    assert len(parser.urls) == 9  # every plot, embedded
    assert all(url.startswith("data:image/png;base64,") for url in parser.urls)
    assert not parser.tags & {"script", "link", "iframe", "object", "embed", "base"}
    assert "http://" not in page and "https://" not in page and "url(" not in page and "@import" not in page
    assert ">flair</th>" in page and ">users</th>" in page


def test_fine_labels_and_one_split(two_stores: list[Path], tmp_path: Path):
    out = tmp_path / "fine"
    assert main(["report", str(two_stores[0]), "-o", str(out), "--labels", "fine", "--split", "train"]) == 0
    stats = json.loads((out / "stats.json").read_text())
    assert stats["labels"] == "fine" and stats["splits"] == ["train"]
    assert stats["stores"][0]["summary"]["clients"] == 4
    assert not (out / "comparison.png").exists()


def test_errors(two_stores: list[Path], tmp_path: Path, monkeypatch, capsys):
    assert main(["report", str(tmp_path / "missing.h5"), "-o", str(tmp_path / "x")]) == 2
    assert "store not found" in capsys.readouterr().err
    assert main(["report", str(two_stores[0]), "-o", str(tmp_path / "x"), "--top-clients", "0"]) == 2
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if matplotlib were not installed
    from fedimage.analysis.report import heterogeneity_report

    with pytest.raises(FedimageError, match=r"pip install 'fedimage\[report\]'"):
        heterogeneity_report(two_stores, tmp_path / "y")


def test_png_data_uri_round_trips():
    from fedimage.analysis.report_html import data_uri

    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), "red").save(buffer, format="PNG")
    assert data_uri(buffer.getvalue()).startswith("data:image/png;base64,iVBORw0KGgo")


def _clients_across_splits(root: Path) -> Path:
    """A user-less manifest whose rows carry train/test: dealt into 3 IID clients, each in both splits."""
    from helpers import photo, save_image, write_jsonl

    rows = []
    for index in range(24):
        save_image(root / f"{index}.png", photo(16, 16, seed=index))
        split = "test" if index % 4 == 0 else "train"
        rows.append({"image": f"{index}.png", "labels": ["a"] if index % 3 else ["b"], "partition": split})
    manifest = write_jsonl(root / "m.jsonl", rows)
    store = root / "clients.h5"
    plan = fedimage.PlanOptions(partition=fedimage.PartitionOptions("iid", num_clients=3))
    convert(open_source(manifest), store, fast_options(image=ImageOptions(size=16), plan=plan))
    return store


def test_a_client_in_two_splits_counts_once_with_per_split_views(tmp_path: Path, capsys):
    store = _clients_across_splits(tmp_path)
    with fedimage.open(store) as opened:
        assert set(opened.users("train")) == set(opened.users("test"))  # each client holds both splits
    assert main(["report", str(store), "-o", str(tmp_path / "r")]) == 0
    printed = capsys.readouterr().out
    assert "clients" in printed.splitlines()[1] and printed.splitlines()[1].split()[-1] == "3"
    stats = json.loads((tmp_path / "r" / "stats.json").read_text())["stores"][0]
    assert stats["summary"]["clients"] == 3 and stats["summary"]["images"] == 24
    assert {split: view["clients"] for split, view in stats["splits"].items()} == {"train": 3, "test": 3}
    assert sum(view["images"] for view in stats["splits"].values()) == 24
    distribution = stats["summary"]["coarse"]["global_distribution"]
    assert set(distribution) == {"a", "b"} and abs(sum(distribution.values()) - 1) < 1e-6
