"""DICOM conversion: fedimage against a plain pydicom loop, in the same run.

A synthetic PACS export of ``--files`` CT files (``--side`` x ``--side``, 16-bit signed, rescale and
window; a third RLE compressed; patients of 8 files) is converted

1. by a plain pydicom loop in one process, the way a script would: ``dcmread``, ``pixel_array``,
   ``apply_modality_lut``, ``apply_voi_lut``, scale to 8 bits, Pillow resize to ``--size``, JPEG
   encode (no validation, no pseudonyms, no store: the floor of the work);
2. by ``fedimage convert`` into an 8-bit JPEG store (pseudonymized, ``--workers`` processes), and
3. into a 16-bit lossless store at the files' own size (``--storage lossless --bit-depth 16``).

Each run is timed (wall and CPU seconds) and printed as images per second and as a ratio to the
loop. The machine is noisy: compare ratios from one run.

    .venv/bin/python bench/dicom.py [--files 600] [--side 512] [--size 256] [--workers 2]
"""

from __future__ import annotations

import argparse
import io
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from dicom_helpers import CT_STORAGE, compressed, new_dataset, to_bytes, write

import fedimage
from fedimage import ImageOptions, PlanOptions, SplitRatios
from fedimage.privacy.pseudonyms import Pseudonymizer

RLE_LOSSLESS = "1.2.840.10008.1.2.5"


def make_export(root: Path, files: int, side: int) -> None:
    """``files`` CT files under ``root/study<patient>/IM<n>.dcm``: smooth 12-bit anatomy-like values."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:side, 0:side].astype(np.float32) / side
    for index in range(files):
        patient = index // 8
        phase = rng.uniform(0, 6.28)
        values = 900 * np.sin(6 * x + phase) * np.cos(5 * y) + rng.normal(0, 20, (side, side))
        pixels = np.clip(values, -1024, 2000).astype(np.int16)
        ds = new_dataset(
            CT_STORAGE, "CT", serial=(7, patient + 1, index + 1), identifiers={"PatientID": f"P{patient}"}
        )
        ds.set_pixel_data(pixels, "MONOCHROME2", 12, generate_instance_uid=False)
        ds.RescaleSlope, ds.RescaleIntercept = 1.0, 0.0
        ds.WindowCenter, ds.WindowWidth = 40.0, 400.0
        data = to_bytes(ds)
        if index % 3 == 0:
            data = compressed(data, RLE_LOSSLESS)
        write(root / f"study{patient:04d}" / f"IM{index:05d}.dcm", data)


def plain_loop(paths: list[Path], size: int) -> int:
    """The baseline: what a short pydicom script does per file."""
    import pydicom
    from PIL import Image
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    written = 0
    for path in paths:
        ds = pydicom.dcmread(path)
        values = apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds)
        low, high = float(values.min()), float(values.max())
        scaled = ((values - low) / max(high - low, 1e-9) * 255).astype(np.uint8)
        image = Image.fromarray(scaled).resize((size, size), Image.Resampling.BICUBIC)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=90)
        written += 1
    return written


def timed(run) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds of this process and its children, result)."""
    before = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    start = time.perf_counter()
    result = run()
    wall = time.perf_counter() - start
    after = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    cpu = sum(a.ru_utime + a.ru_stime - b.ru_utime - b.ru_stime for a, b in zip(after, before, strict=True))
    return wall, cpu, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=600)
    parser.add_argument("--side", type=int, default=512)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.work) as folder:
        root = Path(folder) / "pacs"
        make_export(root, args.files, args.side)
        paths = sorted(root.rglob("*.dcm"))
        key = Pseudonymizer(bytes(range(32)))
        plan = PlanOptions(split=SplitRatios.parse("1,0,0"))
        runs = {
            "plain pydicom loop (1 process)": lambda: plain_loop(paths, args.size),
            f"fedimage convert, jpeg {args.size} px ({args.workers} workers)": lambda: (
                fedimage.convert(
                    root,
                    Path(folder) / "jpeg.h5",
                    fedimage.ConvertOptions(
                        image=ImageOptions(size=args.size, color="gray"),
                        plan=plan,
                        workers=args.workers,
                        quiet=True,
                        pseudonyms=key,
                    ),
                ).written
            ),
            f"fedimage convert, lossless 16-bit {args.side} px ({args.workers} workers)": lambda: (
                fedimage.convert(
                    root,
                    Path(folder) / "lossless.h5",
                    fedimage.ConvertOptions(
                        image=ImageOptions(size=args.side, storage="lossless", color="gray", bit_depth=16),
                        plan=plan,
                        workers=args.workers,
                        quiet=True,
                        pseudonyms=key,
                    ),
                ).written
            ),
        }
        print(f"{args.files} CT files {args.side}x{args.side} (a third RLE), {args.workers} workers")
        print(f"{'run':<58}{'images/s':>10}{'wall s':>9}{'CPU s':>8}{'ratio':>8}")
        baseline = None
        for name, run in runs.items():
            wall, cpu, written = timed(run)
            rate = written / wall
            baseline = baseline or rate
            print(f"{name:<58}{rate:>10.0f}{wall:>9.1f}{cpu:>8.1f}{rate / baseline:>7.2f}x")
            assert written == args.files, f"{name}: wrote {written} of {args.files}"


if __name__ == "__main__":
    main()
