"""Where a conversion's CPU time goes: each part of the work timed alone, on one core, in bare loops.

Used by ``flair_scale.py``: every figure is the CPU seconds of one part of converting the
whole set, measured on this machine in the same run as the conversions (a sample of images,
scaled to the set), so the parts can be set beside a conversion's measured CPU seconds:

* ``read``: opening and reading every image file;
* ``jpeg header + strip``: parsing the JPEG segments and dropping the metadata (jpeg store);
* ``validating decode``: libjpeg-turbo's decode at 1/8 scale (jpeg store: every stored JPEG);
* ``full decode``: decoding to RGB pixels into one reused buffer, as a conversion decodes into its
  shared memory (raw store; what prepare_dataset.py's Pillow does, into new arrays);
* ``checksums``: SHA-256 of what is stored (the JPEG bytes, or the pixels);
* ``HDF5 store, written once``: the whole store (every user's nine datasets, the images
  included) written once by fedimage's writer from payloads in memory: HDF5, the writer's
  bookkeeping and, for a raw store, writing the pixels as a conversion does (each user's from
  page-aligned memory, past the page cache where the file system allows); the writer's own
  checksums (the part above) are taken out, so the parts add up.

What a conversion spends beyond their sum is orchestration: shard files, the copy of each shard's
small datasets into the store, worker processes, planning.

Two more figures bound what any conversion could reach: :func:`serial_start`, the wall seconds
before a worker can start (a fresh interpreter's start-up and imports, then planning), and for a
jpeg store ``HDF5, fewest datasets`` (:func:`write_fewest`): the store written with only the five
datasets per user a jpeg store cannot do without (JPEG bytes, offsets, ids, both label lists: no
pfl-research sparse labels), the least HDF5 work FLAIR's one-group-per-user layout allows.
"""

from __future__ import annotations

import json
import mmap
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import simplejpeg

SAMPLE = 4000
#: Each part is timed this many times and the least is kept: noise (another process, the kernel's
#: writeback, a hypervisor) only ever adds time.
REPEATS = 3


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _timed(loop: Any, items: list[Any], scale: float) -> float:
    """The least CPU seconds of :data:`REPEATS` runs of ``loop(items)``, times ``scale``."""
    return min(_once(loop, items) for _ in range(REPEATS)) * scale


def _once(loop: Any, *args: Any) -> float:
    started = _cpu()
    loop(*args)
    return _cpu() - started


def time_split(root: Path, storage: str, size: int = 256) -> dict[str, float]:
    """CPU seconds of each part of converting the FLAIR-shaped set at ``root`` into a ``storage`` store."""
    from fedimage.imaging.jpeg_segments import read_jpeg_info, strip_metadata
    from fedimage.store.checksum import DIGESTS, current_digest

    os.sync()  # the kernel's writeback of earlier runs' stores does not compete with what is timed
    rows = json.loads((root / "labels_and_metadata.json").read_text())
    paths = [str(root / "small_images" / f"{row['image_id']}.jpg") for row in rows]
    sample = paths[:: max(1, len(paths) // SAMPLE)][:SAMPLE]
    scale = len(paths) / len(sample)

    def read(items: list[str]) -> None:
        for path in items:
            with open(path, "rb") as handle:
                handle.read()

    datas = [Path(path).read_bytes() for path in sample]
    parts: dict[str, float] = {"read": _timed(read, sample, scale)}
    digest = DIGESTS[current_digest()]  # the hash of the stores written now (BLAKE3)
    if storage == "jpeg":
        parts["jpeg header + strip"] = _timed(
            lambda items: [strip_metadata(data, read_jpeg_info(data)) for data in items], datas, scale
        )
        parts["validating decode"] = _timed(
            lambda items: [
                simplejpeg.decode_jpeg(data, colorspace="GRAY", min_height=1, min_width=1, min_factor=8)
                for data in items
            ],
            datas,
            scale,
        )
        parts["checksums"] = _timed(lambda items: [digest(data).digest() for data in items], datas, scale)
    else:
        into = bytearray(size * size * 3)
        parts["full decode"] = _timed(
            lambda items: [simplejpeg.decode_jpeg(data, colorspace="RGB", buffer=into) for data in items],
            datas,
            scale,
        )
        pixels = bytes(size * size * 3)
        parts["checksums"] = _timed(lambda items: [digest(pixels).digest() for _ in items], datas, scale)
    written = min(_write_once(rows, storage, size, datas) for _ in range(REPEATS))
    parts["HDF5 store, written once"] = max(0.0, written - parts["checksums"])
    return parts


def _write_once(rows: list[dict[str, Any]], storage: str, size: int, datas: list[bytes]) -> float:
    """CPU seconds of writing the whole store once from payloads in memory (sample JPEGs reused)."""
    from fedimage.store.writer import DIRECT_ALIGNMENT, StoreWriter

    users: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        users[row["partition"], row["user_id"]].append(row)
    coarse = sorted({label for row in rows for label in row["labels"]})
    fine = sorted({label for row in rows for label in row["fine_grained_labels"]})
    image_bytes = size * size * 3
    # a raw store's pixels come from page-aligned memory, as from a conversion's shared slots
    most = max(len(user_rows) for user_rows in users.values()) * image_bytes if storage == "raw" else 1
    memory = mmap.mmap(-1, most)
    image = memoryview(memory)[:image_bytes]
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as folder:
        path = Path(folder) / "once.h5"
        started = _cpu()
        reserve = len(rows) * image_bytes + len(users) * DIRECT_ALIGNMENT if storage == "raw" else 0
        with StoreWriter(
            path,
            storage=storage,
            image_size=size,
            coarse_labels=coarse,
            fine_labels=fine,
            durable=False,
            pixels_elsewhere=storage == "raw",
            reserve_bytes=reserve,
        ) as writer:
            index = 0
            for (split, user_id), user_rows in users.items():
                group = writer.user(split, user_id)
                for row in user_rows:
                    payload = image if storage == "raw" else datas[index % len(datas)]
                    index += 1
                    group.add(
                        payload, row["image_id"], tuple(row["labels"]), tuple(row["fine_grained_labels"])
                    )
                group.close()
                if storage == "raw":  # the pixels as a conversion writes them (past the page cache)
                    user = [split, user_id, len(user_rows), ""]
                    writer._write_pixels([user], memoryview(memory)[: len(user_rows) * image_bytes], None)
            writer.finish({})
        seconds = _cpu() - started  # the pixel thread's CPU included: one process
    image.release()
    memory.close()
    return seconds


def serial_start(root: Path) -> dict[str, float]:
    """Wall seconds before any worker can start converting ``root`` (the least of :data:`REPEATS`
    runs each): a fresh interpreter that imports what ``fedimage convert`` needs, then planning
    (reading the metadata, splitting, sharding)."""
    from fedimage import ConvertOptions, ImageOptions, open_source
    from fedimage.conversion.pipeline import prepare

    command = [
        sys.executable,
        "-c",
        "import fedimage.cli.convert, fedimage.conversion.pipeline, h5py, simplejpeg",
    ]
    options = ConvertOptions(image=ImageOptions(size=256), workers=2, quiet=True)
    imports, planning = [], []
    for _ in range(REPEATS):
        started = time.perf_counter()
        subprocess.run(command, check=True)
        imports.append(time.perf_counter() - started)
        with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as folder:
            started = time.perf_counter()
            run = prepare(open_source(root), Path(folder) / "plan.h5", options, None)
            planning.append(time.perf_counter() - started)
            run.work.remove()
    return {"start-up and imports": min(imports), "planning": min(planning)}


def write_fewest(root: Path, sample: int = SAMPLE) -> float:
    """CPU seconds of writing a jpeg store's users with the five datasets each it cannot do without
    (see the module's doc), through fedimage's dataset writer; JPEGs of a sample reused; the least
    of :data:`REPEATS` runs."""
    rows = json.loads((root / "labels_and_metadata.json").read_text())
    paths = [root / "small_images" / f"{row['image_id']}.jpg" for row in rows]
    datas = [path.read_bytes() for path in paths[:: max(1, len(paths) // sample)][:sample]]
    users: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        users[row["partition"], row["user_id"]].append(row)
    return min(_once(_write_fewest, users, datas) for _ in range(REPEATS))


def _write_fewest(users: dict[tuple[str, str], list[dict[str, Any]]], datas: list[bytes]) -> None:
    import h5py
    import numpy as np

    from fedimage.store.writer import write_dataset

    with (
        tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as folder,
        h5py.File(Path(folder) / "fewest.h5", "w", track_order=False) as file,
    ):
        splits: dict[str, h5py.Group] = {}
        index = 0
        for (split, user_id), user_rows in users.items():
            parent = splits.get(split)
            if parent is None:
                parent = splits[split] = file.create_group(split)
            group = h5py.Group(h5py.h5g.create(parent.id, user_id.encode()))
            payloads = [datas[(index + i) % len(datas)] for i in range(len(user_rows))]
            index += len(user_rows)
            offsets = np.cumsum([0, *map(len, payloads)], dtype=np.int64)
            write_dataset(group, "jpeg", np.frombuffer(b"".join(payloads), np.uint8), compact_small=False)
            write_dataset(group, "jpeg_offsets", offsets)
            write_dataset(group, "image_ids", np.array([row["image_id"].encode() for row in user_rows]))
            for name in ("labels", "fine_grained_labels"):
                write_dataset(group, name, np.array(["|".join(row[name]).encode() for row in user_rows]))
