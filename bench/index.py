"""User-index build time for a 430k-row ``apple/flair``-schema table, against the dataset card's loop.

The FLAIR dataset card groups images by user by iterating over decoded records::

    for example in dataset: user_to_images[example["user_id"]].append(example["image"])

which decodes every image. fedimage builds its index from the metadata columns only.
Both are measured here in one run: fedimage on the full table, the card's loop (with
``datasets``, images decoded) on a sample of real JPEG rows, extrapolated linearly.

    .venv/bin/python bench/index.py [--rows 430000] [--sample 2000]
"""

from __future__ import annotations

import argparse
import io
import resource
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
COARSE = [f"coarse{i:02d}" for i in range(17)]
FINE = [f"fine{i:04d}" for i in range(1628)]


def flair_shaped_table(rows: int, seed: int, image: bytes) -> pa.Table:
    """FLAIR's shape: lognormal images per user (median ~2, heavy tail), 1-9 coarse, 1-20 fine labels."""
    rng = np.random.default_rng(seed)
    sizes = np.maximum(1, rng.lognormal(0.75, 1.35, rows).astype(np.int64))
    users = np.repeat(np.arange(len(sizes)), sizes)[:rows]
    rng.shuffle(users)  # rows of one user are scattered, as in a table not sorted by user
    coarse = [list(rng.choice(COARSE, rng.integers(1, 6), replace=False)) for _ in range(rows)]
    fine = [list(rng.choice(FINE, rng.integers(1, 10), replace=False)) for _ in range(rows)]
    partition = np.where(users % 10 < 8, "train", np.where(users % 10 == 8, "val", "test"))
    return pa.table(
        {
            "user_id": [f"{user}@N00" for user in users],
            "image_id": np.arange(rows, dtype=np.int64),
            "labels": coarse,
            "partition": partition,
            "fine_grained_labels": fine,
            "image": pa.array([{"bytes": image, "path": None}] * rows, type=IMAGE_TYPE),
        }
    )


def fedimage_index(path: Path) -> tuple[float, int, float]:
    """Seconds, users and peak RSS (MB) of fedimage's index, in a fresh process.

    Peak RSS is the child's VmHWM: ``ru_maxrss`` survives ``exec`` and would report the parent's.
    """
    code = (
        "import time, resource; t = time.perf_counter()\n"
        "from fedimage import open_source, PlanOptions\n"
        "from fedimage.conversion.plan import make_plan\n"
        f"source = open_source({str(path)!r})\n"
        "plan = make_plan(source.metadata(), PlanOptions(), has_users=source.has_users)\n"
        "print(time.perf_counter() - t, len({u.user_id for u in plan.users}),"
        " next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM')) / 1024)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    seconds, users, rss = out.split()
    return float(seconds), int(users), float(rss)


def card_loop_per_row(path: Path) -> float:
    """Seconds per row of the dataset card's loop over decoded records (``datasets``)."""
    import datasets

    dataset = datasets.Dataset.from_parquet(str(path)).cast_column("image", datasets.Image())
    started = time.perf_counter()
    user_to_images: dict[str, list] = defaultdict(list)
    for example in dataset:
        user_to_images[example["user_id"]].append(np.asarray(example["image"]))
    return (time.perf_counter() - started) / len(dataset)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=430_000)
    parser.add_argument("--sample", type=int, default=2_000, help="rows of real JPEGs for the card's loop")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fedimage-index-") as tmp:
        full = Path(tmp) / "flair.parquet"
        pq.write_table(flair_shaped_table(args.rows, args.seed, b"\xff\xd8 not decoded \xff\xd9"), full)
        buffer = io.BytesIO()
        photo = np.random.default_rng(1).integers(0, 255, (256, 256, 3), dtype=np.uint8)
        Image.fromarray(photo).save(buffer, format="JPEG", quality=90)
        sample = Path(tmp) / "sample.parquet"
        pq.write_table(flair_shaped_table(args.sample, args.seed, buffer.getvalue()), sample)

        seconds, users, rss = fedimage_index(full)
        per_row = card_loop_per_row(sample)
    card_seconds = per_row * args.rows
    print(f"user index of {args.rows:,} rows ({users:,} users)")
    print(
        f"  fedimage (metadata columns only)        {seconds:8.2f} s   peak RSS {rss:.0f} MB   target < 5 s"
    )
    print(
        f"  dataset card loop over decoded records  {card_seconds:8.0f} s   "
        f"({per_row * 1e3:.2f} ms/row on {args.sample:,} real-JPEG rows, extrapolated)"
    )
    print(f"  ratio                                   {card_seconds / seconds:8.0f}x faster")
    print(f"  (bench process peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB)")


if __name__ == "__main__":
    main()
