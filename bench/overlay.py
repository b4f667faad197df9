"""Partition overlays: ``repartition`` at FLAIR's scale, and overlay reads against plain reads.

1. A FLAIR-shaped store of ``--images`` images (429,078 by default: FLAIR's users, labels and
   splits from ``_flair_shaped``; 8x8 raw pixels, since repartitioning reads no pixel) is
   re-partitioned by ``fedimage.repartition`` (Dirichlet alpha 0.1 and IID, 500 clients).
   Printed beside it, from the same run: the time to read the store's labels alone (the floor
   of any repartition) and the bytes of the overlay against the store's.
2. A store of ``--read-images`` 256x256 JPEGs (the ``flair256`` photos, FLAIR-shaped users)
   is read user by user (``load_user``: every image decoded) and then, through an overlay of
   as many IID clients as the store has users, client by client: the same images, gathered from
   the stored users' groups. ``overlay / plain`` is the ratio of images per second.

    .venv/bin/python bench/overlay.py [--images 429078] [--read-images 3000] [--work /tmp/fedimage-bench]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _flair_shaped

import fedimage
from fedimage import PartitionOptions
from fedimage.analysis.repartition import read_store_labels
from fedimage.store import schema
from fedimage.store.writer import StoreWriter

PIXELS = bytes(8 * 8 * 3)


def metadata_store(path: Path, count: int, seed: int) -> int:
    """A FLAIR-shaped store whose images are 8x8 black pixels; returns its users."""
    rows = _flair_shaped.flair_rows(count, seed)
    by_user: dict[tuple[str, str], list[dict[str, object]]] = {}
    for row in rows:
        by_user.setdefault((str(row["partition"]), str(row["user_id"])), []).append(row)
    taxonomy = _flair_shaped.taxonomy()
    coarse = sorted(set(taxonomy.values()))
    fine = sorted(taxonomy)
    with StoreWriter(path, storage="raw", image_size=8, coarse_labels=coarse, fine_labels=fine) as writer:
        for split, user_id in sorted(
            by_user, key=lambda key: (("train", "val", "test").index(key[0]), key[1])
        ):
            group = writer.user(split, user_id)
            for row in sorted(by_user[split, user_id], key=lambda row: str(row["image_id"])):
                group.add(
                    PIXELS, str(row["image_id"]), tuple(row["labels"]), tuple(row["fine_grained_labels"])
                )
            group.close()
        splits = {
            split: {"users": len(users), "images": sum(info["images"] for info in users.values())}
            for split, users in writer.users.items()
        }
        manifest = {
            "format": schema.FORMAT_NAME,
            "format_version": schema.FORMAT_VERSION,
            "storage": "raw",
            "image_size": 8,
            "counts": {"inputs": count, "written": count, "rejected": 0, "ignored": {}},
            "splits": splits,
            "users": writer.users,
        }
        writer.finish({schema.TAXONOMY: taxonomy, schema.MANIFEST: manifest})
    return len(by_user)


def bench_repartition(work: Path, count: int, seed: int) -> None:
    store = work / f"flair-metadata-{count}.h5"
    if not store.exists():
        started = time.perf_counter()
        users = metadata_store(store, count, seed)
        print(
            f"built {store.name}: {count:,} images, {users:,} users in {time.perf_counter() - started:.1f} s"
        )
    started = time.perf_counter()
    with fedimage.open(store) as opened:
        read_store_labels(opened)
    labels_s = time.perf_counter() - started
    print(f"\nrepartition of {count:,} FLAIR-shaped images (2 cores):")
    print(f"  reading every image id and label alone: {labels_s:.2f} s")
    for name, options in (
        (
            "dirichlet alpha 0.1, 500 clients",
            PartitionOptions("dirichlet", 500, alpha=0.1, min_per_client=10),
        ),
        ("iid, 500 clients", PartitionOptions("iid", 500, min_per_client=10)),
    ):
        overlay = work / f"overlay-{options.scheme}.parquet"
        report = fedimage.repartition(store, overlay, options, overwrite=True)
        size = overlay.stat().st_size
        print(
            f"  {name:<34} {report.seconds:6.2f} s ({report.seconds / labels_s:.2f}x the label read)"
            f"   overlay {size / 1e6:.1f} MB"
        )
    started = time.perf_counter()
    with fedimage.open(store, partition=overlay) as opened:
        opened_s = time.perf_counter() - started
        client, size = next(iter(opened.users("train").items()))
        started = time.perf_counter()
        opened.load_user("train", client)
        first_s = time.perf_counter() - started
    print(
        f"  opening the store through the overlay:   {opened_s:6.2f} s (every stored user's image ids, once)"
    )
    print(f"  then a client of {size} images:          {first_s:6.2f} s")
    full = count * 256 * 256 * 3 // 11  # about FLAIR's jpeg store: 256 px JPEGs of ~18 KB
    print(f"  a store of these images at 256 px: about {full / 1e9:.1f} GB, rewritten by a re-conversion")


def bench_reads(work: Path, count: int, seed: int) -> None:
    flair = _flair_shaped.ensure_flair_set(work, "flair256", count, seed, jobs=2)
    store = work / f"flair256-{count}.h5"
    if not store.exists():
        fedimage.convert(flair.parquet, store, fedimage.ConvertOptions(quiet=True, overwrite=True))
    with fedimage.open(store) as opened:
        users = sum(len(opened.users(split)) for split in opened.splits)
    overlay = work / "read-overlay.parquet"
    fedimage.repartition(store, overlay, PartitionOptions("iid", users, seed=seed), overwrite=True)

    def images_per_second(partition: Path | None) -> float:
        with fedimage.open(store, partition=partition) as opened:
            started, images = time.perf_counter(), 0
            for split in opened.splits:
                for user in opened.iter_users(split):
                    images += len(user)
            return images / (time.perf_counter() - started)

    plain, through = [], []
    for _ in range(3):  # alternate, so that both see the same cache and machine state
        plain.append(images_per_second(None))
        through.append(images_per_second(overlay))
    best_plain, best_overlay = max(plain), max(through)
    print(f"\nreads of {count:,} 256 px JPEG images, every user / client decoded (best of 3):")
    print(f"  plain   {best_plain:8.0f} images/s ({users} users)")
    print(
        f"  overlay {best_overlay:8.0f} images/s ({users} IID clients)"
        f"   overlay / plain {best_overlay / best_plain:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=429_078)
    parser.add_argument("--read-images", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "fedimage-bench")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    bench_repartition(args.work, args.images, args.seed)
    bench_reads(args.work, args.read_images, args.seed)


if __name__ == "__main__":
    main()
