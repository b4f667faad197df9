"""The simplejpeg fast path for JPEGs gives exactly the pixels of Pillow's path, and the same decisions."""

from __future__ import annotations

import io

import numpy as np
import pytest
from helpers import exif_with, jpeg_bytes, photo
from PIL import Image

from fedimage.imaging.standardize import (
    ImageOptions,
    ImageRejected,
    _decode,
    _decode_jpeg,
    _jpeg_header,
    standardize_bytes,
)


def pillow_pixels(data: bytes, options: ImageOptions) -> np.ndarray:
    """What Pillow's path (draft + bicubic) makes of ``data``."""
    return np.asarray(_decode(data, options))


class TestSamePixelsAsPillow:
    # (width, height, save options, size, resize): the fast path must match Pillow's path byte for byte
    CASES = [
        (640, 480, {}, 64, "crop"),  # 1/4 scale decode
        (480, 640, {}, 64, "pad"),
        (300, 200, {}, 64, "stretch"),
        (1000, 333, {"subsampling": 0}, 100, "crop"),  # 4:4:4, 1/2 scale
        (517, 389, {"progressive": True}, 64, "crop"),
        (64, 48, {}, 128, "crop"),  # upscale: no DCT scaling
        (800, 600, {"exif": exif_with(orientation=6)}, 96, "crop"),
        (800, 600, {"exif": exif_with(orientation=3)}, 96, "pad"),
        (600, 800, {"exif": exif_with(orientation=8)}, 96, "stretch"),
    ]

    @pytest.mark.parametrize(("width", "height", "save", "size", "resize"), CASES)
    def test_pixels_equal(self, width, height, save, size, resize):
        data = jpeg_bytes(photo(width, height, seed=width), quality=92, **save)
        options = ImageOptions(size=size, resize=resize, storage="raw")
        fast = _decode_jpeg(data, _jpeg_header(data), options)
        assert fast is not None, "the fast path must take a plain YCbCr JPEG"
        np.testing.assert_array_equal(np.asarray(fast), pillow_pixels(data, options))
        stored = np.frombuffer(standardize_bytes(data, options), np.uint8).reshape(size, size, 3)
        np.testing.assert_array_equal(stored, pillow_pixels(data, options))

    def test_grayscale_jpeg(self):
        data = jpeg_bytes(photo(400, 300).convert("L"))
        options = ImageOptions(size=64, storage="raw")
        fast = np.asarray(_decode_jpeg(data, _jpeg_header(data), options))
        np.testing.assert_array_equal(fast, pillow_pixels(data, options))


class TestFallsBackToPillow:
    def test_cmyk_is_left_to_pillow(self):
        data = jpeg_bytes(photo(120, 90).convert("CMYK"))
        assert _decode_jpeg(data, _jpeg_header(data), ImageOptions(size=32)) is None

    def test_a_stream_libjpeg_warns_about_is_rejected_not_left_to_pillow(self):
        # Pillow ignores libjpeg's warnings (the lost part comes out gray); strict simplejpeg's
        # error is the rejection, at any size
        data = jpeg_bytes(photo(300, 200))
        scan = data.index(b"\xff\xda")
        damaged = data[: scan + (len(data) - scan) // 3] + b"\xff\xd9"
        with Image.open(io.BytesIO(damaged)) as tolerant:
            tolerant.load()
        for size in (32, 200, 400):
            for storage in ("raw", "jpeg"):
                with pytest.raises(ImageRejected, match="corrupt JPEG data: premature end of data segment"):
                    standardize_bytes(damaged, ImageOptions(size=size, storage=storage))

    def test_truncated_jpeg_is_rejected(self):
        data = jpeg_bytes(photo(400, 300))
        with pytest.raises(ImageRejected, match="truncated image data"):
            standardize_bytes(data[: len(data) // 2], ImageOptions(size=32))

    def test_bomb_is_rejected_before_decoding(self):
        data = jpeg_bytes(photo(400, 300))
        with pytest.raises(ImageRejected, match=r"decompression bomb: 400x300 is more than 100,000 pixels"):
            standardize_bytes(data, ImageOptions(size=32, max_pixels=100_000))


def test_jpeg_output_is_deterministic_and_decodable():
    data = jpeg_bytes(photo(900, 700, seed=3), exif=exif_with(orientation=6))
    options = ImageOptions(size=64)
    first = standardize_bytes(data, options)
    assert first == standardize_bytes(data, options)
    assert first.startswith(b"\xff\xd8") and b"Exif" not in first
    header = _jpeg_header(first)
    assert (header.width, header.height) == (64, 64)
