"""Per-user read latency from a store, raw vs jpeg storage, warm and cold page cache.

For each storage mode: convert the generated ``flair256`` set (256x256 JPEGs, heavy-tailed
users; see ``_photos.py``), then time ``store.load_user`` (every image decoded to uint8,
labels to multi-hot) over random users. Cold reads drop the store's pages from the page
cache first (``posix_fadvise(DONTNEED)``, which needs no privileges). Also prints bytes per
image and the size extrapolated to FLAIR's 429,078 images. Each storage is also written
encrypted (``--encrypt-key``; AES-256-GCM per user) and read with its key: ``vs plain`` is
the encrypted median over the plain median of the same storage and cache state.

    .venv/bin/python bench/read.py [--images 3000] [--reads 300]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _photos

import fedimage

FLAIR_IMAGES = 429_078


def drop_from_page_cache(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())
        os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


def time_reads(
    path: Path, users: list[tuple[str, str]], cold: bool, key: bytes | None = None
) -> tuple[np.ndarray, int]:
    """Milliseconds per ``load_user`` call and the images read."""
    seconds = []
    images = 0
    for split, user_id in users:
        if cold:
            drop_from_page_cache(path)
        with fedimage.open(path, key=key) as store:  # opening is part of a cold read
            started = time.perf_counter()
            data = store.load_user(split, user_id)
            seconds.append(time.perf_counter() - started)
        images += len(data)
    return np.asarray(seconds) * 1e3, images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--reads", type=int, default=300, help="random users read per mode and cache state")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "fedimage-bench")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    inputs = _photos.ensure_set(args.workdir, "flair256", args.images, args.seed, jobs=os.cpu_count() or 1)
    print(f"flair256: {inputs.images} images, {inputs.users} users; {args.reads} random users per row")
    print(
        f"{'storage':<16}{'cache':<6}{'median ms':>10}{'p95 ms':>9}{'images/s':>10}"
        f"{'bytes/image':>13}{'FLAIR size':>12}{'vs plain':>10}"
    )
    key = os.urandom(32)
    plain_medians: dict[tuple[str, bool], float] = {}
    for storage, encrypted in (("raw", False), ("raw", True), ("jpeg", False), ("jpeg", True)):
        store_key = key if encrypted else None
        name = f"{storage}, encrypted" if encrypted else storage
        path = args.workdir / f"read-{storage}{'-encrypted' if encrypted else ''}.h5"
        options = fedimage.ConvertOptions(
            image=fedimage.ImageOptions(storage=storage),
            workers=2,
            quiet=True,
            overwrite=True,
            encrypt_key=store_key,
        )
        fedimage.convert(fedimage.open_source(inputs.manifest), path, options)
        with fedimage.open(path, key=store_key) as store:
            all_users = [(split, user) for split in store.splits for user in store.users(split)]
            images = store.num_images()
        rng = np.random.default_rng(args.seed)
        chosen = [all_users[i] for i in rng.integers(0, len(all_users), args.reads)]
        per_image = path.stat().st_size / images
        for cold in (False, True):
            time_reads(path, chosen[:20], cold=False, key=store_key)  # warm-up
            millis, read_images = time_reads(path, chosen, cold, key=store_key)
            rate = read_images / (millis.sum() / 1e3)
            median = float(np.median(millis))
            if not encrypted:
                plain_medians[storage, cold] = median
            ratio = f"{median / plain_medians[storage, cold]:.2f}x" if encrypted else "1.00x"
            print(
                f"{name:<16}{'cold' if cold else 'warm':<6}{median:>10.2f}"
                f"{np.percentile(millis, 95):>9.2f}{rate:>10.0f}{per_image:>13,.0f}"
                f"{per_image * FLAIR_IMAGES / 1e9:>10.1f} GB{ratio:>10}"
            )
        path.unlink()


if __name__ == "__main__":
    main()
