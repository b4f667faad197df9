"""Export throughput of the four formats, with baselines measured in the same run.

Converts the generated ``flair256`` set (256x256 JPEGs, heavy-tailed users; see
``_photos.py``) into a jpeg and a raw store, then times each export and two baselines:

``read``       plain h5py read of every user's JPEG bytes from the jpeg store, split per
               image (the least any export of those images must do)
``ml-flair``   what ml-flair's ``prepare_dataset.py --not_group_data_by_user`` does per
               image, fed from the jpeg store: Pillow decode, ``np.asarray``, high-level
               h5py writes of ``image``, ``labels``, ``fine_grained_labels``, ``user_id``

Ratios are images/s against ``read`` and, for ``flair-central``, against ``ml-flair``.
Timings include writing (page cache, no fsync); the median of ``--repeat`` runs is shown.

    .venv/bin/python bench/export.py [--images 3000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _photos

import fedimage
from fedimage.exports import EXPORT_FORMATS, ExportOptions, export
from fedimage.exports.destination import size_on_disk


def read_baseline(store_path: Path, out: Path) -> int:
    """Every JPEG of the store as bytes, with plain h5py calls; writes nothing."""
    count = 0
    with h5py.File(store_path, "r") as h5:
        for split in h5:
            if split == "metadata":
                continue
            for user in h5[split].values():
                blob, offsets = user["jpeg"][()], user["jpeg_offsets"][()]
                count += len([blob[offsets[i] : offsets[i + 1]].tobytes() for i in range(len(offsets) - 1)])
    return count


def ml_flair_baseline(store_path: Path, out: Path) -> int:
    """ml-flair's central HDF5 writer, fed from the store (Pillow decode, high-level h5py)."""
    count = 0
    with fedimage.open(store_path) as store, h5py.File(out, "w") as h5:
        for split in store.splits:
            for user_id in store.users(split):
                group = store.group(split, user_id)
                ids = [raw.decode() for raw in group["image_ids"][()]]
                labels, fine = group["labels"][()], group["fine_grained_labels"][()]
                for index, jpeg in enumerate(store.encoded_images(split, user_id)):
                    image_id = ids[index]
                    h5.create_dataset(
                        f"/{split}/{image_id}/image", data=np.asarray(Image.open(io.BytesIO(jpeg)))
                    )
                    h5[f"/{split}/{image_id}/labels"] = labels[index].decode()
                    h5[f"/{split}/{image_id}/fine_grained_labels"] = fine[index].decode()
                    h5[f"/{split}/{image_id}/user_id"] = user_id
                    count += 1
        h5["/metadata/label_counter"] = json.dumps(store.read_metadata("label_counter"))
    return count


def timed(run: Callable[[Path], int], out: Path, repeat: int) -> tuple[float, int, int]:
    """Median seconds, images and output bytes of ``repeat`` runs."""
    seconds = []
    for _ in range(repeat):
        shutil.rmtree(out, ignore_errors=True)
        out.unlink(missing_ok=True)
        started = time.perf_counter()
        images = run(out)
        seconds.append(time.perf_counter() - started)
    written = size_on_disk(out) if out.exists() else 0
    shutil.rmtree(out, ignore_errors=True)
    out.unlink(missing_ok=True)
    return statistics.median(seconds), images, written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "fedimage-bench")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    inputs = _photos.ensure_set(args.workdir, "flair256", args.images, args.seed, jobs=os.cpu_count() or 1)
    stores = {}
    for storage in ("jpeg", "raw"):
        stores[storage] = args.workdir / f"export-{storage}.h5"
        options = fedimage.ConvertOptions(
            image=fedimage.ImageOptions(storage=storage), workers=2, quiet=True, overwrite=True
        )
        fedimage.convert(fedimage.open_source(inputs.manifest), stores[storage], options)
    out = args.workdir / "export-out"
    quiet = ExportOptions(quiet=True)

    def exporter(storage: str, to: str) -> Callable[[Path], int]:
        return lambda dest: export(stores[storage], to, dest, quiet).images

    runs: list[tuple[str, str, Callable[[Path], int]]] = [
        ("baseline", "read (h5py, jpeg bytes)", lambda dest: read_baseline(stores["jpeg"], dest)),
        ("baseline", "ml-flair central writer", lambda dest: ml_flair_baseline(stores["jpeg"], dest)),
        *[("jpeg", to, exporter("jpeg", to)) for to in EXPORT_FORMATS],
        *[("raw", to, exporter("raw", to)) for to in EXPORT_FORMATS],
    ]
    print(
        f"flair256: {inputs.images} images, {inputs.users} users; "
        f"median of {args.repeat} runs (shared 2-core machine: noisy)"
    )
    print(
        f"{'store':<9}{'run':<26}{'seconds':>8}{'images/s':>10}{'MB/s':>8}{'MB':>8}"
        f"{'vs read':>9}{'vs ml-flair':>12}"
    )
    rates: dict[str, float] = {}
    for store, name, run in runs:
        seconds, images, written = timed(run, out, args.repeat)
        rate = images / seconds
        rates.setdefault(name, rate)
        versus_read = rate / rates["read (h5py, jpeg bytes)"]
        versus_flair = f"{rate / rates['ml-flair central writer']:.2f}x" if "central" in name else ""
        print(
            f"{store:<9}{name:<26}{seconds:>8.2f}{rate:>10.0f}{written / 1e6 / seconds:>8.1f}"
            f"{written / 1e6:>8.1f}{versus_read:>8.2f}x{versus_flair:>12}"
        )
    for path in stores.values():
        path.unlink()


if __name__ == "__main__":
    main()
