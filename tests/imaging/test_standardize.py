"""Standardizing single images: formats, modes, orientation, resizing, JPEG copy, bad inputs."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from helpers import exif_with, jpeg_bytes, photo
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from fedimage.errors import OptionError
from fedimage.imaging.jpeg_segments import read_jpeg_info
from fedimage.imaging.standardize import ImageOptions, ImageRejected, standardize_bytes, standardize_file

RAW = ImageOptions(size=32, storage="raw")


def pixels(data: bytes, options: ImageOptions = RAW) -> np.ndarray:
    if options.storage == "raw":
        return np.frombuffer(data, dtype=np.uint8).reshape(options.size, options.size, 3)
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


class TestFormatsBecomeRgb:
    # (description, encoded image): every Pillow-readable kind becomes 32x32 RGB
    CASES = [
        ("png rgb", lambda: encode(photo(50, 40), "PNG")),
        ("png palette", lambda: encode(photo(50, 40).convert("P"), "PNG")),
        ("png grayscale", lambda: encode(photo(50, 40).convert("L"), "PNG")),
        ("gif", lambda: encode(photo(50, 40).convert("P"), "GIF")),
        ("webp", lambda: encode(photo(50, 40), "WEBP")),
        ("bmp", lambda: encode(photo(50, 40), "BMP")),
        ("tiff", lambda: encode(photo(50, 40), "TIFF")),
        ("jpeg gray", lambda: encode(photo(50, 40).convert("L"), "JPEG")),
        ("jpeg cmyk", lambda: encode(photo(50, 40).convert("CMYK"), "JPEG")),
        ("jpeg progressive", lambda: encode(photo(50, 40), "JPEG", progressive=True)),
        ("tiff 1-bit", lambda: encode(photo(50, 40).convert("1"), "TIFF")),
    ]

    @pytest.mark.parametrize(("name", "make"), CASES, ids=[case[0] for case in CASES])
    def test_decodes_to_rgb(self, name, make):
        out = pixels(standardize_bytes(make(), RAW))
        assert out.shape == (32, 32, 3)
        assert out.std() > 5, f"{name}: image content lost"

    def test_cmyk_colors_survive(self):
        red = Image.new("RGB", (40, 40), (220, 20, 20))
        out = pixels(standardize_bytes(encode(red.convert("CMYK"), "JPEG", quality=95), RAW))
        assert np.abs(out.mean(axis=(0, 1)) - [220, 20, 20]).max() < 12

    def test_16_bit_png_is_scaled_not_clipped(self):
        ramp = (np.linspace(0, 65535, 40 * 40).reshape(40, 40)).astype(np.uint16)
        data = encode(Image.fromarray(ramp), "PNG")
        out = pixels(
            standardize_bytes(data, ImageOptions(size=40, storage="raw")),
            ImageOptions(size=40, storage="raw"),
        )
        assert out.min() < 10 and out.max() > 245
        assert len(np.unique(out[..., 0])) > 100

    def test_gif_uses_first_frame(self):
        frames = [Image.new("RGB", (40, 40), color) for color in ((255, 0, 0), (0, 0, 255))]
        buffer = io.BytesIO()
        frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
        out = pixels(standardize_bytes(buffer.getvalue(), RAW))
        assert out[..., 0].mean() > 200 and out[..., 2].mean() < 50

    @pytest.mark.parametrize("mode", ["RGBA", "LA", "P"])
    def test_transparency_is_flattened_on_white(self, mode):
        image = Image.new("RGBA", (40, 40), (255, 0, 0, 0))  # fully transparent red
        image.paste((0, 0, 255, 255), (0, 0, 20, 40))  # opaque blue left half
        if mode == "LA":
            image = image.convert("LA")
        elif mode == "P":
            image = image.convert("P", palette=Image.Palette.ADAPTIVE)
            image.info["transparency"] = image.getpixel((39, 20))
        data = encode(image, "PNG")
        out = pixels(
            standardize_bytes(data, ImageOptions(size=40, storage="raw", resize="stretch")),
            ImageOptions(size=40, storage="raw"),
        )
        assert (out[20, 35] > 240).all(), "transparent area must become white"
        assert (out[20, 5] != 255).any(), "opaque area keeps its color"


class TestOrientationAndResize:
    def test_exif_orientation_is_applied(self):
        image = Image.new("RGB", (60, 40), (0, 0, 0))
        image.paste((255, 255, 255), (0, 0, 30, 40))  # white left half
        rotated = jpeg_bytes(image, quality=95, exif=exif_with(orientation=6))  # display rotated 90 CW
        out = pixels(standardize_bytes(rotated, ImageOptions(size=32, storage="raw", resize="stretch")), RAW)
        # after a 90 degree clockwise rotation the white half is on top
        assert out[:12].mean() > 200 and out[-12:].mean() < 50

    @pytest.mark.parametrize(
        ("resize", "source_size", "check"),
        [
            ("crop", (80, 40), "no black bars"),
            ("pad", (80, 40), "black bars top and bottom"),
            ("stretch", (80, 40), "no black bars"),
        ],
    )
    def test_resize_modes(self, resize, source_size, check):
        image = Image.new("RGB", source_size, (200, 200, 200))
        out = pixels(
            standardize_bytes(encode(image, "PNG"), ImageOptions(size=32, storage="raw", resize=resize))
        )
        if check == "no black bars":
            assert out.min() > 150
        else:
            assert out[0].max() < 10 and out[-1].max() < 10 and out[16].min() > 150

    def test_crop_keeps_the_center(self):
        image = Image.new("RGB", (90, 30), (0, 0, 0))
        image.paste((255, 255, 255), (30, 0, 60, 30))  # white center third
        out = pixels(standardize_bytes(encode(image, "PNG"), RAW))
        assert out.min() > 200

    def test_large_jpeg_uses_draft_and_keeps_content(self):
        big = photo(2000, 1500, seed=3)
        data = jpeg_bytes(big, quality=90)
        out = pixels(
            standardize_bytes(data, ImageOptions(size=64, storage="raw")),
            ImageOptions(size=64, storage="raw"),
        )
        reference = np.asarray(big.crop((250, 0, 1750, 1500)).resize((64, 64), Image.Resampling.BICUBIC))
        assert np.abs(out.astype(int) - reference).mean() < 6

    def test_jpeg_output_has_target_size_and_no_metadata(self):
        data = jpeg_bytes(photo(300, 200), exif=exif_with(gps=True))
        out = standardize_bytes(data, ImageOptions(size=48))
        image = Image.open(io.BytesIO(out))
        assert image.size == (48, 48) and image.mode == "RGB"
        assert not image.getexif() and b"Secret Photographer" not in out


class TestJpegCopy:
    def test_standard_size_baseline_jpeg_is_copied_losslessly_without_exif(self):
        original = jpeg_bytes(photo(64, 64), quality=90, exif=exif_with(gps=True), icc_profile=b"\0" * 128)
        out = standardize_bytes(original, ImageOptions(size=64))
        assert len(out) < len(original)
        assert b"Secret Photographer" not in out and b"Exif" not in out
        np.testing.assert_array_equal(
            pixels(out, ImageOptions(size=64)), pixels(original, ImageOptions(size=64))
        )
        # the entropy-coded data is byte-identical
        assert original[original.index(b"\xff\xda") :] == out[out.index(b"\xff\xda") :]

    def test_grayscale_at_store_size_is_stored_as_rgb_not_copied(self):
        # a byte copy would keep one channel: ml-flair's TensorFlow reader and `datasets` want RGB
        gray = photo(64, 64).convert("L")
        original = jpeg_bytes(gray, quality=90)
        out = standardize_bytes(original, ImageOptions(size=64))
        info = read_jpeg_info(out)
        assert info.is_baseline and info.components == 3 and info.decodes_as_ycbcr_or_gray
        with Image.open(io.BytesIO(out)) as image:
            assert image.mode == "RGB"
            decoded = np.asarray(image).astype(int)
        assert np.abs(decoded - np.asarray(gray)[..., None]).mean() < 3
        raw_options = ImageOptions(size=64, storage="raw")
        assert pixels(standardize_bytes(original, raw_options), raw_options).shape == (64, 64, 3)

    @pytest.mark.parametrize(
        ("why", "make"),
        [
            ("progressive", lambda: jpeg_bytes(photo(64, 64), progressive=True)),
            ("rotated by EXIF", lambda: jpeg_bytes(photo(64, 64), exif=exif_with(orientation=3))),
            ("other size", lambda: jpeg_bytes(photo(64, 65))),
            ("CMYK", lambda: jpeg_bytes(photo(64, 64).convert("CMYK"))),
        ],
    )
    def test_non_standard_jpegs_are_reencoded(self, why, make):
        original = make()
        out = standardize_bytes(original, ImageOptions(size=64))
        info = read_jpeg_info(out)
        assert info.is_baseline and (info.width, info.height) == (64, 64) and info.components == 3, why

    def test_truncated_standard_jpeg_is_rejected_not_copied(self):
        original = jpeg_bytes(photo(64, 64), quality=90)
        with pytest.raises(ImageRejected, match=r"truncated|corrupt"):
            standardize_bytes(original[: len(original) // 2], ImageOptions(size=64))


def _cut_at_a_third(data: bytes) -> bytes:
    scan = data.index(b"\xff\xda")
    return data[: scan + (len(data) - scan) // 3] + b"\xff\xd9"


def _random_bytes_mid_scan(data: bytes) -> bytes:
    scan = data.index(b"\xff\xda")
    middle = scan + (len(data) - scan) // 2
    noise = np.random.default_rng(1).integers(0, 256, 200, dtype=np.uint8).tobytes()
    return data[:middle] + noise + data[middle + 200 :]


def _huge_header_over_small_data(data: bytes) -> bytes:
    frame = data.index(b"\xff\xc0")  # SOF0: length (2), precision (1), height, width
    return data[: frame + 5] + (9000).to_bytes(2, "big") * 2 + data[frame + 9 :]


class TestDamagedJpegs:
    """Damaged scans are rejected at every size and storage, never stored gray-filled (issue 14, 2)."""

    DAMAGED = {
        "scan cut at a third": lambda: _cut_at_a_third(jpeg_bytes(photo(256, 256), quality=90)),
        "random bytes mid-scan": lambda: _random_bytes_mid_scan(jpeg_bytes(photo(256, 256), quality=90)),
        "9000x9000 header over 16x16 data": lambda: _huge_header_over_small_data(
            jpeg_bytes(photo(16, 16), quality=90)
        ),
        "cmyk scan cut at a third": lambda: _cut_at_a_third(jpeg_bytes(photo(256, 256).convert("CMYK"))),
    }

    @pytest.mark.parametrize("storage", ["raw", "jpeg"])
    @pytest.mark.parametrize("size", [256, 300, 1000])
    @pytest.mark.parametrize("name", list(DAMAGED))
    def test_rejected_at_any_size(self, name, size, storage):
        with pytest.raises(ImageRejected, match="corrupt JPEG data: premature end of data segment"):
            standardize_bytes(self.DAMAGED[name](), ImageOptions(size=size, storage=storage))


class TestBadInputs:
    # (description, file content, expected reason pattern)
    CASES = [
        ("empty", b"", "empty file"),
        ("text", b"hello, this is not an image", "not an image"),
        ("truncated jpeg", None, "truncated"),
        ("truncated png", None, "truncated|corrupt"),
    ]

    @pytest.mark.parametrize(("name", "content", "reason"), CASES, ids=[case[0] for case in CASES])
    def test_rejected_with_reason(self, name, content, reason):
        if name == "truncated jpeg":
            content = jpeg_bytes(photo(300, 200))[:3000]
        elif name == "truncated png":
            content = encode(photo(300, 200), "PNG")[:2000]
        with pytest.raises(ImageRejected, match=reason):
            standardize_bytes(content, ImageOptions(size=32))

    def test_decompression_bomb_is_rejected_before_decoding(self):
        data = encode(Image.new("L", (4000, 4000)), "PNG")
        with pytest.raises(ImageRejected, match="decompression bomb"):
            standardize_bytes(data, ImageOptions(size=32, max_pixels=1_000_000))
        assert pixels(
            standardize_bytes(data, ImageOptions(size=32, storage="raw", max_pixels=20_000_000))
        ).shape

    def test_missing_and_directory_paths(self, tmp_path: Path):
        with pytest.raises(ImageRejected, match="file not found"):
            standardize_file(str(tmp_path / "nope.jpg"), RAW)
        with pytest.raises(ImageRejected, match="directory"):
            standardize_file(str(tmp_path), RAW)


class TestOptionsValidation:
    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"size": 4}, "`size`"),
            ({"resize": "zoom"}, "`resize` must be one of crop, pad, stretch"),
            ({"storage": "png"}, "`storage`"),
            ({"quality": 0}, "`quality`"),
        ],
    )
    def test_invalid_options(self, kwargs, message):
        with pytest.raises(OptionError, match=message):
            ImageOptions(**kwargs)


@settings(max_examples=25, deadline=None)
@given(
    side=st.integers(8, 96),
    quality=st.integers(20, 100),
    gray=st.booleans(),
    subsampling=st.sampled_from([0, 1, 2]),
    comment=st.binary(max_size=200),
)
def test_jpeg_copy_is_lossless_for_any_standard_jpeg(side, quality, gray, subsampling, comment):
    image = photo(side, side, seed=side)
    if gray:
        image = image.convert("L")
    original = jpeg_bytes(
        image,
        quality=quality,
        subsampling=subsampling,
        comment=comment,
        exif=exif_with(orientation=1, gps=True),
    )
    out = standardize_bytes(original, ImageOptions(size=side))
    decode = lambda data: np.asarray(Image.open(io.BytesIO(data)))  # noqa: E731
    assert b"Secret Photographer" not in out
    if gray:  # re-encoded as RGB (a store's JPEGs have three components)
        assert read_jpeg_info(out).components == 3
        assert np.abs(decode(out).astype(int) - decode(original)[..., None]).mean() < 4
        return
    np.testing.assert_array_equal(decode(out), decode(original))
    assert original[original.index(b"\xff\xda") :] == out[out.index(b"\xff\xda") :]
