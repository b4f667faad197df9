"""Worked examples on real data a machine may already hold: Fashion-MNIST from Debian's package.

``dataset-fashion-mnist`` installs 70,000 28x28 images in 10 classes, with no users, as IDX
files. :func:`fashion_mnist_table` writes them as one Parquet table in Hugging Face's layout
(a ``datasets`` Image column, a ``label`` class name and a ``partition``: train/test) that
``fedimage convert --source-format hf`` reads; ``fedimage example fashion-mnist`` runs it.

    table = fashion_mnist_table("out/fashion-mnist/fashion_mnist.parquet")
"""

from __future__ import annotations

import gzip
import io
import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from fedimage.errors import SourceError

#: Where Debian's ``dataset-fashion-mnist`` puts its files.
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = (
    "t-shirt/top", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle boot",
)  # fmt: skip
_SPLIT_FILES = {"train": "train", "test": "t10k"}
_IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (the MNIST format, gzipped): big-endian magic, dimensions, then uint8 data."""
    try:
        with gzip.open(path, "rb") as handle:
            data = handle.read()
    except OSError as error:
        raise SourceError(f"cannot read {path}: {error}") from None
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] != 0x08:
        raise SourceError(f"{path} is not an unsigned-byte IDX file")
    dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    if len(data) != 4 + 4 * dims + int(np.prod(shape)):
        raise SourceError(f"{path}: {len(data)} bytes do not hold a {shape} array")
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def fashion_mnist_table(
    output: str | os.PathLike[str], source: str | os.PathLike[str] = DEBIAN_FASHION_MNIST
) -> int:
    """Write Fashion-MNIST's two splits as one Parquet table at ``output``; returns its rows.

    Parameters:
        output: the Parquet file to write (its folder is created).
        source: the folder of the IDX ``.gz`` files (default: Debian's ``dataset-fashion-mnist``).

    Example::

        rows = fashion_mnist_table("out/fmnist/fashion_mnist.parquet")  # 70,000
    """
    source, output = Path(source), Path(output)
    if not (source / "train-images-idx3-ubyte.gz").is_file():
        raise SourceError(
            f"no Fashion-MNIST in {source}: install Debian's dataset-fashion-mnist (apt-get install "
            "dataset-fashion-mnist), or name the folder of its IDX files as `source`"
        )
    columns: dict[str, list] = {"image_id": [], "label": [], "partition": [], "image": []}
    for split, prefix in _SPLIT_FILES.items():
        images = read_idx(source / f"{prefix}-images-idx3-ubyte.gz")
        labels = read_idx(source / f"{prefix}-labels-idx1-ubyte.gz")
        if len(images) != len(labels) or images.ndim != 3:
            raise SourceError(f"{source}: {prefix} holds {len(images)} images but {len(labels)} labels")
        for index, (pixels, label) in enumerate(zip(images, labels, strict=True)):
            if label >= len(FASHION_MNIST_CLASSES):
                raise SourceError(f"{source}: {prefix} label {index} is {label}, not a class (0-9)")
            columns["image_id"].append(f"{split}-{index:05d}")
            columns["label"].append(FASHION_MNIST_CLASSES[label])
            columns["partition"].append(split)
            columns["image"].append({"bytes": _png(pixels), "path": None})
    table = pa.table({**columns, "image": pa.array(columns["image"], _IMAGE_TYPE)})
    features = {
        "image_id": {"dtype": "string", "_type": "Value"},
        "label": {"dtype": "string", "_type": "Value"},
        "partition": {"dtype": "string", "_type": "Value"},
        "image": {"_type": "Image"},
    }
    table = table.replace_schema_metadata({"huggingface": json.dumps({"info": {"features": features}})})
    output.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, output, row_group_size=10_000)
    return table.num_rows
