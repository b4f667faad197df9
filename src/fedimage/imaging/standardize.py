"""Standardize one image file: decode, orient, flatten, convert to RGB (or gray), resize, encode.

This is the per-image work of a conversion and runs inside worker processes,
so it takes plain values and returns bytes (never decoded arrays: sending
those between processes costs more than encoding in the worker).

JPEGs that libjpeg-turbo reads as YCbCr or gray (nearly all photos) are decoded
by simplejpeg straight into an array, scaled in the DCT domain by 1/2, 1/4 or
1/8 exactly as Pillow's ``draft`` would (same pixels, about 7% less time); the
resize is Pillow's antialiased bicubic and the JPEG encoder simplejpeg (both
libjpeg-turbo). Anything else (CMYK, RGB-coded, other formats) takes Pillow's path.

Every JPEG is decoded strictly, whatever the path and the output size: a stream that
libjpeg-turbo decodes only with a warning (a scan cut short, corrupt entropy-coded data,
a header larger than its data) is rejected, never stored with its lost part filled gray
as Pillow's tolerant decoder would.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
import simplejpeg
from PIL import Image, UnidentifiedImageError

from fedimage.errors import OptionError
from fedimage.imaging.dicom import DicomOptions, is_dicom, read_dicom_frames
from fedimage.imaging.jpeg_segments import JpegFormatError, JpegInfo, read_jpeg_info, strip_metadata
from fedimage.imaging.rejection import ImageRejected, fixed_reason

RESIZE_MODES = ("crop", "pad", "stretch")
STORAGE_MODES = ("jpeg", "raw", "lossless")
#: Bits per sample a store keeps: 8, or 16 (``lossless`` storage of gray images only).
BIT_DEPTHS = (8, 16)
#: ``rgb``: 3 channels (FLAIR's); ``gray``: 1 channel (a third of the bytes for grayscale collections).
COLOR_MODES = ("rgb", "gray")
#: Which frame of a multi-frame DICOM file becomes the image (``all``: each, see the DICOM source).
DICOM_FRAMES = ("first", "middle", "all")
#: What a path may end with to name one frame of a multi-frame file (see fedimage.sources.dicom).
FRAME_SEPARATOR = "\0frame="
#: ``size="native"``: the side of the source's most common image size (see :mod:`fedimage.imaging.probe`).
NATIVE_SIZE = "native"
WHITE = (255, 255, 255)
COLOUR_IN_16_BITS = fixed_reason(
    "a 16-bit store keeps gray images; this DICOM file is colour (store it 8-bit)"
)
DICOM_OVER_16_BITS = fixed_reason("DICOM pixel values do not fit 16 bits")
IMAGE_OVER_16_BITS = fixed_reason("image values do not fit 16 bits")
#: zlib level of a lossless store's PNG files: on 512x512 16-bit CT, 1 encodes in 23 ms (317 KB), 3 in 30 ms
#: (306 KB), Pillow's default 6 in 164 ms (297 KB).
PNG_COMPRESS_LEVEL = 1
PAD_COLOR = (0, 0, 0)
DEFAULT_MAX_PIXELS = 89_478_485  # Pillow's own decompression-bomb threshold
EXIF_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


@dataclass(frozen=True, slots=True)
class ImageOptions:
    """How every image is standardized.

    ``size``: side of the square output, or ``"native"``: the source's own (resolved by the
    conversion before any image is written, see :func:`fedimage.imaging.probe.native_size`);
    ``resize``: ``crop`` (shorter side to size, then center crop), ``pad`` (longer side to
    size, centered on black) or ``stretch``; ``storage``: ``jpeg`` (encoded at ``quality``)
    or ``raw`` (uint8 pixels); ``color``: ``rgb`` (3 channels, FLAIR's) or ``gray`` (1
    channel: luma, a third of the pixels); ``max_pixels``: larger images are rejected as
    decompression bombs.

        ImageOptions(size=28, color="gray", storage="raw")
    """

    size: int | str = 256
    resize: str = "crop"
    storage: str = "jpeg"
    quality: int = 90
    max_pixels: int = DEFAULT_MAX_PIXELS
    color: str = "rgb"
    #: DICOM inputs: which frame(s) of a multi-frame file (``first``, ``middle``; ``all`` is expanded
    #: into one input per frame by the DICOM source), a window ``(center, width)`` overriding the
    #: file's, and whether a file flagged with burned-in annotation is kept.
    dicom_frames: str = "first"
    dicom_window: tuple[float, float] | None = None
    allow_burned_in: bool = False
    #: 8, or 16 bits per sample (``lossless`` storage, ``gray`` colour): a DICOM file's stored values
    #: exactly (signed ones shifted by 32768), a 16-bit PNG or TIFF's values, an 8-bit image's times 257.
    bit_depth: int = 8

    def __post_init__(self) -> None:
        if self.size != NATIVE_SIZE and not (isinstance(self.size, int) and 8 <= self.size <= 4096):
            raise OptionError(f"`size` must be between 8 and 4096 pixels or 'native', got {self.size!r}")
        if self.resize not in RESIZE_MODES:
            raise OptionError(f"`resize` must be one of {', '.join(RESIZE_MODES)}, got {self.resize!r}")
        if self.storage not in STORAGE_MODES:
            raise OptionError(f"`storage` must be one of {', '.join(STORAGE_MODES)}, got {self.storage!r}")
        if not 1 <= self.quality <= 100:
            raise OptionError(f"`quality` must be between 1 and 100, got {self.quality}")
        if self.color not in COLOR_MODES:
            raise OptionError(f"`color` must be one of {', '.join(COLOR_MODES)}, got {self.color!r}")
        if self.bit_depth not in BIT_DEPTHS:
            raise OptionError(f"`bit_depth` must be 8 or 16, got {self.bit_depth!r}")
        if self.bit_depth == 16 and (self.storage != "lossless" or self.color != "gray"):
            raise OptionError(
                "`bit_depth` 16 keeps gray images losslessly: it needs `storage` lossless and `color` gray"
            )
        if self.dicom_frames not in DICOM_FRAMES:
            raise OptionError(
                f"`dicom_frames` must be one of {', '.join(DICOM_FRAMES)}, got {self.dicom_frames!r}"
            )
        if self.dicom_window is not None:
            window = tuple(self.dicom_window)
            if len(window) != 2 or not all(math.isfinite(value) for value in window) or window[1] < 1:
                raise OptionError(
                    f"`dicom_window` must be (center, width) with width >= 1, got {self.dicom_window!r}"
                )
            object.__setattr__(self, "dicom_window", (float(window[0]), float(window[1])))
        if isinstance(self.size, int) and self.max_pixels < self.size * self.size:
            raise OptionError(f"`max_pixels` must be at least size*size, got {self.max_pixels}")

    @property
    def side(self) -> int:
        """The output side in pixels (a ``native`` size must have been resolved first)."""
        if not isinstance(self.size, int):
            raise OptionError("`size='native'` must be resolved against the source before standardizing")
        return self.size

    @property
    def channels(self) -> int:
        """Channels of a stored image: 3 (rgb) or 1 (gray)."""
        return 1 if self.color == "gray" else 3

    @property
    def pillow_mode(self) -> str:
        return "L" if self.color == "gray" else "RGB"

    @property
    def decode_colorspace(self) -> str:
        """simplejpeg's name of the stored colour space."""
        return "GRAY" if self.color == "gray" else "RGB"


def standardize_file(path: str, options: ImageOptions, into: memoryview | None = None) -> bytes | memoryview:
    """Read ``path`` and return the stored form: JPEG bytes or raw pixel bytes (RGB or gray).

    A path ending in :data:`FRAME_SEPARATOR` and a number names that frame of a multi-frame
    DICOM file. Raises :class:`ImageRejected` with a human-readable reason for any bad input.
    ``into``: room for one image's raw pixels; a JPEG that needs no pixel change is decoded
    straight into it, and ``into`` is returned (any other image's bytes are returned as usual).
    """
    frame = None
    if FRAME_SEPARATOR in path:
        path, _, number = path.partition(FRAME_SEPARATOR)
        frame = int(number)
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        raise ImageRejected("file not found") from None
    except IsADirectoryError:
        raise ImageRejected("path is a directory, not an image file") from None
    except OSError as error:
        raise ImageRejected(f"cannot read file: {error.strerror or error}") from None
    return standardize_bytes(data, options, frame, into)


def standardize_bytes(
    data: bytes, options: ImageOptions, frame: int | None = None, into: memoryview | None = None
) -> bytes | memoryview:
    """Standardize an encoded image held in memory (see :func:`standardize_file`); ``frame``: the
    frame of a multi-frame DICOM file (None: the one ``options.dicom_frames`` picks)."""
    if not data:
        raise ImageRejected("empty file")
    if options.bit_depth == 16:
        return encode_png(_decode_16_bits(data, options, frame))
    if is_dicom(data):
        return _stored(_decode_dicom(data, options, frame), options)
    info = _jpeg_header(data)
    if info is not None and options.storage != "lossless":
        ready = _jpeg_at_target_size(data, info, options, into)
        if ready is not None:
            return ready
    image = _decode_jpeg(data, info, options) if info is not None else None
    if image is None:
        image = _decode(data, options)
    return _stored(image, options)


def _stored(image: Image.Image, options: ImageOptions) -> bytes:
    """An 8-bit image at the store's size in the store's form: raw pixels, a JPEG or a PNG."""
    if options.storage == "raw":
        return image.tobytes()
    if options.storage == "lossless":
        return encode_png(np.asarray(image))
    return encode_jpeg(image, options.quality)


def encode_png(pixels: np.ndarray) -> bytes:
    """uint8 [H, W, 3] / [H, W, 1] / [H, W] or uint16 [H, W(, 1)] pixels as a PNG file (no metadata)."""
    if pixels.ndim == 3 and pixels.shape[-1] == 1:
        pixels = pixels[:, :, 0]
    image = Image.fromarray(np.ascontiguousarray(pixels))  # uint16 [H, W]: I;16, uint8: L or RGB
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def _decode_16_bits(data: bytes, options: ImageOptions, frame: int | None) -> np.ndarray:
    """A gray image as uint16 [S, S] values: a DICOM file's stored values (signed ones + 32768), a
    16-bit PNG or TIFF's, an 8-bit image's times 257; resized in floating point only when its size
    is not the store's (so an image at the store's size keeps its values exactly)."""
    if is_dicom(data):
        dicom = _dicom_options(options)
        frames = None if frame is None else [frame]
        decoded = next(read_dicom_frames(data, frames, dicom, max_pixels=options.max_pixels, render=False))
        values = decoded.stored
        if values.ndim != 2:
            raise ImageRejected(
                "a 16-bit store keeps gray images; this DICOM file is colour (store it 8-bit)"
            )
        if values.dtype.kind == "i":
            values = (
                values.astype(np.int32) + 32768 if values.dtype.itemsize <= 2 else values.astype(np.int64)
            )
        if values.min(initial=0) < 0 or values.max(initial=0) > 65535:
            raise ImageRejected(DICOM_OVER_16_BITS)
        values = values.astype(np.uint16)
    else:
        image = _open_checked(data, options.max_pixels)
        _load(image)
        if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
            values = np.asarray(image).astype(np.int64)
            if values.min(initial=0) < 0 or values.max(initial=0) > 65535:
                raise ImageRejected(IMAGE_OVER_16_BITS)
            values = values.astype(np.uint16)
        else:
            values = np.asarray(to_gray(image)).astype(np.uint16) * 257
    return _resize_16(values, options)


def _resize_16(values: np.ndarray, options: ImageOptions) -> np.ndarray:
    height, width = values.shape
    size = options.side
    if (width, height) == (size, size):
        return values
    image = _resize(Image.fromarray(values.astype(np.float32), "F"), options)
    return np.clip(np.rint(np.asarray(image)), 0, 65535).astype(np.uint16)


def _dicom_options(options: ImageOptions) -> DicomOptions:
    return DicomOptions(
        frames="first" if options.dicom_frames == "all" else options.dicom_frames,
        window=options.dicom_window,
        allow_burned_in=options.allow_burned_in,
    )


def encode_jpeg(image: Image.Image, quality: int) -> bytes:
    """Encode an RGB image as a baseline 4:2:0 JPEG (an ``L`` image as a 1-component one), no metadata."""
    pixels = np.asarray(image)
    return encode_pixels(pixels, quality)


def encode_pixels(pixels: np.ndarray, quality: int) -> bytes:
    """uint8 pixels as a baseline JPEG: [H, W, 3] RGB (4:2:0), [H, W, 1] or [H, W] gray (1 component)."""
    if pixels.ndim == 2 or pixels.shape[-1] == 1:
        gray = pixels.reshape(pixels.shape[0], pixels.shape[1], 1)
        return simplejpeg.encode_jpeg(np.ascontiguousarray(gray), quality=quality, colorspace="GRAY")
    return simplejpeg.encode_jpeg(pixels, quality=quality, colorspace="RGB", colorsubsampling="420")


def _jpeg_header(data: bytes) -> JpegInfo | None:
    """The header of a JPEG stream, or None for other formats and malformed headers."""
    if not data.startswith(b"\xff\xd8"):
        return None
    try:
        return read_jpeg_info(data)
    except JpegFormatError:
        return None  # the general path produces the precise error


def _jpeg_at_target_size(
    data: bytes, info: JpegInfo, options: ImageOptions, into: memoryview | None = None
) -> bytes | memoryview | None:
    """The stored form of a JPEG that needs no pixel change (FLAIR's own images), else None.

    jpeg storage copies a baseline 3-component (YCbCr) stream without its metadata
    (lossless), as does gray storage with a baseline 1-component stream; raw storage decodes
    it directly. Either way libjpeg-turbo decodes the whole entropy-coded stream (at 1/8
    scale when only validating) and rejects a truncated or corrupt one. Anything else
    (other size, EXIF rotation, CMYK, RGB-coded, and a stream whose components are not the
    store's: gray into an RGB store, colour into a gray one) takes the general path.
    """
    size = options.side
    if not (
        info.width == size
        and info.height == size
        and info.precision == 8
        and info.decodes_as_ycbcr_or_gray
        and info.exif_orientation in (None, 1)
    ):
        return None
    try:
        if options.storage == "raw":
            if into is not None:  # decoded in place: no copy of the pixels
                simplejpeg.decode_jpeg(data, colorspace=options.decode_colorspace, buffer=into)
                return into
            return simplejpeg.decode_jpeg(data, colorspace=options.decode_colorspace).tobytes()
        if not (info.is_baseline and info.components == options.channels):  # YCbCr (rgb) or gray
            return None
        stripped = strip_metadata(data, info)
        simplejpeg.decode_jpeg(stripped, colorspace="GRAY", min_height=1, min_width=1, min_factor=8)
    except JpegFormatError:
        return None
    except ValueError as error:
        raise _jpeg_rejection(error) from None
    return stripped


def _jpeg_rejection(error: ValueError) -> ImageRejected:
    """The rejection for a JPEG that libjpeg-turbo (strict) would not decode cleanly."""
    message = str(error)
    if "Premature end" in message:
        return ImageRejected("truncated image data")
    if message.startswith("Unsupported"):
        return ImageRejected(f"unsupported JPEG: {message}")
    return ImageRejected(f"corrupt JPEG data: {message.removeprefix('Corrupt JPEG data: ')}")


def _check_jpeg_stream(data: bytes, mode: str) -> None:
    """Decode a JPEG strictly at 1/8 scale, only to reject one with damaged data.

    Pillow's decoder ignores libjpeg's warnings and fills what it could not decode with
    gray; libjpeg-turbo through simplejpeg (strict) turns every warning into an error.
    """
    colorspace = {"CMYK": "CMYK", "L": "GRAY"}.get(mode, "RGB")
    try:
        simplejpeg.decode_jpeg(data, colorspace=colorspace, min_height=1, min_width=1, min_factor=8)
    except ValueError as error:
        raise _jpeg_rejection(error) from None


def _decode_jpeg(data: bytes, info: JpegInfo, options: ImageOptions) -> Image.Image | None:
    """A JPEG standardized through simplejpeg, or None when Pillow's path must decide.

    Decodes at the DCT scale Pillow's ``draft`` picks, so the pixels equal Pillow's.
    Returns None for what libjpeg-turbo does not read as YCbCr/gray 8-bit; rejects a
    stream it decodes only with warnings (damaged data), at any size.
    """
    width, height = info.width, info.height
    if not (info.precision == 8 and info.decodes_as_ycbcr_or_gray and width > 0 and height > 0):
        return None
    if width * height > options.max_pixels:
        raise ImageRejected(_bomb_message(options.max_pixels, f"{width}x{height} is "))
    factor = _draft_factor((width, height), options)
    shape = (-(-height // factor), -(-width // factor))
    try:
        pixels = simplejpeg.decode_jpeg(
            data, colorspace=options.decode_colorspace, min_height=shape[0], min_width=shape[1]
        )
    except ValueError as error:
        raise _jpeg_rejection(error) from None
    if pixels.shape[:2] != shape:
        return None
    if options.color == "gray":
        image = Image.fromarray(np.ascontiguousarray(pixels[:, :, 0]), "L")
    else:
        image = Image.fromarray(pixels, "RGB")
    image = _resize(image, options)
    transpose = EXIF_TRANSPOSE.get(info.exif_orientation or 1)
    return image if transpose is None else image.transpose(transpose)


def _draft_factor(size: tuple[int, int], options: ImageOptions) -> int:
    """The DCT downscaling factor Pillow's ``draft`` picks for our request: 8, 4, 2 or 1."""
    wanted = _draft_request(size, options)
    fit = min(size[0] // wanted[0], size[1] // wanted[1])
    return next((factor for factor in (8, 4, 2) if fit >= factor), 1)


def _open_checked(data: bytes, max_pixels: int) -> Image.Image:
    """Open without decoding, turning Pillow's failures into rejections.

    Pillow's own bomb check is replaced by ours (opening decodes nothing yet),
    so the limit is the option's and the message says how to raise it.
    """
    previous_limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageRejected("not an image file (unrecognized format)") from None
    except Image.DecompressionBombError:
        raise ImageRejected(_bomb_message(max_pixels)) from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise ImageRejected(f"corrupt image header: {error}") from None
    finally:
        Image.MAX_IMAGE_PIXELS = previous_limit
    width, height = image.size
    if width * height > max_pixels:
        raise ImageRejected(_bomb_message(max_pixels, f"{width}x{height} is "))
    if width == 0 or height == 0:
        raise ImageRejected(f"image has no pixels ({width}x{height})")
    return image


def _bomb_message(max_pixels: int, size: str = "") -> str:
    return (
        f"decompression bomb: {size}more than {max_pixels:,} pixels "
        "(raise `max_pixels` if the image is legitimate)"
    )


def _load(image: Image.Image) -> None:
    try:
        image.load()
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        message = str(error) or type(error).__name__
        if "truncated" in message:
            raise ImageRejected("truncated image data") from None
        raise ImageRejected(f"corrupt image data: {message}") from None


def _decode(data: bytes, options: ImageOptions) -> Image.Image:
    image = _open_checked(data, options.max_pixels)
    orientation = _orientation(image)
    if image.format in ("JPEG", "MPO"):
        _check_jpeg_stream(data, image.mode)
        image.draft(None, _draft_request(image.size, options))
    _load(image)  # animated formats open at their first frame
    image = _resize(to_gray(image) if options.color == "gray" else to_rgb(image), options)
    # Crop, pad and stretch to a square commute with the EXIF flips and rotations,
    # so orienting the small result is exact and cheaper than orienting the input.
    transpose = EXIF_TRANSPOSE.get(orientation)
    return image if transpose is None else image.transpose(transpose)


def _decode_dicom(data: bytes, options: ImageOptions, frame: int | None) -> Image.Image:
    """A DICOM file's frame rendered for display (8-bit: modality LUT, window, MONOCHROME1, YBR)
    at the store's size and colour (see :mod:`fedimage.imaging.dicom`)."""
    frames = None if frame is None else [frame]  # None: the frame ``dicom_frames`` picks
    pixels = next(
        read_dicom_frames(data, frames, _dicom_options(options), max_pixels=options.max_pixels)
    ).display
    image = Image.fromarray(np.ascontiguousarray(pixels), "L" if pixels.ndim == 2 else "RGB")
    return _resize(to_gray(image) if options.color == "gray" else to_rgb(image), options)


def _orientation(image: Image.Image) -> int | None:
    try:
        return image.getexif().get(0x0112)
    except Exception:
        return None


def _draft_request(size: tuple[int, int], options: ImageOptions) -> tuple[int, int]:
    """The smallest decode size that still leaves enough pixels for the resize."""
    width, height = size
    if options.resize == "stretch":
        return options.side, options.side
    side = min(width, height) if options.resize == "crop" else max(width, height)
    scale = options.side / side
    return math.ceil(width * scale), math.ceil(height * scale)


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB, flattening transparency on white."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return Image.fromarray(_to_uint8(np.asarray(image), mode), mode="L").convert("RGB")
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*WHITE, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def to_gray(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit gray (``L``), flattening transparency on white."""
    if image.mode == "L":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return Image.fromarray(_to_uint8(np.asarray(image), image.mode), mode="L")
    return to_rgb(image).convert("L")


def _to_uint8(array: np.ndarray, mode: str) -> np.ndarray:
    """Scale 16/32-bit integer or float gray levels into 0..255."""
    if mode == "F":
        return np.clip(array, 0, 255).astype(np.uint8)
    values = array.astype(np.int64)
    peak = 65535 if mode.startswith("I;16") or values.max(initial=0) > 255 else 255
    return (np.clip(values, 0, peak) * 255 // peak).astype(np.uint8)


def _resize(image: Image.Image, options: ImageOptions) -> Image.Image:
    size = options.side
    width, height = image.size
    if options.resize == "stretch":
        return image.resize((size, size), Image.Resampling.BICUBIC, reducing_gap=3.0)
    if options.resize == "crop":
        side = min(width, height)
        left = (width - side) / 2
        top = (height - side) / 2
        box = (left, top, left + side, top + side)
        if (width, height) == (size, size):
            return image
        return image.resize((size, size), Image.Resampling.BICUBIC, box=box, reducing_gap=3.0)
    scale = size / max(width, height)
    inner = (max(1, round(width * scale)), max(1, round(height * scale)))
    resized = image.resize(inner, Image.Resampling.BICUBIC, reducing_gap=3.0)
    canvas = Image.new(image.mode, (size, size), PAD_COLOR if image.mode == "RGB" else 0)
    canvas.paste(resized, ((size - inner[0]) // 2, (size - inner[1]) // 2))
    return canvas
