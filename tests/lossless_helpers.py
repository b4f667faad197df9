"""Small lossless stores for the export, loader and training tests: 8-bit RGB or gray, 16-bit gray.

Every source image is a PNG at the store's size, so a lossless store holds exactly its pixels
(16 bits: its values); :func:`source_pixels` gives them by image id, [S, S, C] as ``load_user`` does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from helpers import fast_options, write_jsonl
from PIL import Image

import fedimage

SIZE = 32
#: user -> (partition, images): train, val and test users, as training needs.
USERS = {"u0": ("train", 3), "u1": ("train", 2), "u2": ("train", 2), "v0": ("val", 2), "t0": ("test", 2)}
LABELS = ("cat", "dog")


def source_pixels(bit_depth: int = 8, color: str = "rgb", seed: int = 0) -> dict[str, np.ndarray]:
    """{image id: pixels [S, S, C]}: random uint8 RGB or gray, or uint16 gray over the whole range."""
    rng = np.random.default_rng(seed)
    pixels = {}
    for user, (_, count) in USERS.items():
        for index in range(count):
            if bit_depth == 16:
                array = rng.integers(0, 65536, (SIZE, SIZE, 1), dtype=np.uint16)
                array[0, 0, 0], array[0, 1, 0] = 0, 65535  # both ends of the range
            else:
                array = rng.integers(0, 256, (SIZE, SIZE, 3 if color == "rgb" else 1), dtype=np.uint8)
            pixels[f"{user}-{index}"] = array
    return pixels


def lossless_store(
    root: Path, bit_depth: int = 8, color: str = "rgb", seed: int = 0
) -> tuple[Path, dict[str, np.ndarray]]:
    """A lossless store of :func:`source_pixels` under ``root`` (labels alternate), and those pixels."""
    color = "gray" if bit_depth == 16 else color
    pixels = source_pixels(bit_depth, color, seed)
    rows = []
    for number, (image_id, array) in enumerate(pixels.items()):
        name = f"images/{image_id}.png"
        (root / "images").mkdir(parents=True, exist_ok=True)
        Image.fromarray(array[:, :, 0] if array.shape[-1] == 1 else array).save(root / name)
        user = image_id.split("-")[0]
        rows.append(
            {
                "image": name,
                "image_id": image_id,
                "user_id": user,
                "partition": USERS[user][0],
                "labels": [LABELS[number % 2]],
            }
        )
    manifest = write_jsonl(root / "manifest.jsonl", rows)
    image = fedimage.ImageOptions(size=SIZE, storage="lossless", color=color, bit_depth=bit_depth)
    path = root / f"lossless-{bit_depth}-{color}.h5"
    fedimage.convert(manifest, path, fast_options(image=image))
    return path, pixels
