"""``fedimage example fashion-mnist``: Debian's IDX files -> a Hugging Face-style table -> federations."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

import fedimage
from fedimage.cli import main
from fedimage.errors import SourceError
from fedimage.sources.examples import FASHION_MNIST_CLASSES, fashion_mnist_table, read_idx


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


@pytest.fixture
def idx_folder(tmp_path: Path) -> Path:
    """A miniature of Debian's dataset-fashion-mnist: 60 train and 20 test images, every class."""
    folder = tmp_path / "fashion-mnist"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for prefix, count in (("train", 60), ("t10k", 20)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (count, 28, 28)))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", np.arange(count) % 10)
    return folder


def test_the_table_reads_like_a_hugging_face_dataset(idx_folder: Path, tmp_path: Path):
    table_path = tmp_path / "out" / "fashion_mnist.parquet"
    assert fashion_mnist_table(table_path, idx_folder) == 80
    table = pq.read_table(table_path)
    assert table.column("label").to_pylist()[:2] == list(FASHION_MNIST_CLASSES[:2])
    assert set(table.column("partition").to_pylist()) == {"train", "test"}
    assert "huggingface" in json.dumps({k.decode(): v.decode() for k, v in table.schema.metadata.items()})
    np.testing.assert_array_equal(read_idx(idx_folder / "t10k-labels-idx1-ubyte.gz"), np.arange(20) % 10)


def test_federate_writes_three_stores_and_their_report(idx_folder: Path, tmp_path: Path, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "fmnist"
    argv = ["example", "fashion-mnist", "-o", str(out), "--source", str(idx_folder), "--quiet"]
    assert main([*argv, "--federate", "--num-clients", "4", "--min-per-client", "2"]) == 0
    for alpha in ("0.1", "1", "100"):
        with fedimage.open(out / f"fmnist-dirichlet-{alpha}.h5") as store:
            assert store.image_size == 28 and store.num_images() == 80
            assert len(set(store.users("train")) | set(store.users("test"))) == 4
    assert (out / "report" / "report.html").is_file()
    assert "clients" in capsys.readouterr().out


def test_without_the_package_it_says_what_to_install(tmp_path: Path, capsys):
    assert main(["example", "fashion-mnist", "-o", str(tmp_path / "x"), "--source", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "apt-get install dataset-fashion-mnist" in err
    with pytest.raises(SourceError, match="not an unsigned-byte IDX file"):
        (tmp_path / "bad.gz").write_bytes(gzip.compress(b"nope"))
        read_idx(tmp_path / "bad.gz")
