"""Shared test helpers: photo-like images, JPEG bytes with EXIF, fast conversion options, tables."""

from __future__ import annotations

import io
import ipaddress
import json
import os
import socket
import struct
from pathlib import Path

import numpy as np
from PIL import Image

import fedimage
from fedimage import ConvertOptions, ImageOptions, PlanOptions, SplitRatios, convert, open_source
from fedimage.exports import ExportOptions

GPS_EXIF_TAG = 0x8825


def photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """A smooth, photo-like RGB image (gradients + shapes) that JPEG compresses realistically."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    channels = []
    for _ in range(3):
        fx, fy, phase = [*rng.uniform(0.5, 4, 2).tolist(), rng.uniform(0, 6.28)]
        channels.append(127 + 120 * np.sin(fx * x / width * 6.28 + phase) * np.cos(fy * y / height * 6.28))
    array = np.stack(channels, axis=-1).clip(0, 255).astype(np.uint8)
    return Image.fromarray(array, "RGB")


def jpeg_bytes(image: Image.Image, **save_options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", **save_options)
    return buffer.getvalue()


def exif_with(orientation: int | None = None, gps: bool = False) -> bytes:
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    if gps:
        exif[GPS_EXIF_TAG] = {1: "N", 2: (48.0, 51.0, 24.0), 3: "E", 4: (2.0, 21.0, 3.0)}
    exif[0x013B] = "Secret Photographer"  # Artist
    return exif.tobytes()


def save_image(path: Path, image: Image.Image, **options) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **options)
    return path


def fast_options(**overrides) -> ConvertOptions:
    """One worker, no progress bar: what most tests want."""
    plan = overrides.pop("plan", PlanOptions(split=SplitRatios(), seed=0))
    image = overrides.pop("image", ImageOptions(size=64))
    defaults = {"workers": 1, "quiet": True, "overwrite": True}
    defaults.update(overrides)
    return ConvertOptions(image=image, plan=plan, **defaults)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


# -- small stores for the export tests ----------------------------------------------------------
SIZE = 64
QUIET = ExportOptions(quiet=True)

# User ids and image ids that are not portable file names (or collide ignoring case).
ODD_USERS = {
    "a/b": ["img/1", ".hidden"],
    "..": ["x" * 250, "CON"],
    "UserA": ["dup", "DUP"],
    "usera": ["ünï cödé"],
    "50%": ["50%"],
    "x.tfrecords": ["y.tfrecords"],
    "59769174@N00": ["1001", "1002"],
}
ODD_PARTITIONS = {"a/b": "train", "..": "train", "UserA": "val", "usera": "val", "50%": "test"}


def flair_store(flair_folder: Path, path: Path, storage: str = "jpeg") -> Path:
    """The miniature FLAIR (6 users, 14 images, 5 fine / 3 coarse labels) as a 64 px store."""
    source = open_source(flair_folder)
    options = fast_options(image=ImageOptions(size=SIZE, storage=storage))
    convert(source, path, options, taxonomy=fedimage.load_taxonomy(flair_folder / "label_relationship.txt"))
    return path


def odd_store(root: Path, storage: str = "jpeg") -> Path:
    """A store whose user and image ids are awkward as file names (see ``ODD_USERS``)."""
    rows = []
    for index, (user, image_ids) in enumerate(ODD_USERS.items()):
        for number, image_id in enumerate(image_ids):
            save_image(root / "images" / f"{index}-{number}.png", photo(SIZE, SIZE, seed=10 * index + number))
            rows.append(
                {
                    "image": f"images/{index}-{number}.png",
                    "user_id": user,
                    "image_id": image_id,
                    "labels": ["animal"] if number % 2 else ["plant", "animal"],
                    "fine_grained_labels": ["cat"] if number % 2 else [],
                    "partition": ODD_PARTITIONS.get(user, "train"),
                }
            )
    manifest = write_jsonl(root / "manifest.jsonl", rows)
    path = root / f"odd-{storage}.h5"
    convert(open_source(manifest), path, fast_options(image=ImageOptions(size=SIZE, storage=storage)))
    return path


def files_of(path: Path) -> dict[str, bytes]:
    """Every file under ``path`` (or the file itself) by relative name, with its bytes."""
    if path.is_file():
        return {"": path.read_bytes()}
    return {
        str(file.relative_to(path)): file.read_bytes() for file in sorted(path.rglob("*")) if file.is_file()
    }


# -- processes and their listening sockets (Linux /proc), for loopback checks --------------------
def descendants(pid: int) -> list[int]:
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    parent = int(handle.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            parents.setdefault(parent, []).append(int(entry))
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        queue.extend(parents.get(current, []))
    return found


def listening_addresses(pids: list[int]) -> set[str]:
    """The local IP addresses that sockets of ``pids`` listen on (TCP, IPv4 and IPv6), from /proc."""
    inodes = set()
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    with_target = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if with_target.startswith("socket:["):
                    inodes.add(int(with_target[8:-1]))
        except OSError:
            continue
    addresses = set()
    for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        with open(f"/proc/net/{table}") as handle:
            for line in handle.read().splitlines()[1:]:
                fields = line.split()
                if fields[3] != "0A" or int(fields[9]) not in inodes:  # 0A: LISTEN
                    continue
                raw = fields[1].split(":")[0]
                packed = b"".join(struct.pack("<I", int(raw[i : i + 8], 16)) for i in range(0, len(raw), 8))
                addresses.add(socket.inet_ntop(family, packed))
    return addresses


def is_loopback_address(address: str) -> bool:
    """True for 127.0.0.0/8 and ::1, also as IPv4-mapped IPv6 (``::ffff:127.0.0.1``)."""
    return ipaddress.ip_address(address.removeprefix("::ffff:")).is_loopback


def make_flair_folder(parent: Path) -> Path:
    """A miniature of FLAIR's raw distribution: 256x256 JPEGs, metadata JSON, label_relationship.txt."""
    root = parent / "flair"
    taxonomy = {"cat": "animal", "dog": "animal", "tree": "plant", "flower": "plant", "car": "equipment"}
    rng = np.random.default_rng(1)
    metadata = []
    image_id = 1000
    for user, (partition, count) in enumerate(
        [("train", 4), ("train", 1), ("train", 3), ("val", 2), ("test", 2), ("train", 2)]
    ):
        for _ in range(count):
            fine = sorted(rng.choice(sorted(taxonomy), size=int(rng.integers(1, 4)), replace=False).tolist())
            coarse = sorted({taxonomy[label] for label in fine})
            data = jpeg_bytes(photo(256, 256, seed=image_id), quality=90, exif=exif_with(gps=True))
            (root / "small_images").mkdir(parents=True, exist_ok=True)
            (root / "small_images" / f"{image_id}.jpg").write_bytes(data)
            metadata.append(
                {
                    "user_id": f"{59769174 + user}@N00",
                    "image_id": str(image_id),
                    "labels": coarse,
                    "partition": partition,
                    "fine_grained_labels": fine,
                }
            )
            image_id += 1
    (root / "labels_and_metadata.json").write_text(json.dumps(metadata))
    (root / "label_relationship.txt").write_text(
        "".join(f"{fine} -> {coarse}\n" for fine, coarse in taxonomy.items())
    )
    return root
