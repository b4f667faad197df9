"""Fashion-MNIST (Debian's ``dataset-fashion-mnist``) as a Hugging Face-style Parquet table, then federated.

70,000 real 28x28 images in 10 classes with no users. This writes them as one Parquet file
with a ``datasets`` Image column, a ``label`` (class name) and a ``partition`` (train/test),
and, with ``--federate``, converts it three times with Dirichlet label skew (alpha 0.1, 1, 100)
and writes one side-by-side heterogeneity report:

    apt-get install dataset-fashion-mnist
    .venv/bin/python scripts/fashion_mnist.py --out out/fashion-mnist --federate
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

DEBIAN_FOLDER = Path("/usr/share/datasets/fashion-mnist")
CLASSES = [
    "t-shirt/top", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle boot",
]  # fmt: skip
SPLITS = {"train": "train", "test": "t10k"}
ALPHAS = (0.1, 1.0, 100.0)
IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (the MNIST format): big-endian magic, dimensions, then uint8 data."""
    with gzip.open(path, "rb") as handle:
        data = handle.read()
    if data[:2] != b"\0\0" or data[2] != 0x08:
        raise SystemExit(f"{path} is not an unsigned-byte IDX file")
    dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def write_parquet(source: Path, target: Path) -> int:
    """One Parquet file with every image of both splits; returns the number of rows."""
    columns: dict[str, list] = {"image_id": [], "label": [], "partition": [], "image": []}
    for split, prefix in SPLITS.items():
        images = read_idx(source / f"{prefix}-images-idx3-ubyte.gz")
        labels = read_idx(source / f"{prefix}-labels-idx1-ubyte.gz")
        if len(images) != len(labels):
            raise SystemExit(f"{prefix}: {len(images)} images but {len(labels)} labels")
        for index, (pixels, label) in enumerate(zip(images, labels, strict=True)):
            columns["image_id"].append(f"{split}-{index:05d}")
            columns["label"].append(CLASSES[label])
            columns["partition"].append(split)
            columns["image"].append({"bytes": png(pixels), "path": None})
    table = pa.table({**columns, "image": pa.array(columns["image"], IMAGE_TYPE)})
    features = {
        "image_id": {"dtype": "string", "_type": "Value"},
        "label": {"dtype": "string", "_type": "Value"},
        "partition": {"dtype": "string", "_type": "Value"},
        "image": {"_type": "Image"},
    }
    table = table.replace_schema_metadata({"huggingface": json.dumps({"info": {"features": features}})})
    target.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, target, row_group_size=10_000)
    return table.num_rows


def fedimage(*args: str) -> None:
    command = [sys.executable, "-m", "fedimage", *args]
    print("$ fedimage", " ".join(args), flush=True)
    subprocess.run(command, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEBIAN_FOLDER, help="folder of the IDX .gz files")
    parser.add_argument("--out", type=Path, default=Path("out/fashion-mnist"))
    parser.add_argument("--federate", action="store_true", help="also convert (Dirichlet alphas), report")
    parser.add_argument("--num-clients", type=int, default=100)
    parser.add_argument("--min-per-client", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not (args.source / "train-images-idx3-ubyte.gz").is_file():
        raise SystemExit(f"no Fashion-MNIST in {args.source}: apt-get install dataset-fashion-mnist")
    table = args.out / "fashion_mnist.parquet"
    if not table.exists():
        print(f"wrote {write_parquet(args.source, table)} rows to {table}")
    if not args.federate:
        return
    stores = []
    for alpha in ALPHAS:
        store = args.out / f"fmnist-dirichlet-{alpha:g}.h5"
        fedimage(
            "convert", str(table), "-o", str(store), "--source-format", "hf", "--label-column", "label",
            "--size", "28", "--partition", "dirichlet", "--alpha", f"{alpha:g}",
            "--num-clients", str(args.num_clients), "--min-per-client", str(args.min_per_client),
            "--seed", str(args.seed), "--overwrite", "--quiet",
        )  # fmt: skip
        stores.append(str(store))
    fedimage("report", *stores, "-o", str(args.out / "report"))


if __name__ == "__main__":
    main()
