"""Deterministic benchmark inputs made from the photos scikit-image bundles.

Two input sets, each a folder with ``images/*.jpg`` and a FLAIR-style
``manifest.jsonl`` (``image``, ``user_id``, ``labels``):

``photos``
    Camera-like JPEGs of mixed sizes (500x375 up to 2048x1536, landscape and
    portrait), quality 85-95, mostly 4:2:0 baseline with a few 4:4:4,
    progressive and grayscale files; about a quarter carry EXIF (camera make,
    model, date), half of those with an orientation other than 1 (the pixels
    are stored rotated, as a camera would). Made by random crops, scales, flips
    and color jitter of the bundled photos, plus mild sensor-like noise so that
    upscaled crops compress like real photos rather than smooth gradients.
``flair256``
    256x256 baseline JPEGs at quality 90 without metadata, like FLAIR's
    ``small_images``.

Images are spread over about N/8 users with a heavy-tailed (lognormal)
number of images per user, and every image has 1-3 of 17 labels. Everything
is derived from the seed (per image, so parallel generation gives the same
files) and cached: a set is regenerated only when its parameters change.
"""

from __future__ import annotations

import io
import json
import math
import multiprocessing
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

# Bumped per kind when its images change (v2 of flair256: resized before jitter, 5x faster).
GENERATOR_VERSION = {"photos": 1, "flair256": 2}
SET_KINDS = ("photos", "flair256")
IMAGES_PER_USER = 8
USER_SIGMA = 1.0  # lognormal sigma of the per-user image-count weights

# Only files shipped inside the scikit-image wheel (no pooch download needed).
COLOR_SOURCES = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "motorcycle_left",
    "motorcycle_right",
    "retina",
)
GRAY_SOURCES = ("camera", "moon", "coins", "brick", "grass", "gravel")
GRAY_FRACTION = 0.04

LABELS = (
    "animal",
    "art",
    "celebration",
    "equipment",
    "fashion",
    "food",
    "liquid",
    "material",
    "music",
    "outdoor",
    "people",
    "plant",
    "recreation",
    "religion",
    "structure",
    "text",
    "vehicle",
)

# (long side, weight): Flickr-style download sizes.
LONG_SIDES = ((500, 0.15), (640, 0.15), (800, 0.15), (1024, 0.2), (1280, 0.15), (1600, 0.1), (2048, 0.1))
# (width / height for a landscape image, weight).
ASPECTS = ((4 / 3, 0.6), (3 / 2, 0.25), (16 / 9, 0.1), (1.0, 0.05))
PORTRAIT_FRACTION = 0.25
EXIF_FRACTION = 0.25
ROTATED_FRACTION = 0.5  # of the files with EXIF
ORIENTATIONS = ((6, 0.6), (8, 0.25), (3, 0.15))
# What a camera stores so that the EXIF transform shows the upright picture.
STORED_FOR_ORIENTATION = {
    3: Image.Transpose.ROTATE_180,
    6: Image.Transpose.ROTATE_90,
    8: Image.Transpose.ROTATE_270,
}
CAMERAS = (
    ("Canon", "Canon EOS 5D Mark II"),
    ("NIKON CORPORATION", "NIKON D90"),
    ("Apple", "iPhone 4S"),
    ("SONY", "DSLR-A200"),
)
PROGRESSIVE_FRACTION = 0.05
FULL_CHROMA_FRACTION = 0.1
NOISE_TILE = 2304  # side of the shared noise tile; larger than any generated image

EXIF_ORIENTATION = 0x0112
EXIF_MAKE = 0x010F
EXIF_MODEL = 0x0110
EXIF_DATETIME = 0x0132


@dataclass(frozen=True, slots=True)
class InputSet:
    """A generated input set on disk."""

    kind: str
    root: Path
    manifest: Path
    images: int
    users: int
    total_bytes: int
    generated_seconds: float  # 0 when it came from the cache


def set_dir(workdir: Path, kind: str, count: int, seed: int) -> Path:
    """Where the set with these parameters is cached."""
    return workdir / f"{kind}-n{count}-seed{seed}-v{GENERATOR_VERSION[kind]}"


def ensure_set(workdir: Path, kind: str, count: int, seed: int, jobs: int) -> InputSet:
    """The cached input set, generating it first if it is missing or incomplete."""
    if kind not in SET_KINDS:
        raise ValueError(f"unknown input set {kind!r}; expected one of {', '.join(SET_KINDS)}")
    root = set_dir(workdir, kind, count, seed)
    stamp = root / "complete.json"
    params = {"kind": kind, "count": count, "seed": seed, "version": GENERATOR_VERSION[kind]}
    if stamp.is_file() and json.loads(stamp.read_text()).get("params") == params:
        info = json.loads(stamp.read_text())
        return InputSet(kind, root, root / "manifest.jsonl", count, info["users"], info["bytes"], 0.0)
    started = time.perf_counter()
    if root.exists():
        shutil.rmtree(root)
    names = [f"images/{index:06d}.jpg" for index in range(count)]
    sizes = write_images(kind, seed, root, names, jobs)
    rows = manifest_rows(names, seed)
    with open(root / "manifest.jsonl", "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
    users = len({row["user_id"] for row in rows})
    total = int(sum(sizes))
    stamp.write_text(json.dumps({"params": params, "users": users, "bytes": total}))
    seconds = time.perf_counter() - started
    return InputSet(kind, root, root / "manifest.jsonl", count, users, total, seconds)


def write_images(
    kind: str, seed: int, root: Path, names: Sequence[str], jobs: int, indices: Sequence[int] | None = None
) -> list[int]:
    """Write image ``indices[i]`` (default ``i``) of ``kind`` to ``root / names[i]``; returns the sizes.

    The images depend only on (kind, seed, index), so any ``jobs`` gives the same files.
    """
    for folder in {(root / name).parent for name in names}:
        folder.mkdir(parents=True, exist_ok=True)
    count = len(names)
    indices = list(range(count)) if indices is None else list(indices)
    chunks = [list(range(start, count, max(1, jobs))) for start in range(max(1, jobs))]
    tasks = [(kind, seed, str(root), [(indices[i], names[i]) for i in chunk]) for chunk in chunks if chunk]
    if jobs > 1 and count > 1:
        context = multiprocessing.get_context("spawn")
        with context.Pool(min(jobs, len(tasks))) as pool:
            chunk_sizes = pool.map(_write_images, tasks)
    else:
        chunk_sizes = list(map(_write_images, tasks))
    sizes = [0] * count
    for positions, chunk in zip((chunk for chunk in chunks if chunk), chunk_sizes, strict=True):
        for position, size in zip(positions, chunk, strict=True):
            sizes[position] = size
    return sizes


def manifest_rows(names: Sequence[str], seed: int) -> list[dict[str, object]]:
    """Manifest rows: images dealt to ~N/8 users (lognormal counts), 1-3 of 17 labels each."""
    rng = np.random.default_rng([seed, 17])
    count = len(names)
    user_count = max(1, round(count / IMAGES_PER_USER))
    weights = rng.lognormal(0.0, USER_SIGMA, user_count)
    per_user = 1 + rng.multinomial(count - user_count, weights / weights.sum())  # user_count <= count
    owners = np.repeat(np.arange(len(per_user)), per_user)
    rng.shuffle(owners)
    popularity = 1.0 / np.arange(1, len(LABELS) + 1) ** 0.8  # Zipf-like label frequencies
    popularity /= popularity.sum()
    label_order = rng.permutation(len(LABELS))
    rows: list[dict[str, object]] = []
    for name, owner in zip(names, owners, strict=True):
        how_many = int(rng.choice([1, 2, 3], p=[0.5, 0.35, 0.15]))
        picked = rng.choice(len(LABELS), size=how_many, replace=False, p=popularity)
        labels = sorted(LABELS[label_order[index]] for index in picked)
        rows.append({"image": name, "user_id": f"user{owner:05d}", "labels": labels})
    return rows


# --- per-image generation (runs in worker processes) ---------------------------------------

_SOURCES: dict[str, np.ndarray] = {}
_NOISE: dict[int, np.ndarray] = {}


def load_sources() -> dict[str, np.ndarray]:
    """The bundled scikit-image photos by name: HxWx3 (color) or HxW (gray) uint8."""
    if not _SOURCES:
        import skimage.data

        for name in COLOR_SOURCES:
            if name.startswith("motorcycle_"):
                left, right, _disparity = skimage.data.stereo_motorcycle()
                array = left if name.endswith("left") else right
            else:
                array = getattr(skimage.data, name)()
            _SOURCES[name] = np.ascontiguousarray(array[..., :3], dtype=np.uint8)
        for name in GRAY_SOURCES:
            _SOURCES[name] = np.ascontiguousarray(getattr(skimage.data, name)(), dtype=np.uint8)
    return _SOURCES


def _noise_tile(seed: int) -> np.ndarray:
    """A fixed tile of unit Gaussian noise (float32), shared by all images of a process."""
    if seed not in _NOISE:
        rng = np.random.default_rng([seed, 99])
        _NOISE[seed] = rng.standard_normal((NOISE_TILE, NOISE_TILE, 3), dtype=np.float32)
    return _NOISE[seed]


def _weighted(rng: np.random.Generator, choices: Sequence[tuple[object, float]]) -> object:
    weights = np.array([weight for _value, weight in choices])
    return choices[int(rng.choice(len(choices), p=weights / weights.sum()))][0]


def _write_images(task: tuple[str, int, str, list[tuple[int, str]]]) -> list[int]:
    """Worker: write the images with the given (index, relative path); returns their sizes in bytes."""
    kind, seed, root, items = task
    sizes = []
    for index, name in items:
        data = make_photo(seed, index) if kind == "photos" else make_flair256(seed, index)
        with open(os.path.join(root, name), "wb") as handle:
            handle.write(data)
        sizes.append(len(data))
    return sizes


def _random_crop(rng: np.random.Generator, source: np.ndarray, aspect: float, min_area: float) -> np.ndarray:
    """A random crop of ``source`` with ``aspect`` (w/h), covering min_area..1 of the largest such crop."""
    height, width = source.shape[:2]
    full_w, full_h = (width, width / aspect) if width / height < aspect else (height * aspect, height)
    scale = math.sqrt(rng.uniform(min_area, 1.0))
    crop_w = max(16, int(full_w * scale))
    crop_h = max(16, int(full_h * scale))
    left = int(rng.integers(0, width - crop_w + 1))
    top = int(rng.integers(0, height - crop_h + 1))
    return source[top : top + crop_h, left : left + crop_w]


def _jitter(rng: np.random.Generator, crop: np.ndarray) -> np.ndarray:
    """Brightness, contrast, saturation and white-balance jitter, and a random horizontal flip."""
    pixels = crop.astype(np.float32)
    if pixels.ndim == 3:
        gray = pixels.mean(axis=2, keepdims=True)
        pixels = gray + (pixels - gray) * rng.uniform(0.7, 1.3)
        pixels *= rng.uniform(0.92, 1.08, size=3).astype(np.float32)
    mean = pixels.mean()
    pixels = (pixels - mean) * rng.uniform(0.8, 1.2) + mean * rng.uniform(0.75, 1.25)
    if rng.random() < 0.5:
        pixels = pixels[:, ::-1]
    return pixels.clip(0, 255).astype(np.uint8)


def _add_noise(rng: np.random.Generator, image: Image.Image, seed: int, sigma: float) -> Image.Image:
    pixels = np.asarray(image, dtype=np.float32)
    height, width = pixels.shape[:2]
    tile = _noise_tile(seed)
    top = int(rng.integers(0, NOISE_TILE - height + 1))
    left = int(rng.integers(0, NOISE_TILE - width + 1))
    noise = tile[top : top + height, left : left + width]
    # Color images: mostly luminance noise, a little chroma noise.
    noise = noise[..., 0] if pixels.ndim == 2 else 0.8 * noise[..., :1] + 0.35 * noise
    return Image.fromarray((pixels + sigma * noise).clip(0, 255).astype(np.uint8), image.mode)


def make_photo(seed: int, index: int) -> bytes:
    """The JPEG bytes of photo ``index``: a camera-like file of mixed size and settings."""
    rng = np.random.default_rng([seed, 1, index])
    sources = load_sources()
    names = GRAY_SOURCES if rng.random() < GRAY_FRACTION else COLOR_SOURCES
    source = sources[names[int(rng.integers(len(names)))]]
    long_side = int(_weighted(rng, LONG_SIDES))  # type: ignore[call-overload]
    aspect = float(_weighted(rng, ASPECTS))  # type: ignore[arg-type]
    portrait = rng.random() < PORTRAIT_FRACTION
    width, height = long_side, max(1, round(long_side / aspect))
    if portrait:
        width, height = height, width
    crop = _jitter(rng, _random_crop(rng, source, width / height, 0.35))
    mode = "L" if crop.ndim == 2 else "RGB"
    picture = Image.fromarray(crop, mode)
    upscale = width / picture.width
    filter_ = Image.Resampling.BICUBIC if upscale > 1 else Image.Resampling.LANCZOS
    picture = picture.resize((width, height), filter_)
    # Upscaled crops are smoother than real photos of that size: more noise restores
    # a realistic 1.5-3 bits per pixel (and so realistic entropy-decoding work).
    sigma = float(rng.uniform(1.5, 4.0)) * math.sqrt(max(1.0, upscale))
    picture = _add_noise(rng, picture, seed, sigma)

    save: dict[str, object] = {"quality": int(rng.integers(85, 96))}
    if rng.random() < PROGRESSIVE_FRACTION:
        save["progressive"] = True
    if mode == "RGB" and rng.random() < FULL_CHROMA_FRACTION:
        save["subsampling"] = 0
    if rng.random() < EXIF_FRACTION:
        exif = Image.Exif()
        make, model = CAMERAS[int(rng.integers(len(CAMERAS)))]
        exif[EXIF_MAKE] = make
        exif[EXIF_MODEL] = model
        exif[EXIF_DATETIME] = f"2013:{rng.integers(1, 13):02d}:{rng.integers(1, 29):02d} 12:00:00"
        orientation = 1
        if rng.random() < ROTATED_FRACTION:
            orientation = int(_weighted(rng, ORIENTATIONS))  # type: ignore[call-overload]
            picture = picture.transpose(STORED_FOR_ORIENTATION[orientation])
        exif[EXIF_ORIENTATION] = orientation
        save["exif"] = exif.tobytes()
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", **save)
    return buffer.getvalue()


def make_flair256(seed: int, index: int) -> bytes:
    """The JPEG bytes of small image ``index``: 256x256, quality 90, baseline, no metadata."""
    rng = np.random.default_rng([seed, 2, index])
    sources = load_sources()
    source = sources[COLOR_SOURCES[int(rng.integers(len(COLOR_SOURCES)))]]
    picture = Image.fromarray(np.ascontiguousarray(_random_crop(rng, source, 1.0, 0.3)), "RGB")
    filter_ = Image.Resampling.LANCZOS if picture.width > 256 else Image.Resampling.BICUBIC
    small = picture.resize((256, 256), filter_, reducing_gap=2.0)
    picture = Image.fromarray(_jitter(rng, np.asarray(small)), "RGB")
    picture = _add_noise(rng, picture, seed, float(rng.uniform(1.0, 2.5)))
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()
