"""FLAIR-shaped benchmark inputs: FLAIR's users, labels and layouts, with real-photo pixels.

Metadata follows the figures in ``shared/reference/flair.md``: images per user from a
lognormal fitted to FLAIR (ceil(exp(0.45 + 1.8 z)), at most 4,151: median 2, p25 1, mean
about 8.5 and a maximum in the thousands at FLAIR's 51k users; a 2,400-user sample has a
few users with hundreds), 17 coarse labels with FLAIR's frequencies, 1,628 fine labels each
under one coarse label, 1 + Poisson(1.785) coarse labels per image (mean 2.785, median 3,
at most 9), 1 + Poisson(0.65) fine labels under each (mean about 4.6), users split 8:1:1.

Written twice, from the same rows:

* a raw FLAIR folder as ml-flair's download leaves it: ``small_images/{image_id}.jpg``,
  ``labels_and_metadata.json`` and ``label_relationship.txt`` (``fine -> coarse``);
* ``flair.parquet`` with the ``apple/flair`` schema (user_id string, image_id int64,
  labels list<string>, partition string, fine_grained_labels list<string>,
  image struct{bytes, path}), rows of a user scattered.

Pixels come from ``_photos`` (``flair256``: 256x256 q90 JPEGs like FLAIR's small images;
``photos``: camera-like 500-2048 px JPEGs). At most ``unique`` distinct images are
generated (one pool per content and seed, shared by all set sizes); larger sets reuse
them cyclically under new image ids (same decode work, much faster to build).
Everything is seeded and cached under the work folder.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import _photos
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

VERSION = 2  # 2: Parquet row groups of 100 rows, as `datasets` writes image datasets
DEFAULT_UNIQUE = 5_000
MAX_USER_IMAGES = 4_151
USER_MU, USER_SIGMA = 0.45, 1.8
FLAIR_MEAN_IMAGES_PER_USER = 8.35
FINE_LABELS = 1_628
IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
PARQUET_ROW_GROUP = 100  # `datasets` writes image datasets in row groups of 100 rows
# FLAIR's coarse labels and how many images carry each (flair.md).
COARSE_COUNTS = {
    "structure": 228_923,
    "equipment": 225_862,
    "material": 139_733,
    "outdoor": 131_322,
    "plant": 123_363,
    "food": 110_792,
    "animal": 68_858,
    "liquid": 68_677,
    "art": 37_230,
    "interior_room": 32_042,
    "light": 11_326,
    "recreation": 5_651,
    "celebration": 3_769,
    "fire": 3_011,
    "music": 2_571,
    "games": 1_093,
    "religion": 866,
}


@dataclass(frozen=True, slots=True)
class FlairSet:
    """A generated FLAIR-shaped set: the raw folder and the Parquet file of the same rows."""

    root: Path
    parquet: Path
    images: int
    users: int
    image_bytes: int
    generated_seconds: float  # 0 when it came from the cache

    @property
    def metadata(self) -> Path:
        return self.root / "labels_and_metadata.json"


def taxonomy() -> dict[str, str]:
    """1,628 fine labels, each under one coarse label (more fine labels under frequent coarse ones)."""
    names = list(COARSE_COUNTS)
    weights = np.sqrt(np.array(list(COARSE_COUNTS.values()), dtype=np.float64))
    per_coarse = 1 + np.floor(weights / weights.sum() * (FINE_LABELS - len(names))).astype(int)
    per_coarse[0] += FINE_LABELS - per_coarse.sum()
    pairs = zip(names, per_coarse, strict=True)
    return {f"{coarse}_{i:03d}": coarse for coarse, n in pairs for i in range(n)}


def user_sizes(count: int, rng: np.random.Generator) -> np.ndarray:
    """Images per user, FLAIR-like, adding up to exactly ``count``."""
    users = max(1, round(count / FLAIR_MEAN_IMAGES_PER_USER))
    sizes = np.minimum(MAX_USER_IMAGES, np.ceil(np.exp(USER_MU + USER_SIGMA * rng.standard_normal(users))))
    sizes = sizes.astype(np.int64)
    # Fix the total on the large users (weights ~ size^2) so the median and p25 stay FLAIR's.
    while (excess := int(sizes.sum() - count)) != 0:
        step = 1 if excess > 0 else -1
        candidates = np.flatnonzero(sizes > 1) if step > 0 else np.arange(len(sizes))
        if len(candidates) == 0:
            return np.ones(count, dtype=np.int64)
        weights = sizes[candidates].astype(np.float64) ** 2
        batch = min(abs(excess), max(1, len(candidates) // 50))  # small batches: mostly large users
        picked = rng.choice(candidates, size=batch, replace=False, p=weights / weights.sum())
        sizes[picked] -= step
    return sizes


def flair_rows(count: int, seed: int) -> list[dict[str, object]]:
    """The metadata rows of ``count`` images in FLAIR's ``labels_and_metadata.json`` form."""
    rng = np.random.default_rng([seed, 31])
    fine_to_coarse = taxonomy()
    coarse_names = list(COARSE_COUNTS)
    fine_by_coarse = [[f for f, c in fine_to_coarse.items() if c == name] for name in coarse_names]
    coarse_p = np.array(list(COARSE_COUNTS.values()), dtype=np.float64)
    sizes = user_sizes(count, rng)
    user_ids = [f"{40_000_000 + int(n)}@N{int(rng.integers(0, 9)):02d}" for n in rng.permutation(len(sizes))]
    split_of = np.array(["train", "val", "test"])[rng.choice(3, size=len(sizes), p=[0.8, 0.1, 0.1])]
    owners = np.repeat(np.arange(len(sizes)), sizes)
    rng.shuffle(owners)  # rows of a user are scattered
    # Weighted sampling without replacement for every row at once (Gumbel top-k).
    how_many = np.minimum(9, 1 + rng.poisson(1.785, count))
    ranked = np.argsort(-(np.log(coarse_p) + rng.gumbel(size=(count, len(coarse_names)))), axis=1)
    fine_counts = 1 + rng.poisson(0.65, (count, 9))
    fine_draws = rng.random((count, 9, 4))
    rows: list[dict[str, object]] = []
    for index, owner in enumerate(owners):
        picked = ranked[index, : how_many[index]]
        fine: set[str] = set()
        for slot, label in enumerate(picked):
            options = fine_by_coarse[label]
            draws = fine_draws[index, slot, : min(4, fine_counts[index, slot])]
            fine.update(options[int(draw * len(options))] for draw in draws)
        rows.append(
            {
                "user_id": user_ids[owner],
                "image_id": str(10_000_000_000 + index),
                "labels": sorted(coarse_names[label] for label in picked),
                "fine_grained_labels": sorted(fine),
                "partition": str(split_of[owner]),
            }
        )
    return rows


def flair_table(rows: list[dict[str, object]], images: list[bytes | None]) -> pa.Table:
    """The rows as an ``apple/flair``-schema Arrow table; ``images[i]`` is row i's JPEG bytes."""
    fine = [row["fine_grained_labels"] for row in rows]
    pairs = zip(rows, images, strict=True)
    image = [{"bytes": data, "path": f"{row['image_id']}.jpg"} for row, data in pairs]
    return pa.table(
        {
            "user_id": pa.array([row["user_id"] for row in rows], pa.string()),
            "image_id": pa.array([int(row["image_id"]) for row in rows], pa.int64()),  # type: ignore[call-overload]
            "labels": pa.array([row["labels"] for row in rows], pa.list_(pa.string())),
            "partition": pa.array([row["partition"] for row in rows], pa.string()),
            "fine_grained_labels": pa.array(fine, pa.list_(pa.string())),
            "image": pa.array(image, type=IMAGE_TYPE),
        }
    )


def set_dir(workdir: Path, content: str, count: int, seed: int, unique: int) -> Path:
    """Where the set with these parameters is cached."""
    version = f"v{VERSION}.{_photos.GENERATOR_VERSION[content]}"
    return workdir / f"flairshaped-{content}-n{count}-u{min(unique, count)}-seed{seed}-{version}"


def ensure_flair_set(
    workdir: Path, content: str, count: int, seed: int, jobs: int, unique: int = DEFAULT_UNIQUE
) -> FlairSet:
    """The cached FLAIR-shaped set, generating it first if it is missing or incomplete."""
    if content not in _photos.SET_KINDS:
        raise ValueError(f"unknown content {content!r}; expected one of {', '.join(_photos.SET_KINDS)}")
    unique = max(1, min(unique, count))
    root = set_dir(workdir, content, count, seed, unique)
    stamp = root / "complete.json"
    params = {"content": content, "count": count, "seed": seed, "unique": unique, "version": VERSION}
    if stamp.is_file() and json.loads(stamp.read_text()).get("params") == params:
        info = json.loads(stamp.read_text())
        return FlairSet(root, root / "flair.parquet", count, info["users"], info["bytes"], 0.0)
    started = time.perf_counter()
    if root.exists():
        shutil.rmtree(root)
    pool = workdir / f"pool-{content}-seed{seed}-v{_photos.GENERATOR_VERSION[content]}"
    pool_names = [f"{index:06d}.jpg" for index in range(unique)]
    pool.mkdir(parents=True, exist_ok=True)
    for cached in workdir.glob(f"{content}-n*-seed{seed}-v{_photos.GENERATOR_VERSION[content]}/images"):
        for name in pool_names:  # ``_photos`` sets hold the same images: link them
            if not (pool / name).is_file() and (cached / name).is_file():
                os.link(cached / name, pool / name)
    missing = [index for index, name in enumerate(pool_names) if not (pool / name).is_file()]
    if missing:  # images depend only on (content, seed, index): every set shares one pool
        fresh = [f"{index:06d}.jpg.partial" for index in range(unique)]
        _photos.write_images(content, seed, pool, [fresh[i] for i in missing], jobs, indices=missing)
        for index in missing:
            (pool / fresh[index]).rename(pool / pool_names[index])
    rows = flair_rows(count, seed)
    (root / "small_images").mkdir(parents=True)
    total = 0
    with pq.ParquetWriter(root / "flair.parquet.partial", flair_table([], []).schema) as writer:
        for start in range(0, count, PARQUET_ROW_GROUP):
            chunk = rows[start : start + PARQUET_ROW_GROUP]
            payloads = [(pool / pool_names[(start + i) % unique]).read_bytes() for i in range(len(chunk))]
            for row, data in zip(chunk, payloads, strict=True):
                (root / "small_images" / f"{row['image_id']}.jpg").write_bytes(data)
            total += sum(map(len, payloads))
            writer.write_table(flair_table(chunk, payloads))
    (root / "flair.parquet.partial").rename(root / "flair.parquet")
    with open(root / "labels_and_metadata.json", "w", encoding="utf-8") as handle:
        json.dump(rows, handle)
    lines = (f"{fine} -> {coarse}\n" for fine, coarse in taxonomy().items())
    (root / "label_relationship.txt").write_text("".join(lines), encoding="utf-8")
    users = len({row["user_id"] for row in rows})
    stamp.write_text(json.dumps({"params": params, "users": users, "bytes": total}))
    return FlairSet(root, root / "flair.parquet", count, users, total, time.perf_counter() - started)


def describe(rows: list[dict[str, object]]) -> str:
    """FLAIR's headline statistics of ``rows``, to print beside a benchmark."""
    per_user: dict[object, int] = {}
    for row in rows:
        per_user[row["user_id"]] = per_user.get(row["user_id"], 0) + 1
    sizes = np.array(list(per_user.values()))
    coarse = np.array([len(row["labels"]) for row in rows])  # type: ignore[arg-type]
    fine = np.array([len(row["fine_grained_labels"]) for row in rows])  # type: ignore[arg-type]
    return (
        f"{len(rows):,} images, {len(sizes):,} users; images/user median {np.median(sizes):.0f} "
        f"mean {sizes.mean():.2f} max {sizes.max()}; "
        f"coarse/image mean {coarse.mean():.2f} max {coarse.max()}; "
        f"fine/image mean {fine.mean():.2f} max {fine.max()}"
    )
