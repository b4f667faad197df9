"""Render ``fedimage report`` in headless Chromium and check the screenshot is not blank.

Builds three small stores whose users are Dirichlet partitions (alpha 0.1, 1, 100) of the same
synthetic labelled images, writes one side-by-side report, screenshots it with
``chromium --headless`` (Debian package ``chromium``) and checks that the page shows the
plots: enough non-white pixels and many colours.

    .venv/bin/python scripts/check_report_render.py --out /tmp/fedimage-report-check
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from fedimage import ConvertOptions, ImageOptions, convert, open_source
from fedimage.analysis.report import heterogeneity_report
from fedimage.partitioning import PartitionOptions, partition_images

LABELS = [f"class{index:02d}" for index in range(10)]


def build_stores(out: Path, images: int, seed: int) -> list[Path]:
    rng = np.random.default_rng(seed)
    pictures = out / "images"
    pictures.mkdir(parents=True, exist_ok=True)
    for index, _ in enumerate(LABELS):
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        Image.new("RGB", (40, 40), colour).save(pictures / f"{index}.png")
    labels = rng.integers(0, len(LABELS), images)
    ids = [f"img{i:05d}" for i in range(images)]
    stores = []
    for alpha in (0.1, 1.0, 100.0):
        options = PartitionOptions("dirichlet", num_clients=60, min_per_client=5, alpha=alpha, seed=seed)
        clients = partition_images(ids, options, labels)
        manifest = out / f"alpha{alpha:g}.jsonl"
        rows = [
            {
                "image": f"images/{label}.png",
                "image_id": image_id,
                "user_id": f"c{clients[image_id]:03d}",
                "labels": [LABELS[label]],
            }
            for image_id, label in zip(ids, labels.tolist(), strict=True)
        ]
        manifest.write_text("".join(json.dumps(row) + "\n" for row in rows))
        store = out / f"dirichlet_alpha{alpha:g}.h5"
        convert(
            open_source(manifest),
            store,
            ConvertOptions(image=ImageOptions(size=32), workers=1, quiet=True, overwrite=True),
        )
        stores.append(store)
    return stores


def screenshot(html: Path, png: Path) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        sys.exit("no chromium found: apt-get install -y chromium")
    command = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--window-size=1400,2600",
        f"--screenshot={png}",
        html.resolve().as_uri(),
    ]
    subprocess.run(command, check=True, capture_output=True, timeout=120)


def check(png: Path) -> dict[str, float]:
    with Image.open(png) as image:
        pixels = np.asarray(image.convert("RGB"))
    non_white = float((pixels < 240).any(axis=2).mean())
    colours = len(np.unique(pixels.reshape(-1, 3), axis=0))
    return {"width": pixels.shape[1], "height": pixels.shape[0], "non_white": non_white, "colours": colours}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/fedimage-report-check"))
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    stores = build_stores(args.out, args.images, args.seed)
    files = heterogeneity_report(stores, args.out / "report")
    png = args.out / "screenshot.png"
    screenshot(files.html, png)
    result = check(png)
    ok = result["non_white"] > 0.03 and result["colours"] > 200  # a blank page: ~0 and 1
    print(f"{'OK' if ok else 'BLANK?'}: {files.html} -> {png}: {result}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
