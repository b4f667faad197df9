"""What a source's images look like before any is converted: their sizes and colour, from headers.

A conversion reads the headers (never the pixels) of up to :data:`PROBE_IMAGES` images spread
evenly over the planned order, to resolve ``size="native"`` and to notice a grayscale
collection about to be stored as RGB.

    probe = probe_images(["a.png", "b.png"])
    side, why = native_size(probe, resize="crop")   # 28, "28x28: 2 of 2 sampled images"
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from PIL import Image, UnidentifiedImageError

from fedimage.errors import OptionError

#: Images whose headers a conversion reads before converting.
PROBE_IMAGES = 64
#: Pillow modes that hold one channel of gray levels.
GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
MIN_SIDE, MAX_SIDE = 8, 4096


@dataclass
class ImageProbe:
    """Sizes and colour of the sampled images (``unreadable``: headers Pillow could not open)."""

    sizes: Counter[tuple[int, int]] = field(default_factory=Counter)
    gray: int = 0
    unreadable: int = 0

    @property
    def readable(self) -> int:
        return sum(self.sizes.values())

    @property
    def all_gray(self) -> bool:
        """True when every readable sampled image is grayscale (and there is one)."""
        return self.readable > 0 and self.gray == self.readable


def probe_images(payloads: Iterable[bytes | str | None]) -> ImageProbe:
    """Read the header of each image (encoded bytes or a file path; None is skipped).

    Parameters:
        payloads: what :meth:`fedimage.sources.Source.read_images` returns.
    """
    probe = ImageProbe()
    for payload in payloads:
        if payload is None:
            continue
        try:
            with Image.open(io.BytesIO(payload) if isinstance(payload, bytes) else payload) as image:
                size, mode = image.size, image.mode
        except (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError):
            probe.unreadable += 1  # the conversion rejects it with its reason
            continue
        probe.sizes[size] += 1
        probe.gray += mode in GRAY_MODES
    return probe


def native_size(probe: ImageProbe, resize: str) -> tuple[int, str]:
    """The side that keeps the most common sampled size unscaled, and a line saying why.

    Under ``crop`` and ``stretch`` it is that size's shorter side (nothing is upsampled), under
    ``pad`` its longer side (nothing is cut). Raises :class:`~fedimage.errors.OptionError` when
    no sampled image is readable or the side is outside 8-4096 pixels.

    Parameters:
        probe: what :func:`probe_images` found.
        resize: the conversion's resize mode.
    """
    if not probe.sizes:
        raise OptionError(
            "`size` native: no sampled image could be read to learn the source's size; give a size"
        )
    (width, height), count = max(probe.sizes.items(), key=lambda item: (item[1], item[0]))
    side = max(width, height) if resize == "pad" else min(width, height)
    if not MIN_SIDE <= side <= MAX_SIDE:
        raise OptionError(
            f"`size` native: the source's images are {width}x{height}, a side of {side} px is outside "
            f"{MIN_SIDE}-{MAX_SIDE}; give a size"
        )
    why = f"{width}x{height}: {count} of {probe.readable} sampled images"
    if len(probe.sizes) > 1:
        why += f"; {len(probe.sizes) - 1} other sizes are resized to {side} px"
    return side, why
